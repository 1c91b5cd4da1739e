"""The judgement cache, in front of the real batcher and the real gemini
backend talking to the local Gemini stand-in (tests/gemini_standin.py; the
Gemini API cannot be reached from here): what reaches the judge is what the
stand-in records. On disk: the real SQLite file, reopened, and a real
process writing to it killed with SIGKILL."""

import asyncio
import inspect
import os
import random
import signal
import sqlite3
import subprocess
import sys

import msgpack
import pytest

from judge_server import cache as cache_lib
from judge_server import config as config_lib
from judge_server import packs as packs_lib
from judge_server import server
from judge_server.backends import gemini
from judge_server.backends.base import Judgement
from judge_server.batching import MicroBatcher
from grar_config.strict import ConfigError
from orchestrator.judge.client import JudgeClient, request_from_row
import gemini_standin
from gemini_standin import (  # noqa: F401 (fixtures)
    Fault, backend_config, fresh, standin)
import processes


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
                             "entries": 3, "disk_entries": 0}
    (again,) = await batcher.submit(["p1"])
    assert len(standin.requests) == 3 and cache.stats()["hits"] == 1
    return a + b + [again]
  judgements = with_cache(standin, body)
  assert [j.score for j in judgements] == pytest.approx(
      [gemini_standin.EXPECTED] * 6)


def test_unscorable_judgements_are_not_kept_but_shared_in_flight(
    standin, tmp_path):
  path = str(tmp_path / "judge.sqlite")
  standin.fail(Fault(status=400, delay_s=0.1), Fault(status=400))

  async def body(cache, batcher):
    (a,), (b,) = await asyncio.gather(batcher.submit(["q"]),
                                      batcher.submit(["q"]))
    assert a.reason.startswith("infrastructure: HTTP 400") and a == b
    assert cache.stats()["entries"] == cache.stats()["disk_entries"] == 0
    (c,) = await batcher.submit(["q"])
    assert c.reason.startswith("infrastructure: HTTP 400")
    (d,) = await batcher.submit(["q"])
    assert d.score is not None and asked(standin) == ["q"] * 3
    assert cache.stats()["entries"] == cache.stats()["disk_entries"] == 1
    return d
  d = with_cache(standin, body, path=path)

  async def reopened(cache, batcher):
    assert await batcher.submit(["q"]) == [d]
  with_cache(standin, reopened, path=path)
  assert len(standin.requests) == 3


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


def test_the_least_recently_used_judgement_goes_first_past_max_entries(
    standin):
  async def body(cache, batcher):
    for p in ("p1", "p2", "p1", "p3"):  # the hit on p1 leaves p2 the oldest
      await batcher.submit([p])
    assert cache.stats()["entries"] == 2
    for p in ("p1", "p3", "p2"):
      await batcher.submit([p])
    assert cache.stats()["hits"] == 3
  with_cache(standin, body, max_entries=2)
  assert asked(standin) == ["p1", "p2", "p3", "p2"]


def test_the_disk_keeps_the_most_recently_used_across_reopens(standin,
                                                               tmp_path):
  fields = dict(path=str(tmp_path / "judge.sqlite"), max_entries=1,
                max_disk_entries=3)

  async def fill(cache, batcher):
    for p in ("p1", "p2", "p3"):
      await batcher.submit([p])
    await batcher.submit(["p1"])  # from disk: memory holds p3 alone
    assert cache.stats() == {"hits": 1, "joined": 0, "misses": 3,
                             "entries": 1, "disk_entries": 3}
    await batcher.submit(["p4"])  # p2, the least recently used, goes
    assert cache.stats()["disk_entries"] == 3
  with_cache(standin, fill, **fields)
  assert asked(standin) == ["p1", "p2", "p3", "p4"]

  async def reopened(cache, batcher):
    assert cache.stats()["disk_entries"] == 3
    for p in ("p3", "p1", "p4"):
      await batcher.submit([p])
    assert cache.stats()["hits"] == 3
    await batcher.submit(["p2"])  # judged again; p3 goes
  with_cache(standin, reopened, **fields)
  assert asked(standin)[4:] == ["p2"]

  # Uses are written at close at the latest: a run of hits alone reorders
  # the disk too.
  async def hit_p1(cache, batcher):
    await batcher.submit(["p1"])
  with_cache(standin, hit_p1, **fields)

  async def last(cache, batcher):
    await batcher.submit(["p3"])  # judged again; p4, not p1, goes
    await batcher.submit(["p1", "p2", "p3"])
    await batcher.submit(["p4"])
  with_cache(standin, last, **fields)
  assert asked(standin)[5:] == ["p3", "p4"]


def test_a_use_is_written_once_per_window_of_new_judgements(standin,
                                                           tmp_path):
  """The trade that spares a hit a disk write: within one window of
  max_disk_entries / WINDOWS new judgements a judgement's first use orders
  it on disk, not its last. Memory keeps the exact order."""
  path = tmp_path / "judge.sqlite"
  fields = dict(path=str(path), max_disk_entries=2 * cache_lib.WINDOWS)

  async def body(cache, batcher):
    await batcher.submit(["a"])
    await batcher.submit(["b"])  # the window of 2 is full: a new one
    for p in ("a", "b", "a"):  # a: written once, at its first use
      await batcher.submit([p])
    assert cache.stats()["hits"] == 3
  with_cache(standin, body, **fields)
  db = sqlite3.connect(path)
  by_use = [k for (k,) in db.execute(
      "SELECT key FROM judgements ORDER BY used")]
  db.close()
  assert by_use == [cache_lib.key("judge-a", p) for p in ("a", "b")]


def test_judgements_persist_across_restarts(standin, tmp_path):
  path = tmp_path / "judge.sqlite"

  async def judge_all(cache, batcher):
    return await batcher.submit(["p1", "p2"])
  first = with_cache(standin, judge_all, path=str(path))
  assert len(standin.requests) == 2

  async def after_restart(cache, batcher):
    assert cache.stats()["disk_entries"] == 2
    assert await batcher.submit(["p1", "p2"]) == first
    await batcher.submit(["p3"])
  with_cache(standin, after_restart, path=str(path))
  assert sorted(asked(standin)) == ["p1", "p2", "p3"]

  async def again(cache, batcher):
    assert cache.stats()["disk_entries"] == 3
    await batcher.submit(["p1", "p2", "p3"])
  with_cache(standin, again, path=str(path))
  assert len(standin.requests) == 3
  # Another judge model shares nothing.
  with_cache(standin, judge_all, identity="judge-b", path=str(path))
  assert len(standin.requests) == 5


def judgement(i: int) -> Judgement:
  """The writer's judgement of p{i}, whose score holds i exactly."""
  return Judgement(i / 2**24, 1 - (i % 7) / 64,
                   method=("parsed", "probabilities")[i % 2])


# Judges batches of 1..7 new prompts through the cache as fast as it can,
# from p{argv[2]} on, until killed.
_WRITER = """
import asyncio, sys
from judge_server import cache as cache_lib
from judge_server.backends.base import Judgement

""" + inspect.getsource(judgement) + """

async def main(path, n, bound):
  cache = cache_lib.JudgementCache("judge-a", max_entries=64, path=path,
                                   max_disk_entries=bound)
  async def submit(prompts):
    return [judgement(int(p[1:])) for p in prompts]
  print("writing", flush=True)
  while True:
    size = 1 + n % 7
    await cache.judge([f"p{i}" for i in range(n, n + size)], submit)
    n += size

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def _batch_ends(upto: int) -> set[int]:
  """Where the writer's batches end: each is one transaction."""
  ends, n = {0}, 0
  while n < upto:
    n += 1 + n % 7
    ends.add(n)
  return ends


def test_a_cache_killed_mid_write_reopens_with_whole_judgements(tmp_path):
  path = str(tmp_path / "judge.sqlite")
  bound, written, rng = 2000, 0, random.Random(17)
  for _ in range(3):  # the same file each time, recovered from each kill
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, path, str(written), str(bound)],
        cwd=processes.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
      processes.read_until(proc, proc.stdout, "writing", 60)
      try:
        proc.wait(rng.uniform(0.3, 1.5))
      except subprocess.TimeoutExpired:
        pass
      assert proc.poll() is None, proc.stderr.read()
      proc.send_signal(signal.SIGKILL)
    finally:
      processes.stop(proc)
    assert proc.returncode == -signal.SIGKILL
    assert os.path.exists(path + "-wal")  # the log, as the kill left it
    # The cache opens it, recovering the log.
    cache = cache_lib.JudgementCache("judge-a", path=path,
                                     max_disk_entries=bound)
    kept = cache.stats()["disk_entries"]
    cache.close()
    db = sqlite3.connect(path)
    try:
      assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
      rows = db.execute(
          "SELECT key, score, mass, method FROM judgements").fetchall()
    finally:
      db.close()
    numbers = []
    for k, score, mass, method in rows:
      i = int(score * 2**24)
      assert k == cache_lib.key("judge-a", f"p{i}")
      assert Judgement(score, mass, method=method) == judgement(i)
      numbers.append(i)
    # Whole batches, and just the `bound` most recently written.
    end = max(numbers) + 1
    assert end in _batch_ends(end) and end > written
    assert sorted(numbers) == list(range(max(0, end - bound), end))
    assert kept == len(numbers) == min(bound, end)
    written = end
    # And answers from it.
    cache = cache_lib.JudgementCache("judge-a", path=path,
                                     max_disk_entries=bound)
    try:
      async def never(prompts):
        raise AssertionError(f"judged again: {prompts}")
      assert asyncio.run(cache.judge([f"p{end - 1}"], never)) == [
          judgement(end - 1)]
    finally:
      cache.close()
  assert not os.path.exists(path + "-wal")  # a clean close checkpoints


def test_a_write_that_fails_keeps_judging_and_says_so_once(standin, tmp_path,
                                                          capsys):
  path = tmp_path / "judge.sqlite"

  async def body(cache, batcher):
    await batcher.submit(["p1"])
    # The file turns read-only under the cache.
    cache._db.close()
    cache._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                isolation_level=None)
    assert len(await batcher.submit(["p2", "p3"])) == 2
    await batcher.submit(["p4"])
    await batcher.submit(["p1", "p2"])
    assert cache.stats()["entries"] == 4
    assert cache.stats()["disk_entries"] == 1
  with_cache(standin, body, path=str(path))
  assert sorted(asked(standin)) == ["p1", "p2", "p3", "p4"]
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1, err
  assert err[0].startswith(f"grar-judge: cache {path}: cannot write (")
  assert err[0].endswith("judging on, disk copy incomplete")


def _foreign_sqlite(path) -> None:
  db = sqlite3.connect(path)
  db.execute("CREATE TABLE t (x)")
  db.commit()
  db.close()


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.write_bytes(msgpack.packb({"grar-judge-cache": 1})
                             + msgpack.packb([b"k" * 16, 0.5, 1.0, "parsed"])),
     "a msgpack judge cache from an earlier grar, which is not read any "
     "more: delete it (its judgements are judged again) or choose another "
     "path"),
    (lambda p: p.write_bytes(b"backend: {kind: jax}\n"),
     "not a grar judge cache"),
    (_foreign_sqlite,
     "not a grar judge cache (an SQLite database of something else)"),
], ids=["msgpack", "text", "sqlite"])
def test_a_file_that_is_not_a_judge_cache_is_refused(tmp_path, make,
                                                      problem):
  path = tmp_path / "cache"
  make(path)
  content = path.read_bytes()
  with pytest.raises(ConfigError) as e:
    cache_lib.JudgementCache("judge-a", path=str(path))
  assert str(e.value) == f"cache.path: {path}: {problem}"
  assert path.read_bytes() == content  # left as it was
  assert os.listdir(tmp_path) == ["cache"]


def test_a_missing_directory_or_a_file_in_use_is_refused(tmp_path):
  missing = tmp_path / "no-such-dir" / "judge.sqlite"
  problem = (f"cache.path: {missing}: directory {missing.parent} does not "
             "exist (create it, or choose another path)")
  with pytest.raises(ConfigError) as e:
    cache_lib.JudgementCache("judge-a", path=str(missing))
  assert str(e.value) == problem
  with pytest.raises(ConfigError) as e:  # the check before a slow start
    cache_lib.check(config_lib.CacheConfig(path=str(missing)))
  assert str(e.value) == problem
  assert not missing.parent.exists()
  (tmp_path / "a-file").write_text("")
  with pytest.raises(ConfigError, match="a-file does not exist"):
    cache_lib.JudgementCache("judge-a",
                             path=str(tmp_path / "a-file" / "judge.sqlite"))
  path = tmp_path / "judge.sqlite"
  held = cache_lib.JudgementCache("judge-a", path=str(path))
  try:
    with pytest.raises(ConfigError) as e:
      cache_lib.JudgementCache("judge-a", path=str(path))
    assert str(e.value) == (f"cache.path: {path}: in use by another judge "
                            "process (give each judge its own path)")
  finally:
    held.close()
  cache_lib.JudgementCache("judge-a", path=str(path)).close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_directory_is_refused(tmp_path):
  directory = tmp_path / "ro"
  directory.mkdir(mode=0o500)
  path = directory / "judge.sqlite"
  with pytest.raises(ConfigError) as e:
    cache_lib.JudgementCache("judge-a", path=str(path))
  assert str(e.value) == (f"cache.path: {path}: directory {directory} is "
                          "not writable")


def test_the_judge_refuses_to_start_without_the_caches_directory(tmp_path):
  path = tmp_path / "missing" / "judge.sqlite"
  proc = processes.start_judge(
      {"port": 0,
       "backend": {"kind": "openai", "openai": {
           "base_url": f"http://127.0.0.1:{processes.free_port()}/v1",
           "model": "nobody"}},
       "cache": {"path": str(path)}}, tmp_path)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 2, err
  assert err.splitlines() == [
      f"grar-judge: cache.path: {path}: directory {path.parent} does not "
      "exist (create it, or choose another path)"]


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
    ({"max_disk_entries": 0}, "cache.max_disk_entries: must be >= 1"),
    ({"enabled": "false", "path": "/tmp/c"},
     "cache.path: set, but enabled is false"),
    ({"size": 3}, "cache.size: unknown key"),
])
def test_bad_cache_config_names_the_field(fields, problem):
  overrides = [f"cache.{k}={v}" for k, v in fields.items()]
  with pytest.raises(ConfigError) as e:
    config_lib.load(None, overrides)
  assert str(e.value).startswith(problem)
