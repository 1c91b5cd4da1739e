"""The judgement cache, in front of the real batcher and the real gemini
backend talking to the local Gemini stand-in (tests/gemini_standin.py; the
Gemini API cannot be reached from here): what reaches the judge is what the
stand-in records."""

import asyncio

import msgpack
import pytest

from judge_server import cache as cache_lib
from judge_server import config as config_lib
from judge_server import packs as packs_lib
from judge_server import server
from judge_server.backends import gemini
from judge_server.batching import MicroBatcher
from grar_config.strict import ConfigError
from orchestrator.judge.client import JudgeClient, request_from_row
import gemini_standin
from gemini_standin import (  # noqa: F401 (fixtures)
    Fault, backend_config, fresh, standin)


def with_cache(standin, body, identity="judge-a", **cache_fields):
  """body(cache, batcher) with a cache in front of a batcher of the gemini
  backend; the cache is closed with the batcher."""
  async def go():
    backend = gemini.build(backend_config(standin))
    cache = cache_lib.JudgementCache(identity, **cache_fields)
    batcher = MicroBatcher(backend, 4, 0.002, 2, cache)
    batcher.start()
    try:
      return await body(cache, batcher)
    finally:
      await batcher.close()
      await backend.close()
  return asyncio.run(go())


def asked(standin) -> list[str]:
  return [r.body["contents"][0]["parts"][0]["text"] for r in standin.requests]


def test_identical_prompts_are_judged_once_even_while_in_flight(standin):
  standin.fail(*[Fault(delay_s=0.1)] * 3)

  async def body(cache, batcher):
    a, b = await asyncio.gather(batcher.submit(["p1", "p2", "p1"]),
                                batcher.submit(["p2", "p3"]))
    assert sorted(asked(standin)) == ["p1", "p2", "p3"]
    assert cache.stats() == {"hits": 0, "joined": 2, "misses": 3,
                             "entries": 3}
    (again,) = await batcher.submit(["p1"])
    assert len(standin.requests) == 3 and cache.stats()["hits"] == 1
    return a + b + [again]
  judgements = with_cache(standin, body)
  assert [j.score for j in judgements] == pytest.approx(
      [gemini_standin.EXPECTED] * 6)


def test_unscorable_judgements_are_not_kept_but_shared_in_flight(standin):
  standin.fail(Fault(status=400, delay_s=0.1), Fault(status=400))

  async def body(cache, batcher):
    (a,), (b,) = await asyncio.gather(batcher.submit(["q"]),
                                      batcher.submit(["q"]))
    assert a.reason.startswith("infrastructure: HTTP 400") and a == b
    (c,) = await batcher.submit(["q"])
    assert c.reason.startswith("infrastructure: HTTP 400")
    (d,) = await batcher.submit(["q"])
    assert d.score is not None and asked(standin) == ["q"] * 3
    assert cache.stats()["entries"] == 1
  with_cache(standin, body)


def test_a_waiter_whose_asker_went_away_asks_itself(standin):
  standin.fail(Fault(delay_s=0.2))

  async def body(cache, batcher):
    first = asyncio.create_task(batcher.submit(["p"]))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(batcher.submit(["p"]))
    await asyncio.sleep(0.01)
    first.cancel()
    (j,) = await asyncio.wait_for(second, 5)
    assert j.score is not None and asked(standin) == ["p", "p"]
  with_cache(standin, body)


def test_the_oldest_judgements_go_first_past_max_entries(standin):
  async def body(cache, batcher):
    for p in ("p1", "p2", "p3", "p1"):
      await batcher.submit([p])
    assert asked(standin) == ["p1", "p2", "p3", "p1"]
    assert cache.stats()["entries"] == 2
  with_cache(standin, body, max_entries=2)


def test_judgements_persist_across_restarts_and_a_torn_record(
    standin, tmp_path, capsys):
  path = tmp_path / "cache" / "judge.msgpack"

  async def judge_all(cache, batcher):
    return await batcher.submit(["p1", "p2"])
  first = with_cache(standin, judge_all, path=str(path))
  assert len(standin.requests) == 2
  # A crash in the middle of writing a record.
  torn = msgpack.packb([cache_lib.key("judge-a", "p3"), 0.5, 1.0, "parsed"])
  whole = path.stat().st_size
  with open(path, "ab") as f:
    f.write(torn[:-3])

  async def after_restart(cache, batcher):
    assert cache.stats()["entries"] == 2
    assert await batcher.submit(["p1", "p2"]) == first
    await batcher.submit(["p3"])
  with_cache(standin, after_restart, path=str(path))
  assert (f"dropped a torn last record ({len(torn) - 3} bytes)"
          in capsys.readouterr().err)
  assert sorted(asked(standin)) == ["p1", "p2", "p3"]
  assert path.stat().st_size > whole

  async def again(cache, batcher):
    assert cache.stats()["entries"] == 3
    await batcher.submit(["p1", "p2", "p3"])
  with_cache(standin, again, path=str(path))
  assert len(standin.requests) == 3
  # Another judge model shares nothing.
  with_cache(standin, judge_all, identity="judge-b", path=str(path))
  assert len(standin.requests) == 5


@pytest.mark.parametrize("content, problem", [
    (b"backend: {kind: jax}\n", "not a grar judge cache"),
    (msgpack.packb({"grar-judge-cache": 1}) + msgpack.packb(["x", 1, 2]),
     "record 1 at byte 19 is not a judgement"),
])
def test_a_file_that_is_not_a_judge_cache_is_refused(tmp_path, content,
                                                      problem):
  path = tmp_path / "cache.msgpack"
  path.write_bytes(content)
  with pytest.raises(ConfigError) as e:
    cache_lib.JudgementCache("judge-a", path=str(path))
  assert str(e.value) == f"cache.path: {path}: {problem}"
  assert path.read_bytes() == content  # left as it was


def test_the_server_judges_a_repeated_completion_once_per_criterion(standin):
  math = packs_lib.load_packs()["math-solution"]
  shared = math.criteria[0]
  row = {"prompt": "What is 2 + 2?", "completion": "<answer>4</answer>",
         "reference_answer": "4"}
  rows = {"a": row | {"rubric_id": "math-solution"},
          "b": row | {"rubric_id": "math-solution"},
          # The same criterion under another rubric with another weight.
          "c": row | {"rubric": {"criteria": [
              {"text": shared.text, "category": shared.category,
               "weight": 1, "polarity": shared.polarity}]}}}
  cfg = backend_config(standin)
  handle = server.run_in_thread(
      config_lib.JudgeConfig(backend=cfg,
                             cache=config_lib.CacheConfig(enabled=True)),
      gemini.build(cfg))
  try:
    with JudgeClient(handle.address) as client:
      client.wait_ready(10)
      results = client.score([request_from_row(r, rid)
                              for rid, r in rows.items()])
  finally:
    handle.stop()
  n = len(math.criteria)
  assert len(standin.requests) == n
  assert results["a"].reward == results["b"].reward
  assert results["c"].criteria[0].score == results["a"].criteria[0].score
  sample = handle.metrics.registry.get_sample_value
  assert sample("grar_judge_cache_misses_total") == n
  assert sample("grar_judge_cache_hits_total") == n + 1


@pytest.mark.parametrize("fields, problem", [
    ({"max_entries": 0}, "cache.max_entries: must be >= 1"),
    ({"enabled": "false", "path": "/tmp/c"},
     "cache.path: set, but enabled is false"),
    ({"size": 3}, "cache.size: unknown key"),
])
def test_bad_cache_config_names_the_field(fields, problem):
  overrides = [f"cache.{k}={v}" for k, v in fields.items()]
  with pytest.raises(ConfigError) as e:
    config_lib.load(None, overrides)
  assert str(e.value).startswith(problem)
