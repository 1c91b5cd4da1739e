"""The in-process judge: a tunix model on the judge mesh.

The score is read from the model's next-token probabilities after the
prompt, in one forward pass. On the 0-9 scale it is E[d] / 9 over the
probabilities of "0".."9"; in the binary format P(yes) / (P(yes) + P(no)).
That is continuous even for a weak judge whose argmax answer barely moves,
which is what GRPO's group-relative advantages need.
"""

import asyncio
import dataclasses
import threading
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from judge_server import aggregation
from judge_server.backends import base
from judge_server.backends.base import Backend, Judgement
from judge_server.config import BackendConfig
from judge_server.prompts import (
    ANSWER_NAMES, CHOICES, FORMATS, SCALE, spellings)
from policy_worker import last_logits
from grar_config.model import ModelSpec


@dataclasses.dataclass(frozen=True)
class JaxBackendConfig:
  max_batch: int = 8
  max_prompt_tokens: int = 2048
  # Below this probability on the answer tokens the judge is not answering
  # as asked: unscorable, not a guess. 0 accepts any mass (a random model).
  min_score_mass: float = 0.0
  answer: str = SCALE  # the answer format (FORMATS)

  def __post_init__(self):
    if self.answer not in CHOICES:
      raise ValueError(f"answer: {self.answer!r} is not one of "
                       f"{', '.join(FORMATS)}")


def choice_ids(tokenizer, choices: Sequence[str]
               ) -> tuple[tuple[int, ...], ...]:
  """Per choice, the ids of the tokens the judge can start writing it with:
  the first token of each spelling (prompts.spellings: "yes", " yes",
  "Yes", " Yes"), less any that also starts another choice's spelling.

  With Gemma's tokenizer every spelling of yes and no is one token, so this
  is the sum over those variants; a digit with a space is two (" " and the
  digit), and the shared " " drops out, leaving the bare digit. A tokenizer
  that splits a word (the tiny models' bytes: "y") is read at the token
  where the judge commits to it.
  """
  firsts = [{tokenizer.encode(s)[0] for s in spellings(c)}
            for c in choices]
  shared = {t for i, mine in enumerate(firsts)
            for other in firsts[i + 1:] for t in mine & other}
  ids = tuple(tuple(sorted(f - shared)) for f in firsts)
  for choice, own in zip(choices, ids):
    if not own:
      raise ValueError(f"judge tokenizer: every spelling of {choice!r} starts "
                       "with a token another answer starts with too")
  return ids


def choice_matrix(ids: Sequence[Sequence[int]]
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(flat [M] token ids, [M, K+1] 0/1 matrix of which choice each starts),
  so that probs[..., flat] @ matrix sums each choice's tokens."""
  flat = np.asarray([t for own in ids for t in own], np.int32)
  owner = np.zeros((len(flat), len(ids)), np.float32)
  owner[np.arange(len(flat)), [k for k, own in enumerate(ids) for _ in own]] = 1
  return flat, owner


def choice_probs(probs, flat, owner):
  """[..., V] next-token probabilities (numpy or jax) to [..., K+1]: each
  choice's probability, the sum over its tokens (choice_matrix's flat ids
  and owner matrix). Then aggregation.expected_score over choices in value
  order is the score: binary's (no, yes) gives P(yes) / (P(yes) + P(no))."""
  return probs[..., flat] @ owner


def _bucket(n: int, floor: int) -> int:
  """Next power of two >= n, so few distinct shapes get compiled."""
  return max(floor, 1 << (max(n, 1) - 1).bit_length())


@nnx.jit
def _choice_probs(model, tokens, lengths, flat, owner):
  """Probabilities of the answer choices after each prompt.

  tokens: [B, L] right-padded prompts; lengths: [B] real lengths;
  flat, owner: choice_matrix's [M] token ids and [M, K+1] matrix.
  Returns [B, K+1] (choice_probs).
  """
  _, seq = tokens.shape
  positions = jnp.broadcast_to(jnp.arange(seq)[None], tokens.shape)
  # Right padding leaves every real token's causal past free of padding.
  causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))[None]
  mask = jnp.broadcast_to(causal, (tokens.shape[0], seq, seq))
  last = last_logits.last_logits(model, tokens, positions, mask, lengths)
  return choice_probs(jax.nn.softmax(last.astype(jnp.float32), axis=-1),
                      flat, owner)


class JaxBackend(Backend):
  """Scores a batch of judge prompts with one forward pass on the mesh;
  one call at a time (max_calls_in_flight 1), since it holds the mesh."""

  name = "jax"

  def __init__(self, model: nnx.Module, tokenizer, mesh: jax.sharding.Mesh,
               spec: ModelSpec, config: JaxBackendConfig = JaxBackendConfig()):
    self._model = model
    self._tok = tokenizer
    self._mesh = mesh
    self._cfg = config
    self._spec = spec
    self.model = spec.name
    self.max_batch = config.max_batch
    self.answer = config.answer
    self.choice_ids = choice_ids(tokenizer, CHOICES[config.answer])
    self._flat, self._owner = map(jnp.asarray,
                                  choice_matrix(self.choice_ids))
    # The batch axis is sharded over "fsdp"; batches must divide it.
    self._batch_multiple = mesh.shape.get("fsdp", 1)
    # One device program at a time: the mesh is not shared between calls.
    self._lock = threading.Lock()

  def _judge_sync(self, prompts: list[str]) -> list[Judgement]:
    results: list[Judgement | None] = [None] * len(prompts)
    rows, index = [], []
    for i, p in enumerate(prompts):
      ids = [self._tok.bos_id()] + self._tok.encode(p)
      if len(ids) > self._cfg.max_prompt_tokens:
        results[i] = base.infrastructure(
            f"judge prompt has {len(ids)} tokens, more than "
            f"max_prompt_tokens={self._cfg.max_prompt_tokens}")
      else:
        rows.append(ids)
        index.append(i)
    if rows:
      batch = _bucket(len(rows), self._batch_multiple)
      batch += -batch % self._batch_multiple
      seq = _bucket(max(map(len, rows)), 16)
      tokens = np.full((batch, seq), self._tok.pad_id(), np.int32)
      lengths = np.ones((batch,), np.int32)
      for r, ids in enumerate(rows):
        tokens[r, :len(ids)] = ids
        lengths[r] = len(ids)
      with self._lock, jax.set_mesh(self._mesh):
        probs = np.asarray(_choice_probs(
            self._model, jnp.asarray(tokens), jnp.asarray(lengths),
            self._flat, self._owner))
      for r, i in enumerate(index):
        score, mass = aggregation.expected_score(
            probs[r], self._cfg.min_score_mass)
        results[i] = Judgement(score, mass) if score is not None else (
            base.unparseable(
                f"judge put {mass:.2g} probability on the "
                f"{ANSWER_NAMES[self.answer]}, below "
                f"min_score_mass={self._cfg.min_score_mass}", mass))
    return results

  @property
  def identity(self) -> str:
    # The whole spec: two tiny models of one name may differ in shape.
    return (f"jax:{self._spec!r}:min_score_mass={self._cfg.min_score_mass}:"
            f"answer={self.answer}")

  async def judge(self, prompts: list[str]) -> list[Judgement]:
    return await asyncio.to_thread(self._judge_sync, prompts)


def build(backend: BackendConfig, judge_mesh: jax.sharding.Mesh) -> JaxBackend:
  """A JaxBackend over the configured model, built on `judge_mesh`."""
  from policy_worker import models  # the one jax model loader of the project
  model, tokenizer = models.build_model(backend.model, judge_mesh)
  return JaxBackend(model, tokenizer, judge_mesh, backend.model,
                    JaxBackendConfig(
                        max_batch=backend.max_batch,
                        max_prompt_tokens=backend.max_prompt_tokens,
                        min_score_mass=backend.min_score_mass,
                        answer=backend.criteria.format))
