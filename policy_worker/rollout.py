"""Generating G completions per prompt with tunix's sampler."""

import dataclasses

from flax import nnx
import jax
import numpy as np
from tunix.generate import sampler as sampler_lib

from policy_worker.last_logits import SamplerView
from policy_worker.tokenizer import PAD, ByteTokenizer


@dataclasses.dataclass(frozen=True)
class Rollouts:
  """N = prompts x G completions, grouped: rows g*G .. g*G+G-1 share a prompt.

  prompt_tokens: [N, P] left-padded; completion_tokens: [N, T] right-padded
  with the pad id; texts: N decoded completions; logps: [N, T] the log-probs
  of the completion tokens under the engine that sampled them, where that
  engine is not the trainer's own model (vLLM), else None.
  """
  prompt_tokens: np.ndarray
  completion_tokens: np.ndarray
  texts: list[str]
  logps: np.ndarray | None = None

  @property
  def completion_lengths(self) -> np.ndarray:
    return (self.completion_tokens != PAD).sum(axis=1)


def prompt_length(tokenizer, prompt: str) -> int:
  """The tokens `prompt` takes in the sampler: its own and BOS."""
  return len(tokenizer.encode(prompt)) + 1


class RolloutGenerator:
  """Samples from the policy on its mesh; `sync` takes new weights."""

  def __init__(self, model, tokenizer: ByteTokenizer, mesh: jax.sharding.Mesh,
               *, max_prompt_tokens: int, max_new_tokens: int):
    cfg = model.config
    self._mesh = mesh
    self._tok = tokenizer
    self.max_prompt_tokens = max_prompt_tokens
    self.max_new_tokens = max_new_tokens
    self._sampler = sampler_lib.Sampler(
        SamplerView(model), tokenizer,
        sampler_lib.CacheConfig(
            cache_size=max_prompt_tokens + max_new_tokens,
            num_layers=cfg.num_layers, num_kv_heads=cfg.num_kv_heads,
            head_dim=cfg.head_dim))

  def sync(self, model) -> None:
    """Points the sampler at the policy's current weights (same mesh)."""
    self._sampler.transformer_state = nnx.variables(SamplerView(model))

  def generate(self, prompts: list[str], num_generations: int, *,
               temperature: float, top_p: float, seed: int) -> Rollouts:
    repeated = [p for p in prompts for _ in range(num_generations)]
    with jax.set_mesh(self._mesh):
      out = self._sampler(
          repeated, max_generation_steps=self.max_new_tokens,
          max_prompt_length=self.max_prompt_tokens, temperature=temperature,
          top_p=top_p, seed=seed, pad_output=True,
          eos_tokens=self._tok.stop_ids(),
          forbidden_tokens=self._tok.special_ids())
    completions = np.full((len(repeated), self.max_new_tokens),
                          self._tok.pad_id(), np.int32)
    for i, toks in enumerate(out.tokens):
      toks = np.asarray(toks)[:self.max_new_tokens]
      completions[i, :len(toks)] = toks
    return Rollouts(np.asarray(out.padded_prompt_tokens, np.int32),
                    completions, list(out.text))
