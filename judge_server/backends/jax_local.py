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

from judge_server.backends import base
from judge_server.backends.base import (
    Backend, Judgement, Logprobs, LogprobsQuery, TokenizerInfo)
from judge_server.config import BackendConfig
from judge_server.prompts import (
    CHOICES, FORMATS, SCALE, spellings)
from policy_worker import last_logits
from grar_config.model import ModelSpec
from protos import contract


@dataclasses.dataclass(frozen=True)
class JaxBackendConfig:
  max_batch: int = 8
  max_prompt_tokens: int = 2048
  # Below this probability on the answer tokens the judge is not answering
  # as asked: unscorable, not a guess. 0 accepts any mass (a random model).
  min_score_mass: float = 0.0
  answer: str = SCALE  # the answer format (FORMATS)
  # Prompts of one call sharing a long prefix go in one row (_pack); off,
  # each prompt is a row of its own (bench/judge_prefix.py compares).
  pack_shared_prefixes: bool = True

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


# Prompts share a row only if they share at least this many tokens: the BOS
# and a few words of any judge prompt are not worth a longer row, whose
# attention grows with the square of its length.
MIN_SHARED_TOKENS = 32


@dataclasses.dataclass
class TokenCounts:
  """Tokens since the backend was built: in the prompts scored, in the rows
  they were packed into, and in the padded batches the device ran."""
  prompts: int = 0
  rows: int = 0
  padded: int = 0


@dataclasses.dataclass
class _Row:
  """Prompts packed into one sequence: their shared first `prefix` tokens
  once, then each prompt's remaining tokens (its suffix, at least one)."""
  members: list[int]  # indices into the call's prompts
  prefix: int
  length: int


def _common(a: Sequence[int], b: Sequence[int]) -> int:
  n = 0
  for x, y in zip(a, b):
    if x != y:
      break
    n += 1
  return n


def _pack(ids: list[list[int]], pack_limit: int) -> list[_Row]:
  """The rows of fewest tokens, each at most `pack_limit` long, that cut
  the prompts in sorted order into runs: sorting puts prompts that share a
  prefix side by side (a rollout's criteria, whatever order the batcher
  interleaved them in), and a run's prefix is the least common prefix of
  its neighbours. Fewest tokens, not greedy joining: a group's rollouts
  share the question but not the response, and one row for all of them
  would encode each response once per criterion again."""
  order = sorted(range(len(ids)), key=ids.__getitem__)
  n = len(order)
  # Each pair of sorted neighbours once, not once per run that holds them.
  neighbours = [_common(ids[order[i]], ids[order[i + 1]])
                for i in range(n - 1)]
  # cost[j], last[j]: the fewest tokens for order[:j], and its last row.
  cost, last = [0] + [None] * n, [None] * (n + 1)
  for j in range(1, n + 1):
    total, shared = 0, len(ids[order[j - 1]]) - 1
    for i in range(j - 1, -1, -1):
      here = len(ids[order[i]])
      total += here
      if i < j - 1:
        # Every suffix keeps its last token: that is where it is read.
        shared = min(shared, here - 1, neighbours[i])
        if shared < MIN_SHARED_TOKENS:
          break
      row = (_Row(order[i:j], shared, total - (j - i - 1) * shared)
             if i < j - 1 else _Row(order[i:j], 0, here))
      if i < j - 1 and row.length > pack_limit:
        break  # a longer run is longer still
      if cost[j] is None or cost[i] + row.length < cost[j]:
        cost[j], last[j] = cost[i] + row.length, row
  rows, j = [], n
  while j:
    rows.append(last[j])
    j -= len(last[j].members)
  return rows[::-1]


def _layout(row: _Row, ids: list[list[int]]
            ) -> tuple[list[int], list[int], list[int], list[int]]:
  """(tokens, positions, segments, ends) of one row: the prefix (segment 0,
  positions 0..P-1), then suffix k (segment k + 1, positions from P on, as
  in the prompt alone); ends[k] is one past suffix k's last token."""
  first = ids[row.members[0]]
  tokens, positions = first[:row.prefix], list(range(row.prefix))
  segments, ends = [0] * row.prefix, []
  for k, m in enumerate(row.members, 1):
    suffix = ids[m][row.prefix:]
    tokens += suffix
    positions += range(row.prefix, len(ids[m]))
    segments += [k] * len(suffix)
    ends.append(len(tokens))
  return tokens, positions, segments, ends


@nnx.jit
def _choice_probs(model, tokens, positions, segments, ends, flat, owner):
  """Probabilities of the answer choices at each read of each row.

  tokens, positions, segments: [B, L] right-padded rows (_layout; padding
  has segment -1); ends: [B, S] one past each read token (1 where unused);
  flat, owner: choice_matrix's [M] token ids and [M, K+1] matrix.
  Returns [B, S, K+1] (choice_probs).
  """
  seq = tokens.shape[1]
  causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))[None]
  query, key = segments[:, :, None], segments[:, None, :]
  # A suffix sees the prefix and its own earlier tokens, never another
  # suffix: each read gets the same context as its prompt alone.
  mask = causal & ((key == 0) | (key == query)) & (key >= 0)
  last = last_logits.last_logits(model, tokens, positions, mask, ends)
  return choice_probs(jax.nn.softmax(last.astype(jnp.float32), axis=-1),
                      flat, owner)


@nnx.jit
def _token_logprobs(model, tokens, positions, mask, reads, targets):
  """log p(targets[b, s]) at each read of each row.

  tokens, positions: [B, L] right-padded rows; mask: [B, L] True at real
  tokens; reads: [B, S] one past each read position (1 where unused);
  targets: [B, S] the token that follows each read.
  Returns [B, S] float32.
  """
  seq = tokens.shape[1]
  causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))[None]
  attend = causal & mask[:, None, :]
  logits = last_logits.last_logits(model, tokens, positions, attend, reads)
  logps = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logps, targets[..., None], axis=-1)[..., 0]


# Completion tokens read per forward pass: each read projects onto the
# whole vocabulary, so 1024 reads of Gemma-3's 262144 tokens are 1 GiB of
# float32 logits; longer calls go in several passes.
MAX_READS_PER_PASS = 1024


class JaxBackend(Backend):
  """Scores a batch of judge prompts with one forward pass on the mesh;
  one call at a time (max_calls_in_flight 1), since it holds the mesh.
  Prompts of one call that share a long token prefix (a rollout's criteria)
  are packed into one row, so the prefix is encoded once (_pack)."""

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
    self._pack_limit = min(config.max_prompt_tokens,
                           last_logits.packed_length(model)
                           or config.max_prompt_tokens)
    if not config.pack_shared_prefixes:
      self._pack_limit = 0  # no two prompts fit in a row
    self.tokens = TokenCounts()

  def _judge_sync(self, prompts: list[str]) -> list[Judgement]:
    results: list[Judgement | None] = [None] * len(prompts)
    ids = [[self._tok.bos_id()] + self._tok.encode(p) for p in prompts]
    index = []
    for i, mine in enumerate(ids):
      if len(mine) > self._cfg.max_prompt_tokens:
        results[i] = base.infrastructure(
            f"judge prompt has {len(mine)} tokens, more than "
            f"max_prompt_tokens={self._cfg.max_prompt_tokens}")
      else:
        index.append(i)
    if index:
      rows = _pack([ids[i] for i in index], self._pack_limit)
      probs = self._score_rows(rows, [ids[i] for i in index])
      for r, row in enumerate(rows):
        for k, m in enumerate(row.members):
          results[index[m]] = base.from_choice_probs(
              probs[r, k], self._cfg.min_score_mass, self.answer)
    return results

  def _score_rows(self, rows: list[_Row], ids: list[list[int]]
                  ) -> np.ndarray:
    """[rows, S, K+1] choice probabilities at each row's reads, one
    forward pass over bucketed shapes."""
    batch = _bucket(len(rows), self._batch_multiple)
    batch += -batch % self._batch_multiple
    seq = _bucket(max(r.length for r in rows), 16)
    reads = _bucket(max(len(r.members) for r in rows), 1)
    tokens = np.full((batch, seq), self._tok.pad_id(), np.int32)
    positions = np.zeros((batch, seq), np.int32)
    segments = np.full((batch, seq), -1, np.int32)
    ends = np.ones((batch, reads), np.int32)
    for r, row in enumerate(rows):
      t, p, g, e = _layout(row, ids)
      tokens[r, :len(t)], positions[r, :len(p)] = t, p
      segments[r, :len(g)], ends[r, :len(e)] = g, e
    with self._lock, jax.set_mesh(self._mesh):
      self.tokens.prompts += sum(len(ids[m]) for r in rows for m in r.members)
      self.tokens.rows += sum(r.length for r in rows)
      self.tokens.padded += batch * seq
      return np.asarray(_choice_probs(
          self._model, *map(jnp.asarray, (tokens, positions, segments, ends)),
          self._flat, self._owner))

  @property
  def identity(self) -> str:
    # The whole spec: two tiny models of one name may differ in shape.
    return (f"jax:{self._spec!r}:min_score_mass={self._cfg.min_score_mass}:"
            f"answer={self.answer}")

  async def judge(self, prompts: list[str]) -> list[Judgement]:
    return await asyncio.to_thread(self._judge_sync, prompts)

  async def tokenizer_info(self) -> TokenizerInfo:
    return TokenizerInfo(int(self._tok.vocab_size),
                         contract.tokenizer_fingerprint(self._tok))

  async def token_logprobs(self, queries: list[LogprobsQuery]
                           ) -> list[Logprobs | Judgement]:
    return await asyncio.to_thread(self._logprobs_sync, queries)

  def _logprobs_sync(self, queries: list[LogprobsQuery]
                     ) -> list[Logprobs | Judgement]:
    results: list[Logprobs | Judgement | None] = [None] * len(queries)
    fit = []
    for i, q in enumerate(queries):
      n = len(q.prompt) + len(q.completion)
      if n > self._cfg.max_prompt_tokens:
        results[i] = base.infrastructure(
            f"prompt and completion have {n} tokens, more than "
            f"max_prompt_tokens={self._cfg.max_prompt_tokens}")
      else:
        fit.append(i)
    # Similar lengths together, so padding stays small.
    fit.sort(key=lambda i: len(queries[i].completion))
    while fit:
      group = fit[:1]
      for i in fit[1:]:
        rows = _bucket(len(group) + 1, self._batch_multiple)
        if rows * _bucket(len(queries[i].completion), 1) > MAX_READS_PER_PASS:
          break
        group.append(i)
      fit = fit[len(group):]
      for i, values in zip(group, self._logprobs_pass(
          [queries[i] for i in group])):
        results[i] = Logprobs(tuple(values))
    return results

  def _logprobs_pass(self, queries: list[LogprobsQuery]) -> list[np.ndarray]:
    """Each query's completion log-probs, one forward pass over bucketed
    shapes."""
    batch = _bucket(len(queries), self._batch_multiple)
    batch += -batch % self._batch_multiple
    seq = _bucket(max(len(q.prompt) + len(q.completion) for q in queries), 16)
    reads = _bucket(max(len(q.completion) for q in queries), 1)
    tokens = np.full((batch, seq), self._tok.pad_id(), np.int32)
    mask = np.zeros((batch, seq), bool)
    at = np.ones((batch, reads), np.int32)
    targets = np.zeros((batch, reads), np.int32)
    for r, q in enumerate(queries):
      row = q.prompt + q.completion
      tokens[r, :len(row)], mask[r, :len(row)] = row, True
      # Completion token k is read after the token before it.
      at[r, :len(q.completion)] = np.arange(len(q.completion)) + len(q.prompt)
      targets[r, :len(q.completion)] = q.completion
    positions = np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq))
    with self._lock, jax.set_mesh(self._mesh):
      out = np.asarray(_token_logprobs(
          self._model, *map(jnp.asarray, (tokens, positions, mask, at,
                                          targets))))
    return [out[r, :len(q.completion)] for r, q in enumerate(queries)]


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
