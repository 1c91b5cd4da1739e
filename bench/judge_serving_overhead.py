"""What serving the judge over gRPC costs: the same rollouts scored by the
same tiny JAX judge backend two ways, side by side in one process.

direct: the rollouts validated and scored in-process (service.validate,
  scoring.score, a MicroBatcher on the backend), all in flight at once.
grpc: the same rollouts sent on one Score stream by the trainer's
  JudgeClient to a judge server running in this process (the in-process
  placement), all in flight at once; the server's batcher has the same
  max_batch and max_wait.

The judgement cache is off on both sides, so every round judges every
prompt. One untimed round of each compiles and checks that both give the
same rewards; then --rounds alternating rounds. Prints the median time of
each and the ratio grpc / direct.

  .venv/bin/python bench/judge_serving_overhead.py [--rollouts 32]
"""

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(pathlib.Path(__file__).resolve().parent.parent / ".jax-cache"))

from judge_server.backends import factory  # noqa: E402
from judge_server import scoring, server, service  # noqa: E402
from judge_server.batching import MicroBatcher  # noqa: E402
from judge_server.config import (BackendConfig, CacheConfig,  # noqa: E402
                                 JudgeConfig)
from orchestrator.judge.client import (JudgeClient,  # noqa: E402
                                       request_from_row)
from grar_config.model import ModelSpec  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "reasoning-sample.jsonl"


def _requests(n: int) -> list:
  """n rollouts: sample problems with their inline rubrics, each answered
  with a short worked completion."""
  rows = [json.loads(line) for line in DATA.read_text().splitlines() if line]
  return [request_from_row({
      "prompt": row["prompt"], "reference_answer": row["answer"],
      "rubric": row["rubric"],
      "completion": f"<reasoning>Working {i}.</reasoning>"
                    f"<answer>{row['answer']}</answer>"}, f"r{i}")
      for i, row in enumerate(r for r in rows if "rubric" in r) if i < n]


async def _direct(config: JudgeConfig, backend, requests) -> dict:
  packs = server.load_packs(config.rubric_dir)
  batcher = MicroBatcher(backend, backend.max_batch, config.max_wait_ms / 1000)
  batcher.start()
  try:
    jobs = [service.validate(r, packs, config.limits,
                             config.default_aggregation) for r in requests]
    outcomes = await asyncio.gather(
        *(scoring.score(job, batcher) for job in jobs))
  finally:
    await batcher.close()
  return {j.rollout_id: o.reward for j, o in zip(jobs, outcomes)}


def _timed(fn) -> tuple[float, dict]:
  start = time.perf_counter()
  rewards = fn()
  return time.perf_counter() - start, rewards


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rollouts", type=int, default=32)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--max-batch", type=int, default=8)
  args = p.parse_args(argv)

  backend_cfg = BackendConfig(model=ModelSpec(family="gemma3-tiny", seed=1),
                              max_batch=args.max_batch)
  config = JudgeConfig(backend=backend_cfg, cache=CacheConfig(enabled=False))
  backend = factory.build(backend_cfg)
  requests = _requests(args.rollouts)
  prompts = sum(len(r.rubric.criteria) for r in requests)
  handle = server.run_in_thread(config, backend)
  try:
    with JudgeClient(handle.address, timeout_s=600) as client:
      def direct():
        return asyncio.run(_direct(config, backend, requests))

      def grpc_stream():
        return {i: r.reward for i, r in client.score(requests).items()}

      _, want = _timed(direct)
      _, got = _timed(grpc_stream)
      worst = max(abs(want[i] - got[i]) for i in want)
      assert worst < 1e-6, f"direct and grpc rewards differ by {worst}"
      times = {"direct": [], "grpc": []}
      for _ in range(args.rounds):
        times["direct"].append(_timed(direct)[0])
        times["grpc"].append(_timed(grpc_stream)[0])
  finally:
    handle.stop()
    asyncio.run(backend.close())

  print(f"{len(requests)} rollouts ({prompts} judge prompts) in flight at "
        f"once, tiny JAX judge, max_batch {args.max_batch}, "
        f"{args.rounds} rounds each")
  medians = {k: statistics.median(v) for k, v in times.items()}
  for name, t in medians.items():
    print(f"  {name:6s}  median {t * 1000:8.1f} ms  "
          f"{len(requests) / t:8.1f} rollouts/s  "
          f"(runs: {', '.join(f'{x * 1000:.0f}' for x in times[name])} ms)")
  print(f"grpc / direct: {medians['grpc'] / medians['direct']:.3f}x "
        "(median time; 1.000 = serving costs nothing)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
