"""How many rollouts per second the judge server itself can take: the
serving path (gRPC, validation, admission, batching, cache lookups,
aggregation) with a backend that costs nothing.

The backend is InstantStandIn, NOT a judge: it answers every prompt at once
with a score from a hash of the prompt. The server runs in its own process
(as a standalone judge does) with the default config, except a queue limit
high enough that nothing is refused. For each stream count S, S client
threads each send --rollouts fresh rollouts (3 criteria each) on their own
Score stream through the trainer's JudgeClient, all at once; --runs runs
per S. Prints the median rollouts/s per S and each S's ratio to one stream.

  .venv/bin/python bench/judge_capacity.py [--streams 1 4 16]
"""

import argparse
import asyncio
import concurrent.futures
import hashlib
import multiprocessing
import statistics
import time

from judge_server import server
from judge_server.backends.base import Backend, Judgement
from judge_server.config import JudgeConfig, Limits
from orchestrator.judge.client import JudgeClient, request_from_row
from protos import judge_pb2

RUBRIC = {"criteria": [
    {"text": "States that the sum is 85", "category": "essential", "weight": 5},
    {"text": "Carries the ten", "category": "important", "weight": 3},
    {"text": "Forgets to carry and gives 75", "category": "pitfall",
     "weight": 2}]}


class InstantStandIn(Backend):
  """NOT a judge: answers every prompt at once, its score a hash of the
  prompt, so only the serving path is measured."""

  name = "instant-stand-in"
  model = "none"
  max_batch = 64

  async def judge(self, prompts):
    return [Judgement(hashlib.sha256(p.encode()).digest()[0] / 255, 1.0)
            for p in prompts]


def _serve(addresses: multiprocessing.Queue) -> None:
  async def run():
    config = JudgeConfig(limits=Limits(max_queue_depth=1 << 30))
    handle = await server.start(config, InstantStandIn())
    addresses.put(handle.address)
    await asyncio.Event().wait()  # until the parent terminates this process
  asyncio.run(run())


def _requests(tag: str, n: int) -> list[judge_pb2.ScoreRequest]:
  """Fresh rollouts: the tag makes every judge prompt new to the cache."""
  return [request_from_row({
      "prompt": "What is 47 + 38?", "reference_answer": "85",
      "rubric": RUBRIC,
      "completion": f"<reasoning>{tag}-{i}: 7 + 8 = 15, carry 1</reasoning>"
                    "<answer>85</answer>"}, f"{tag}-{i}") for i in range(n)]


def _run(client: JudgeClient, streams: int, rollouts: int, tag: str) -> float:
  """Rollouts per second of `streams` streams sending at once."""
  batches = [_requests(f"{tag}-s{s}", rollouts) for s in range(streams)]
  with concurrent.futures.ThreadPoolExecutor(streams) as pool:
    start = time.perf_counter()
    results = list(pool.map(client.score, batches))
    elapsed = time.perf_counter() - start
  for batch in results:
    bad = [r for r in batch.values() if r.status != judge_pb2.SCORED]
    assert not bad, bad[0].reason
  return streams * rollouts / elapsed


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
  p.add_argument("--rollouts", type=int, default=200,
                 help="rollouts per stream per run")
  p.add_argument("--runs", type=int, default=5)
  args = p.parse_args(argv)

  ctx = multiprocessing.get_context("spawn")
  addresses = ctx.Queue()
  proc = ctx.Process(target=_serve, args=(addresses,), daemon=True)
  proc.start()
  try:
    address = addresses.get(timeout=120)
    rates = {}
    with JudgeClient(address, timeout_s=600) as client:
      _run(client, 1, args.rollouts, "warmup")
      for s in args.streams:
        rates[s] = statistics.median(
            _run(client, s, args.rollouts, f"s{s}-r{r}")
            for r in range(args.runs))
  finally:
    proc.terminate()
    proc.join()

  print(f"judge server (own process) with the instant stand-in backend, "
        f"{args.rollouts} rollouts x 3 criteria per stream, median of "
        f"{args.runs} runs")
  base = rates[args.streams[0]]
  for s, rate in rates.items():
    print(f"  {s:3d} streams: {rate:8.0f} rollouts/s  "
          f"({rate * 3:8.0f} judge prompts/s, "
          f"{rate / base:.2f}x {args.streams[0]} stream(s))")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
