"""The jax judge backend (the tiny random Gemma-3 on a 4-device CPU judge
mesh, as in the demo) scoring the judge prompts of N rollouts two ways:

one by one: each judge prompt a backend call of its own, in turn, as a
  reward function calling the model per prompt would;
batched: all rollouts submitted at once to the judge's MicroBatcher, which
  packs up to max_batch prompts into each forward pass.

An untimed first round compiles every shape both ways and checks that they
give the same scores. Prints the median of --runs timed rounds of each,
measured side by side, and the ratio; then one forward pass at batch 1 and
at max_batch, per prompt, which says where the ratio comes from.

On the CPU the ratio turns on the prompts' length. tunix's attention holds
[batch, heads, L, L] float32 scores: at L=1024 (these prompts are about 850
tokens) a batch of 8 holds 128 MiB of them per layer, a batch of 1 16 MiB,
and the batched pass costs more per prompt than the single one (most likely
the caches: nothing is compiled in the timed rounds, and the time is spent
inside the forward pass). With prompts of about 200 tokens (L=256) a batch
of 8 costs less than half as much per prompt as a batch of 1.

  .venv/bin/python bench/judge_batching.py [--rollouts 16] [--runs 3]
"""

import argparse
import asyncio
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from judge_server import packs as packs_lib  # noqa: E402
from judge_server import prompts  # noqa: E402
from judge_server.backends import jax_local  # noqa: E402
from judge_server.batching import MicroBatcher  # noqa: E402
from judge_server.config import BackendConfig  # noqa: E402
from orchestrator.data import dataset  # noqa: E402
from grar_config.model import ModelSpec  # noqa: E402

DATA = "data/reasoning-sample.jsonl"
MAX_WAIT_S = 0.005  # the server's default max_wait_ms


def _rollouts(n: int) -> list[list[str]]:
  """The explicit judge prompts of n rollouts: sample problems, each with
  a short made-up completion, judged against its rubric."""
  packs = packs_lib.load_packs()
  examples = dataset.load_jsonl(DATA, packs.keys())
  out = []
  for i in range(n):
    ex = examples[i % len(examples)]
    r = ex.rubric or packs[ex.rubric_id]
    completion = (f"<reasoning>Attempt {i}: work it out.</reasoning>"
                  f"<answer>{ex.answer}</answer>")
    out.append([prompts.explicit_prompt(ex.prompt, completion, ex.answer, c)
                for c in r.criteria])
  return out


async def _one_by_one(backend, rollouts) -> list[float]:
  scores = []
  for rollout in rollouts:
    for p in rollout:
      (j,) = await backend.judge([p])
      scores.append(j.score)
  return scores


async def _batched(backend, rollouts) -> list[float]:
  batcher = MicroBatcher(backend, backend.max_batch, MAX_WAIT_S,
                         backend.max_calls_in_flight)
  batcher.start()
  try:
    results = await asyncio.gather(*(batcher.submit(r) for r in rollouts))
  finally:
    await batcher.close()
  return [j.score for judged in results for j in judged]


async def _one_call(backend, prompts) -> list[float]:
  return [j.score for j in await backend.judge(prompts)]


def _timed(fn, backend, rollouts) -> tuple[float, list[float]]:
  started = time.perf_counter()
  scores = asyncio.run(fn(backend, rollouts))
  return time.perf_counter() - started, scores


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rollouts", type=int, default=16)
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--max-batch", type=int, default=8)
  args = p.parse_args(argv)
  devices = jax.devices()
  mesh = jax.sharding.Mesh(np.array(devices[4:8]).reshape(1, 4),
                           ("fsdp", "tp"))
  backend = jax_local.build(
      BackendConfig(model=ModelSpec(family="gemma3-tiny", seed=1),
                    max_batch=args.max_batch), mesh)
  rollouts = _rollouts(args.rollouts)
  n_prompts = sum(map(len, rollouts))
  print(f"{args.rollouts} rollouts, {n_prompts} judge prompts, max_batch "
        f"{args.max_batch}, tiny Gemma-3 judge on 4 CPU devices (tp=4)",
        flush=True)
  _, single = _timed(_one_by_one, backend, rollouts)
  _, batched = _timed(_batched, backend, rollouts)
  diff = max(abs(a - b) for a, b in zip(single, batched))
  print(f"warm-up done; largest score difference batched vs one by one: "
        f"{diff:.2g}", flush=True)
  one, many = [], []
  for _ in range(args.runs):  # interleaved, so both see the same machine
    one.append(_timed(_one_by_one, backend, rollouts)[0])
    many.append(_timed(_batched, backend, rollouts)[0])
  t1, tb = statistics.median(one), statistics.median(many)
  print(f"median of {args.runs}:  one by one {t1:.3f}s "
        f"({n_prompts / t1:.1f} prompts/s)   batched {tb:.3f}s "
        f"({n_prompts / tb:.1f} prompts/s)")
  print(f"one by one / batched time: {t1 / tb:.2f}")
  first = [p for r in rollouts for p in r][:args.max_batch]
  for batch in (first[:1], first):
    _timed(_one_call, backend, batch)  # its shape may not be compiled yet
    per_prompt = statistics.median(
        _timed(_one_call, backend, batch)[0] for _ in range(args.runs))
    print(f"one forward pass of {len(batch)} prompt(s): "
          f"{per_prompt / len(batch) * 1000:.0f} ms per prompt")
  return 0


if __name__ == "__main__":
  sys.exit(main())
