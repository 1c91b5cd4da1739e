"""Benchmark 4: the rubric rewards of one GRPO batch from a vLLM judge, a
naive reward function against the judge service.

naive: a reward function as a notebook would write it, sending each judge
  prompt to vLLM in turn. It uses the service's own backend one prompt per
  call (same prompts, same request, same scoring), so only scheduling
  differs.
service: the batch sent on the judge server's Score stream; its batcher and
  the backend's concurrency keep several prompts in vLLM at once, which
  batches them.

Every timed run scores fresh rollouts (a tag early in each completion), so
vLLM's prefix cache never answers one run from another's prompts. An untimed
first round scores the same rollouts both ways and checks that the rewards
agree. Prints the median of --runs of each, side by side, and the ratio.

  .venv/bin/python bench/judge_vllm_naive.py            # starts vLLM itself
  .venv/bin/python bench/judge_vllm_naive.py --base-url http://h:8000/v1 \\
      --model NAME                                      # an existing one
"""

import argparse
import asyncio
import functools
import json
import math
import pathlib
import statistics
import sys
import tempfile
import time

from judge_server import aggregation, prompts
from judge_server.backends import openai_compat
from judge_server.config import OpenAIConfig
from protos.rubric import Rubric
from orchestrator.judge import client as judge_client
from policy_worker import prepare
from protos import judge_pb2

ROOT = pathlib.Path(__file__).resolve().parent.parent
# vLLM and the judge server are started the way the tests start them.
sys.path.insert(0, str(ROOT / "tests"))
import processes  # noqa: E402
import vllm_server  # noqa: E402

DATA = ROOT / "data" / "reasoning-sample.jsonl"
CRITERIA = 4
GENERATIONS = 4


def _problems(n: int) -> list[dict]:
  """The first n sample problems with an inline rubric of CRITERIA criteria."""
  rows = [json.loads(line) for line in DATA.read_text().splitlines() if line]
  return [r for r in rows
          if len(r.get("rubric", {}).get("criteria", ())) == CRITERIA][:n]


def _rollouts(problems: list[dict], tag: str) -> list[dict]:
  """GENERATIONS completions per problem, as a policy might write them."""
  rows = []
  for p in problems:
    a = p["answer"]
    for completion in (
        f"<reasoning>Attempt {tag}. Work it out step by step, then check the "
        f"result against the question.</reasoning><answer>{a}</answer>",
        f"<reasoning>Attempt {tag}. A quick guess.</reasoning>"
        f"<answer>{a}1</answer>",
        f"Attempt {tag}. The answer is {a}.",
        f"<reasoning>Attempt {tag}. I am not sure how to do this."
        "</reasoning><answer>I don't know</answer>"):
      rows.append({"prompt": p["prompt"], "completion": completion,
                   "reference_answer": a, "rubric": p["rubric"]})
  return rows


def _naive(rows: list[dict], config: OpenAIConfig) -> list[float]:
  return asyncio.run(_naive_async(rows, config))


async def _naive_async(rows: list[dict], config: OpenAIConfig
                       ) -> list[float]:
  backend = openai_compat.OpenAIBackend(config, max_batch=1,
                                        min_score_mass=0.0)
  rewards = []
  try:
    for row in rows:
      rubric = Rubric.from_dict(row["rubric"])
      scores = []
      for c in rubric.criteria:
        (j,) = await backend.judge([prompts.explicit_prompt(
            row["prompt"], row["completion"], row["reference_answer"], c)])
        scores.append(j.score)
      rewards.append(math.nan if None in scores
                     else aggregation.explicit(rubric, scores))
  finally:
    await backend.close()
  return rewards


def _service(rows: list[dict], client: judge_client.JudgeClient
             ) -> list[float]:
  requests = [judge_client.request_from_row(row, str(i))
              for i, row in enumerate(rows)]
  results = client.score(requests)
  return [results[r.rollout_id].reward
          if results[r.rollout_id].status == judge_pb2.SCORED
          else math.nan for r in requests]


def _timed(fn, *args) -> tuple[float, list[float]]:
  start = time.perf_counter()
  rewards = fn(*args)
  return time.perf_counter() - start, rewards


def _bench(args, base_url: str, model: str, workdir: pathlib.Path) -> None:
  config = OpenAIConfig(base_url=base_url, model=model,
                        max_concurrency=args.max_concurrency)
  naive = functools.partial(_naive, config=config)
  judge = processes.start_judge(
      {"backend": {"kind": "openai", "max_batch": args.max_batch,
                   "openai": {"base_url": base_url, "model": model,
                              "max_concurrency": args.max_concurrency}}},
      workdir)
  try:
    with judge_client.JudgeClient(processes.judge_address(judge),
                                  timeout_s=600) as client:
      problems = _problems(args.rollouts // GENERATIONS)
      n_prompts = len(problems) * GENERATIONS * CRITERIA
      service = functools.partial(_service, client=client)

      warm = _rollouts(problems, "warm-up")
      naive_warm, service_warm = naive(warm), service(warm)
      worst = max(abs(a - b) for a, b in zip(naive_warm, service_warm))
      print(f"{len(warm)} rollouts x {CRITERIA} criteria = {n_prompts} judge "
            f"prompts; rewards naive vs service differ by at most "
            f"{worst:.2g}", flush=True)

      times = {"naive": [], "service": []}
      for run in range(args.runs):
        for name, fn in (("naive", naive), ("service", service)):
          seconds, rewards = _timed(fn, _rollouts(problems, f"{name}-{run}"))
          unscored = sum(math.isnan(r) for r in rewards)
          times[name].append(seconds)
          print(f"run {run + 1} {name:8s}{seconds:7.2f} s"
                f"{f'  ({unscored} unscorable)' if unscored else ''}",
                flush=True)
  finally:
    judge.terminate()
    judge.wait(60)

  print(f"\n{'':10s}{'median s':>10s}{'ms/prompt':>11s}")
  medians = {}
  for name, seconds in times.items():
    medians[name] = statistics.median(seconds)
    print(f"{name:10s}{medians[name]:10.2f}"
          f"{medians[name] / n_prompts * 1000:11.0f}")
  print(f"naive / service: {medians['naive'] / medians['service']:.2f}x "
        f"(service max_batch={args.max_batch}, "
        f"max_concurrency={args.max_concurrency})")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  vllm_server.add_endpoint_args(parser)
  parser.add_argument("--rollouts", type=int, default=16)
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--max-batch", type=int, default=16)
  parser.add_argument("--max-concurrency", type=int, default=16)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    workdir = pathlib.Path(tmp)
    with vllm_server.endpoint(args, prepare.prepare_gemma3_270m,
                              workdir / "vllm.log") as (url, model):
      _bench(args, url, model, workdir)


if __name__ == "__main__":
  main()
