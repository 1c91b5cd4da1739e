"""The jax judge packs the prompts of one call that share a token prefix (a
rollout's explicit criteria) into one row: the prefix once, then each
prompt's suffix, each suffix seeing only the prefix and itself. Packed
scores must equal the scores of each prompt alone, on the tiny model and
on the shipped Gemma-3-270M (rows longer than its local layers' 512-token
window: last_logits windows by position), and results must come back in
order."""

import asyncio
import dataclasses

import jax
import numpy as np
import pytest

from judge_server import prompts
from judge_server.backends import jax_local
from judge_server.config import BackendConfig
from judge_server.packs import load_packs
from grar_config.model import ModelSpec

QUESTION = ("A train leaves at 9:40 and arrives at 11:15. The fare is 3 "
            "dollars per 10 minutes of travel. How much does the trip cost?")
COMPLETION = (
    "<reasoning>From 9:40 to 11:15 is 1 hour 35 minutes, which is 95 "
    "minutes. At 3 dollars per 10 minutes the cost is 95 / 10 * 3 = 28.5 "
    "dollars. Check: 90 minutes would cost 27, and 5 more minutes add 1.5."
    "</reasoning><answer>28.5</answer>")


def _criteria(n: int):
  """n real rubric criteria, from the shipped packs in a fixed order."""
  packs = load_packs()
  every = [c for name in sorted(packs) for c in packs[name].criteria]
  assert len(every) >= n
  return every[:n]


def _rollout(n: int, completion: str = COMPLETION) -> list[str]:
  return [prompts.explicit_prompt(QUESTION, completion, "28.5", c)
          for c in _criteria(n)]


def _scores(backend, batch: list[str]) -> list[float]:
  return [j.score for j in asyncio.run(backend.judge(batch))]


def _alone(backend, batch: list[str]) -> list[float]:
  return [s for p in batch for s in _scores(backend, [p])]


def _rows(backend, batch: list[str]) -> list[jax_local._Row]:
  tok = backend._tok
  return jax_local._pack([[tok.bos_id()] + tok.encode(p) for p in batch],
                         backend._pack_limit)


def _mesh():
  return jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                           ("fsdp", "tp"))


@pytest.fixture(scope="module")
def tiny() -> jax_local.JaxBackend:
  # Byte tokens: 4 criteria of a rollout pack into one row of ~2000 tokens,
  # 12 into one of ~4700, past its 4096-token local window.
  return jax_local.build(
      BackendConfig(model=ModelSpec(family="gemma3-tiny", seed=1),
                    max_batch=32, max_prompt_tokens=8192), _mesh())


def test_pack_shares_only_long_prefixes_and_keeps_a_token_per_suffix():
  shared = list(range(100, 140))
  ids = [shared + [1, 2], list(range(7)), shared + [3], shared[:-1],
         shared + [1, 2]]
  rows = jax_local._pack(ids, pack_limit=1000)
  # Sorted order: the shortest first, equal prompts side by side.
  assert [r.members for r in rows] == [[1], [3, 0, 4, 2]]
  # The shortest member keeps its last token to be read at.
  assert rows[1].prefix == len(shared) - 2
  tokens, positions, segments, ends = jax_local._layout(rows[1], ids)
  assert len(tokens) == rows[1].length == 38 + 1 + 4 + 4 + 3
  assert positions[38:43] == [38, 38, 39, 40, 41]
  assert segments[38:] == [1] + [2] * 4 + [3] * 4 + [4] * 3
  assert ends == [39, 43, 47, 50]
  assert [tokens[e - 1] for e in ends] == [shared[-2], 2, 2, 3]
  # A row never outgrows its limit; within it, the fewest tokens: 3 alone
  # and the other three behind 40 shared tokens (39 + 45) beat 3 and 0
  # behind 38, and 4 and 2 behind 40 (43 + 43).
  assert [r.members for r in jax_local._pack(ids, pack_limit=45)] == [
      [1], [3], [0, 4, 2]]


def test_pack_keeps_a_rollout_whole_rather_than_share_only_its_question():
  # Two rollouts of one question: [intro + question] 60 tokens, a response
  # of 40, then 4 criteria of 10 each.
  question = list(range(1000, 1060))
  rollouts = [[question + [r] * 40 + [c] * 10 for c in range(2, 6)]
              for r in (7, 8)]
  ids = [p for pair in zip(*rollouts) for p in pair]  # interleaved
  rows = jax_local._pack(ids, pack_limit=1000)
  assert sorted(r.members for r in rows) == [[0, 2, 4, 6], [1, 3, 5, 7]]
  assert [r.prefix for r in rows] == [100, 100]


@pytest.mark.parametrize("n", [4, 12])
def test_tiny_packed_scores_equal_each_prompt_alone(tiny, n):
  batch = _rollout(n)
  rows = _rows(tiny, batch)
  assert len(rows) == 1 and rows[0].length <= tiny._pack_limit == 8192
  np.testing.assert_allclose(_scores(tiny, batch), _alone(tiny, batch),
                             atol=1e-4)


def test_tiny_mixed_batch_maps_results_back_in_order(tiny):
  one = _rollout(4)
  two = _rollout(4, "<reasoning>95 minutes at 0.3 a minute.</reasoning>"
                 "<answer>28.5</answer>")
  unrelated = "Is the sky green? Score: "
  # Interleaved, as the batcher's round robin hands them over.
  batch = [p for pair in zip(one, two) for p in pair] + [unrelated]
  rows = _rows(tiny, batch)
  assert sorted(sorted(r.members) for r in rows) == [
      [0, 2, 4, 6], [1, 3, 5, 7], [8]]
  alone = _alone(tiny, batch)
  np.testing.assert_allclose(_scores(tiny, batch), alone, atol=1e-4)
  assert len(set(np.round(alone, 6))) > 1  # a mix-up would show


def test_tiny_prompts_sharing_nothing_are_scored_as_before(tiny):
  batch = ["Rate this: 1", "Completely different text, rate: 2",
           "x" * 80]
  assert all(len(r.members) == 1 for r in _rows(tiny, batch))
  np.testing.assert_allclose(_scores(tiny, batch), _alone(tiny, batch),
                             atol=1e-4)


def test_too_long_prompts_stay_unscorable_among_packed_ones(tiny):
  strict = jax_local.JaxBackend(
      tiny._model, tiny._tok, tiny._mesh, tiny._spec,
      dataclasses.replace(tiny._cfg, max_prompt_tokens=2048))
  batch = _rollout(4)
  batch.insert(2, "y" * 3000)
  judged = asyncio.run(strict.judge(batch))
  assert judged[2].score is None and "max_prompt_tokens=2048" in judged[2].reason
  rest = [j.score for i, j in enumerate(judged) if i != 2]
  np.testing.assert_allclose(rest, _alone(tiny, _rollout(4)), atol=1e-4)


def test_gemma3_270m_packed_scores_equal_each_prompt_alone(gemma3_270m_dir):
  backend = jax_local.build(
      BackendConfig(model=ModelSpec(family="gemma3", path=str(gemma3_270m_dir)),
                    max_batch=16), _mesh())
  assert backend._pack_limit == 2048  # max_prompt_tokens, not the window
  window = backend._model.config.sliding_window_size
  for n in (4, 12):
    batch = _rollout(n)
    rows = _rows(backend, batch)
    assert len(rows) == 1 and rows[0].length > window
    np.testing.assert_allclose(_scores(backend, batch),
                               _alone(backend, batch), atol=1e-4)
