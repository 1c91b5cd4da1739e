"""The in-process judge: a tunix model on the judge mesh.

The score is the expectation of the digit the model would write next,
E[d] / 9 under its next-token probabilities over "0".."9". That is continuous
even for a weak judge whose argmax digit barely moves, which is what GRPO's
group-relative advantages need.
"""

import asyncio
import dataclasses
import threading

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from judge_server import aggregation
from judge_server.backends import base
from judge_server.backends.base import Backend, Judgement
from judge_server.config import BackendConfig
from judge_server.prompts import SCORE_TOKENS
from policy_worker import last_logits
from policy_worker.spec import ModelSpec


@dataclasses.dataclass(frozen=True)
class JaxBackendConfig:
  max_batch: int = 8
  max_prompt_tokens: int = 2048
  # Below this probability on the score digits the judge is not answering on
  # the scale: unscorable, not a guess. 0 accepts any mass (a random model).
  min_score_mass: float = 0.0


def _bucket(n: int, floor: int) -> int:
  """Next power of two >= n, so few distinct shapes get compiled."""
  return max(floor, 1 << (max(n, 1) - 1).bit_length())


@nnx.jit
def _score_probs(model, tokens, lengths, score_ids):
  """Probabilities of the score tokens after each prompt.

  tokens: [B, L] right-padded prompts; lengths: [B] real lengths;
  score_ids: [K] token ids of "0".."9". Returns [B, K].
  """
  _, seq = tokens.shape
  positions = jnp.broadcast_to(jnp.arange(seq)[None], tokens.shape)
  # Right padding leaves every real token's causal past free of padding.
  causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))[None]
  mask = jnp.broadcast_to(causal, (tokens.shape[0], seq, seq))
  last = last_logits.last_logits(model, tokens, positions, mask, lengths)
  probs = jax.nn.softmax(last.astype(jnp.float32), axis=-1)
  return probs[:, score_ids]


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
    ids = [tokenizer.encode(t) for t in SCORE_TOKENS]
    if any(len(i) != 1 for i in ids):
      raise ValueError("judge tokenizer must encode each digit 0-9 as one "
                       f"token; got {ids}")
    self._score_ids = jnp.asarray([i[0] for i in ids], jnp.int32)
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
        probs = np.asarray(_score_probs(
            self._model, jnp.asarray(tokens), jnp.asarray(lengths),
            self._score_ids))
      for r, i in enumerate(index):
        score, mass = aggregation.expected_score(
            probs[r], self._cfg.min_score_mass)
        results[i] = Judgement(score, mass) if score is not None else (
            base.unparseable(
                f"judge put {mass:.2g} probability on the score digits, "
                f"below min_score_mass={self._cfg.min_score_mass}", mass))
    return results

  @property
  def identity(self) -> str:
    # The whole spec: two tiny models of one name may differ in shape.
    return f"jax:{self._spec!r}:min_score_mass={self._cfg.min_score_mass}"

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
                        min_score_mass=backend.min_score_mass))
