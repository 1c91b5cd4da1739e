"""Teacher log-probs through the judge service against the same backend in
process: the jax backend on one CPU device (the shipped Gemma-3-270M, or
the tiny random model with --model tiny) answering the log-probs of
--rollouts completions of --completion-tokens tokens each (worked
reasoning of data/sft-sample.jsonl under the prompts of
data/reasoning-sample.jsonl, byte-for-byte what a student would send).

In process: backend.token_logprobs in calls of max_batch queries, one after
another, as the server's batcher makes them. Through the service: the
judge server on loopback in this process (its batcher, retries, metrics,
gRPC both ways) and JudgeClient.token_logprobs of all rollouts at once.
An untimed first round compiles every shape and checks the two agree; then
--runs timed rounds, interleaved. Prints completion tokens/s of each (the
medians) and their ratio.

  .venv/bin/python bench/teacher_logprobs.py [--model tiny] [--runs 3]
"""

import argparse
import asyncio
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from grar_config.model import ModelSpec  # noqa: E402
from judge_server import config as config_lib  # noqa: E402
from judge_server import packs as packs_lib  # noqa: E402
from judge_server import server  # noqa: E402
from judge_server.backends import base, jax_local  # noqa: E402
from orchestrator.data import dataset, templates  # noqa: E402
from orchestrator.judge import client as client_lib  # noqa: E402
from policy_worker import prepare  # noqa: E402
from protos import judge_pb2  # noqa: E402

DATA = "data/reasoning-sample.jsonl"
REASONING = "data/sft-sample.jsonl"


def _queries(tokenizer, n: int, completion_tokens: int
             ) -> list[base.LogprobsQuery]:
  examples = dataset.load_jsonl(DATA, packs_lib.load_packs().keys())
  reasoning = " ".join(row["reasoning"]
                       for _, row in dataset.read_rows(REASONING))
  ids = tokenizer.encode(reasoning)
  out = []
  for i in range(n):
    prompt = templates.render(examples[i % len(examples)].prompt, ())
    start = (i * 37) % max(1, len(ids) - completion_tokens)
    out.append(base.LogprobsQuery(
        (tokenizer.bos_id(), *tokenizer.encode(prompt)),
        tuple(ids[start:start + completion_tokens])))
  return out


def _in_process(backend, queries, max_batch: int) -> list[np.ndarray]:
  out = []
  for i in range(0, len(queries), max_batch):
    out += [np.asarray(a.values) for a in asyncio.run(
        backend.token_logprobs(queries[i:i + max_batch]))]
  return out


def _service(client, requests) -> list[np.ndarray]:
  results = client.token_logprobs(requests)
  for r in results.values():
    if r.status != judge_pb2.SCORED:
      raise RuntimeError(f"{r.rollout_id}: {r.reason}")
  return [np.asarray(results[r.rollout_id].logprobs) for r in requests]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", choices=("gemma3-270m", "tiny"),
                 default="gemma3-270m")
  p.add_argument("--rollouts", type=int, default=16)
  p.add_argument("--completion-tokens", type=int, default=64)
  p.add_argument("--max-batch", type=int, default=8)
  p.add_argument("--runs", type=int, default=3)
  args = p.parse_args(argv)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                           ("fsdp", "tp"))
  spec = (ModelSpec(family="gemma3-tiny", seed=1) if args.model == "tiny"
          else ModelSpec(family="gemma3",
                         path=str(prepare.prepare_gemma3_270m())))
  cfg = config_lib.JudgeConfig(backend=config_lib.BackendConfig(
      model=spec, max_batch=args.max_batch))
  backend = jax_local.build(cfg.backend, mesh)
  queries = _queries(backend._tok, args.rollouts, args.completion_tokens)
  requests = [judge_pb2.LogprobsRequest(
      rollout_id=f"r{i}", prompt_tokens=q.prompt,
      completion_tokens=q.completion) for i, q in enumerate(queries)]
  tokens = sum(len(q.completion) for q in queries)
  print(f"teacher: {spec.name} on 1 {mesh.devices.flat[0].platform} device; "
        f"{args.rollouts} completions of {args.completion_tokens} tokens, "
        f"prompts of {min(len(q.prompt) for q in queries)}-"
        f"{max(len(q.prompt) for q in queries)} tokens, calls of "
        f"{args.max_batch}", flush=True)
  with server.on_loopback(cfg, backend) as address, \
      client_lib.JudgeClient(address, timeout_s=3600) as client:
    ways = {"in process": lambda: _in_process(backend, queries,
                                              args.max_batch),
            "service": lambda: _service(client, requests)}
    first = {name: run() for name, run in ways.items()}  # compiles
    worst = max(float(np.abs(a - b).max())
                for a, b in zip(*first.values()))
    times = {name: [] for name in ways}
    for _ in range(args.runs):  # interleaved: both see the same machine
      for name, run in ways.items():
        t0 = time.perf_counter()
        run()
        times[name].append(time.perf_counter() - t0)
  rate = {name: tokens / statistics.median(t) for name, t in times.items()}
  for name, r in rate.items():
    print(f"  {name:>10}: {r:8.1f} completion tokens/s "
          f"(median of {args.runs}: {statistics.median(times[name]):.2f} s)")
  print(f"largest log-prob difference {worst:.1e}")
  print(f"service_over_in_process={rate['service'] / rate['in process']:.3g} "
        f"service_tokens_per_s={rate['service']:.4g} "
        f"in_process_tokens_per_s={rate['in process']:.4g} "
        f"max_logprob_diff={worst:.3g}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
