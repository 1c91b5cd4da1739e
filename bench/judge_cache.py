"""How often the judge cache answers on real GRPO groups: the demo's own
rollouts, replayed through the judge's cache.

Runs the demo training (`grar train --config configs/cpu-tiny.yaml`, into a
temporary output dir) unless given a run directory, reads every rollout
from its journal, and scores them again step by step, each step's rollouts
at once as the trainer sends them, through the judge's real path: scoring,
the cache, the batcher and the run's own judge (the tiny random Gemma-3 on
a 4-device CPU mesh). Prints how many judge prompts the cache answered (kept
from before, or joined while being judged) and how many reached the judge,
and checks the replayed rewards against the journal's.

  .venv/bin/python bench/judge_cache.py [--run RUN_DIR]
"""

import argparse
import asyncio
import collections
import math
import os
import pathlib
import subprocess
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from judge_server import cache as cache_lib  # noqa: E402
from judge_server import scoring, server  # noqa: E402
from judge_server.backends import jax_local  # noqa: E402
from judge_server.batching import MicroBatcher  # noqa: E402
from orchestrator import config as config_lib  # noqa: E402
from orchestrator.data import dataset  # noqa: E402
from orchestrator.rundir import journal  # noqa: E402
from orchestrator.rundir import layout as run_dir  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _train(output_dir: str) -> pathlib.Path:
  subprocess.run([sys.executable, "-m", "orchestrator.cli", "train",
                  "--config", "configs/cpu-tiny.yaml", "--set",
                  f"output_dir={output_dir}"], cwd=ROOT, check=True)
  (path,) = pathlib.Path(output_dir).iterdir()
  return path


def _jobs(cfg, records) -> dict[int, list[tuple[scoring.Job, float]]]:
  """Each step's jobs with the judge reward the journal recorded."""
  packs = server.load_packs(cfg.judge.server.rubric_dir)
  examples = {ex.id: ex for ex in dataset.load_jsonl(
      ROOT / cfg.data.path, packs.keys())}
  steps = collections.defaultdict(list)
  for r in records:
    ex = examples[r["example_id"]]
    job = scoring.Job(
        rollout_id=r["rollout_id"], prompt=ex.prompt,
        completion=r["completion"], reference=ex.answer,
        rubric=ex.rubric or packs[ex.rubric_id],
        aggregation=cfg.judge.aggregation)
    steps[r["step"]].append((job, r["rewards"]["judge"]))
  return steps


async def _replay(steps, batcher) -> list[tuple[float, float]]:
  pairs = []
  for step in sorted(steps):
    jobs = steps[step]
    outcomes = await asyncio.gather(
        *(scoring.score(job, batcher) for job, _ in jobs))
    pairs += [(o.reward, logged) for o, (_, logged) in zip(outcomes, jobs)
              if o.status == "scored" and not math.isnan(logged)]
  return pairs


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--run", help="an existing run directory (default: train "
                 "the demo into a temporary directory)")
  args = p.parse_args(argv)
  path = (pathlib.Path(args.run) if args.run
          else _train(tempfile.mkdtemp(prefix="grar-cache-bench-")))
  cfg = config_lib.load(path / run_dir.CONFIG)
  records = list(journal.read(path / run_dir.JOURNAL))
  steps = _jobs(cfg, records)
  G = cfg.rollout.num_generations
  groups = collections.defaultdict(set)
  for r in records:
    groups[(r["step"], r["example_id"])].add(r["completion"])
  distinct = np.mean([len(c) for c in groups.values()])

  backend_cfg = cfg.judge.server.backend
  devices = jax.devices()
  mesh = jax.sharding.Mesh(
      np.array(devices[:backend_cfg.mesh.size]).reshape(
          backend_cfg.mesh.fsdp, backend_cfg.mesh.tp), ("fsdp", "tp"))
  backend = jax_local.build(backend_cfg, mesh)
  cache = cache_lib.JudgementCache(backend.identity)

  async def run():
    batcher = MicroBatcher(backend, backend.max_batch,
                           cfg.judge.server.max_wait_ms / 1000,
                           backend.max_calls_in_flight, cache)
    batcher.start()
    try:
      return await _replay(steps, batcher)
    finally:
      await batcher.close()
  pairs = asyncio.run(run())

  s = cache.stats()
  asked = s["hits"] + s["joined"] + s["misses"]
  print(f"run {path}: {len(records)} rollouts over {len(steps)} steps, "
        f"groups of {G} with {distinct:.2f} distinct completions on average")
  print(f"judge prompts: {asked}; answered by the cache {s['hits']} kept + "
        f"{s['joined']} joined in flight; sent to the judge {s['misses']}")
  print(f"cache hit rate: {(s['hits'] + s['joined']) / asked:.3f}")
  if pairs:
    worst = max(abs(a - b) for a, b in pairs)
    print(f"replayed vs journal judge reward, {len(pairs)} scored rollouts: "
          f"largest difference {worst:.2g}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
