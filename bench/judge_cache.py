"""The judge cache: how often it answers on real GRPO groups, and what its
SQLite file costs.

Replay (the default): runs the demo training (`grar train --config
configs/cpu-tiny.yaml`, into a temporary output dir) unless given a run
directory, reads every rollout from its journal, and scores them again step
by step, each step's rollouts at once as the trainer sends them, through the
judge's real path: scoring, the cache (with a file, as `cache.path` keeps
it), the batcher and the run's own judge (the tiny random Gemma-3 on a
4-device CPU mesh). Prints how many judge prompts the cache answered (kept
from before, or joined while being judged) and how many reached the judge,
and checks the replayed rewards against the journal's. Then a restarted
judge (a new cache on the same file, nothing in memory) replays them again:
it must send none to the judge.

--storage N: the cache alone, with a judge that answers at once, so only the
cache's own cost is timed: N judgements written as misses in batches of 32
(one transaction each); memory hits, each the first in the current window
of max_disk_entries / 64 new judgements (its use is written too, in
batches), then again (nothing written); hits read from disk after a reopen
with little memory; writes past max_disk_entries (each evicting the least
recently used); the file's size per judgement. Hits one prompt per call.

  .venv/bin/python bench/judge_cache.py [--run RUN_DIR]
  .venv/bin/python bench/judge_cache.py --storage 100000

Each ends with one line of name=value pairs.
"""

import argparse
import asyncio
import collections
import math
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from judge_server import cache as cache_lib  # noqa: E402
from judge_server.backends.base import Judgement  # noqa: E402


def _train(output_dir: str) -> pathlib.Path:
  subprocess.run([sys.executable, "-m", "orchestrator.cli", "train",
                  "--config", "configs/cpu-tiny.yaml", "--set",
                  f"output_dir={output_dir}"], cwd=ROOT, check=True)
  (path,) = pathlib.Path(output_dir).iterdir()
  return path


def replay(run: str | None) -> int:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  if "xla_force_host_platform_device_count" not in os.environ.get(
      "XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8")
  import jax
  import numpy as np

  from judge_server import scoring, server
  from judge_server.backends import jax_local
  from judge_server.batching import MicroBatcher
  from orchestrator import config as config_lib
  from orchestrator.data import dataset
  from orchestrator.rundir import journal
  from orchestrator.rundir import layout as run_dir

  path = (pathlib.Path(run) if run
          else _train(tempfile.mkdtemp(prefix="grar-cache-bench-")))
  cfg = config_lib.load(path / run_dir.CONFIG)
  records = list(journal.read(path / run_dir.JOURNAL))
  packs = server.load_packs(cfg.judge.server.rubric_dir)
  examples = {ex.id: ex for ex in dataset.load_jsonl(
      ROOT / cfg.data.path, packs.keys())}
  steps = collections.defaultdict(list)  # each step's jobs, logged reward
  groups = collections.defaultdict(set)
  for r in records:
    ex = examples[r["example_id"]]
    job = scoring.Job(
        rollout_id=r["rollout_id"], prompt=ex.prompt,
        completion=r["completion"], reference=ex.answer,
        rubric=ex.rubric or packs[ex.rubric_id],
        aggregation=cfg.judge.aggregation)
    steps[r["step"]].append((job, r["rewards"]["judge"]))
    groups[(r["step"], r["example_id"])].add(r["completion"])
  distinct = np.mean([len(c) for c in groups.values()])

  backend_cfg = cfg.judge.server.backend
  mesh = jax.sharding.Mesh(
      np.array(jax.devices()[:backend_cfg.mesh.size]).reshape(
          backend_cfg.mesh.fsdp, backend_cfg.mesh.tp), ("fsdp", "tp"))
  backend = jax_local.build(backend_cfg, mesh)
  directory = tempfile.TemporaryDirectory(prefix="grar-cache-")
  file = pathlib.Path(directory.name) / "judge.sqlite"

  async def run_all(cache) -> list[tuple[float, float]]:
    batcher = MicroBatcher(backend, backend.max_batch,
                           cfg.judge.server.max_wait_ms / 1000,
                           backend.max_calls_in_flight, cache)
    batcher.start()
    pairs = []
    try:
      for step in sorted(steps):
        jobs = steps[step]
        outcomes = await asyncio.gather(
            *(scoring.score(job, batcher) for job, _ in jobs))
        pairs += [(o.reward, logged)
                  for o, (_, logged) in zip(outcomes, jobs)
                  if o.status == "scored" and not math.isnan(logged)]
    finally:
      await batcher.close()  # closes the cache
    return pairs

  cache = cache_lib.JudgementCache(backend.identity, path=str(file))
  pairs = asyncio.run(run_all(cache))
  s = cache.stats()
  asked = s["hits"] + s["joined"] + s["misses"]
  restarted = cache_lib.JudgementCache(backend.identity, path=str(file))
  again = asyncio.run(run_all(restarted))
  r = restarted.stats()
  print(f"run {path}: {len(records)} rollouts over {len(steps)} steps, "
        f"groups of {cfg.rollout.num_generations} with {distinct:.2f} "
        "distinct completions on average")
  print(f"judge prompts: {asked}; answered by the cache {s['hits']} kept + "
        f"{s['joined']} joined in flight; sent to the judge {s['misses']}; "
        f"{s['disk_entries']} judgements in {file}")
  print(f"after a restart: sent to the judge {r['misses']}, answered from "
        f"the file {r['hits']} + {r['joined']} joined")
  if pairs:
    worst = max(abs(a - b) for a, b in pairs)
    print(f"replayed vs journal judge reward, {len(pairs)} scored rollouts: "
          f"largest difference {worst:.2g}")
  same = [a for a, _ in pairs] == [a for a, _ in again]
  print(f"hit_rate={(s['hits'] + s['joined']) / asked:.3f} "
        f"judged={s['misses']} entries={s['disk_entries']} "
        f"restart_judged={r['misses']} restart_same_rewards={int(same)}")
  directory.cleanup()
  return 0 if r["misses"] == 0 and same else 1


def _judgement(i: int) -> Judgement:
  return Judgement((i % 1000) / 999, 1.0, method="probabilities")


def storage(n: int, batch: int = 32, probes: int = 20_000) -> int:
  with tempfile.TemporaryDirectory(prefix="grar-cache-bench-") as directory:
    return _storage(pathlib.Path(directory) / "judge.sqlite", n, batch,
                    probes)


def _storage(file: pathlib.Path, n: int, batch: int, probes: int) -> int:
  prompts = [f"criterion {i % 97} on completion {i}" * 4 for i in range(n)]
  judged = 0

  async def submit(ps):
    nonlocal judged
    judged += len(ps)
    return [_judgement(len(p)) for p in ps]

  def per_prompt_us(cache, calls) -> float:
    """Mean time of one call, in microseconds."""
    async def go():
      start = time.perf_counter()
      for ps in calls:
        await cache.judge(ps, submit)
      return (time.perf_counter() - start) / len(calls) * 1e6
    return asyncio.run(go())

  rng = random.Random(0)
  cache = cache_lib.JudgementCache("bench", max_entries=n, path=str(file),
                                   max_disk_entries=n)
  miss_us = per_prompt_us(cache, [prompts[i:i + batch]
                                  for i in range(0, n, batch)]) / batch
  assert judged == n and cache.stats()["disk_entries"] == n
  probed = [[p] for p in rng.sample(prompts, min(probes, n))]
  # Each one's first use in this window of max_disk_entries / WINDOWS new
  # judgements: the use is written too.
  first_hit_us = per_prompt_us(cache, probed)
  hit_us = per_prompt_us(cache, probed)  # used again: nothing written
  cache.close()
  size = file.stat().st_size  # the log is checkpointed into it at close

  start = time.perf_counter()
  cache = cache_lib.JudgementCache("bench", max_entries=1_000, path=str(file),
                                   max_disk_entries=n)
  open_ms = (time.perf_counter() - start) * 1e3
  disk_hit_us = per_prompt_us(cache, probed)
  assert judged == n, "a kept judgement was judged again"
  # Past the bound: each new judgement evicts the least recently used.
  extra = [f"new {i}" for i in range(n // 10)]
  evicting_miss_us = per_prompt_us(
      cache, [extra[i:i + batch] for i in range(0, len(extra), batch)]
  ) / batch
  entries = cache.stats()["disk_entries"]
  assert entries == n
  cache.close()
  print(f"{n} judgements: {size / n:.0f} bytes each on disk; "
        f"opened in {open_ms:.0f} ms")
  print(f"per prompt: miss (lookup + its share of a {batch}-judgement "
        f"transaction) {miss_us:.1f} us, past the bound (+ evicting one) "
        f"{evicting_miss_us:.1f} us")
  print(f"hit from memory {hit_us:.1f} us; the first in a window of "
        f"{n // cache_lib.WINDOWS} new judgements (the use is written too) "
        f"{first_hit_us:.1f} us; from "
        f"disk after a reopen {disk_hit_us:.1f} us ({len(probed)} distinct "
        "prompts, one per call)")
  print(f"entries={entries} bytes_per_entry={size / n:.0f} "
        f"miss_us={miss_us:.1f} evicting_miss_us={evicting_miss_us:.1f} "
        f"hit_us={hit_us:.1f} first_hit_us={first_hit_us:.1f} "
        f"disk_hit_us={disk_hit_us:.1f} open_ms={open_ms:.0f}")
  return 0


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--run", help="an existing run directory (default: train "
                 "the demo into a temporary directory)")
  p.add_argument("--storage", type=int, metavar="N",
                 help="time the cache's file with N judgements instead")
  args = p.parse_args(argv)
  if args.storage:
    return storage(args.storage)
  return replay(args.run)


if __name__ == "__main__":
  sys.exit(main())
