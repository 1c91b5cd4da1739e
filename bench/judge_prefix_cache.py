"""The openai judge backend and vLLM's prefix cache: how much of a GRPO
step's explicit judge prompts vLLM answers from its cache, with each call's
prompts in the order the batcher collects them (a rollout's criteria
together, rollout after rollout: how the backend sends them), against the
most any order could get, and against each call sorted so that the prompts
sharing the longest beginnings go out one after another.

vLLM's CPU build serves the shipped Gemma-3-270M here, as the tests start
it (tests/vllm_server.py: a 1 GiB KV cache), in dev mode for its
/reset_prefix_cache. A step is --questions problems of
data/reasoning-sample.jsonl that name a shipped rubric pack x
--generations responses (worked reasoning of data/sft-sample.jsonl, then
the answer), each judged on its pack's criteria in the server's default
format (binary), few-shot (the default: the criterion and its graded
examples come before the response, so one criterion's prompts share them
across rollouts) and zero-shot (the response comes first: a rollout's
criteria share it). The prompts reach
the backend as the server's batcher hands them over: calls of --max-batch,
--calls-in-flight at once, --concurrency requests in flight.

Each round empties the prefix cache, then judges the step; the cache's own
counters (/metrics: vllm:prefix_cache_queries and _hits, in prompt tokens)
give the hit rate. "ideal" is the share of prompt tokens that repeat an
earlier prompt's beginning: what an unbounded cache could give in the best
order, token by token and in vLLM's blocks (128 tokens on CPU). Median of
--runs rounds, both orders interleaved; the last line is name=value pairs.

  .venv/bin/python bench/judge_prefix_cache.py [--runs 3] [--questions 4]
"""

import argparse
import asyncio
import pathlib
import re
import statistics
import sys
import tempfile
import time

import httpx

from judge_server import packs as packs_lib
from judge_server import prompts
from judge_server.backends import openai_compat
from judge_server.config import OpenAIConfig
from orchestrator.data import dataset
from policy_worker import prepare

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import vllm_server  # noqa: E402

DATA = ROOT / "data" / "reasoning-sample.jsonl"
REASONING = ROOT / "data" / "sft-sample.jsonl"
_COUNTER = re.compile(r"^vllm:prefix_cache_(queries|hits)_total(?:\{[^}]*\})?"
                      r" ([0-9.e+]+)$", re.M)


def _step(questions: int, generations: int, few_shot: bool) -> list[str]:
  """A step's explicit judge prompts in the batcher's order: rollout after
  rollout, each rollout's criteria together."""
  packs = packs_lib.load_packs()
  # The shipped packs' rubrics: their criteria have graded examples (the
  # sample's inline rubrics have none, so few-shot would be zero-shot).
  examples = [ex for ex in dataset.load_jsonl(str(DATA), packs.keys())
              if not ex.rubric][:questions]
  reasoning = [row["reasoning"]
               for _, row in dataset.read_rows(str(REASONING))]
  out = []
  for q, ex in enumerate(examples):
    rubric = ex.rubric or packs[ex.rubric_id]
    for g in range(generations):
      start = (q * generations + g) * 6
      work = " ".join(reasoning[(start + k) % len(reasoning)]
                      for k in range(6))
      completion = f"<reasoning>{work}</reasoning><answer>{ex.answer}</answer>"
      out += [prompts.explicit_prompt(
          ex.prompt, completion, ex.answer, c, prompts.BINARY,
          prompts.explicit_examples(rubric, i) if few_shot else ())
              for i, c in enumerate(rubric.criteria)]
  return out


def _ideal(token_lists: list[list[int]], block: int = 1) -> float:
  """The share of prompt tokens an unbounded cache of `block`-token blocks
  could answer in the best order: sorted, each sequence shares with the
  one before it its common prefix, in whole blocks, less its last token
  (which is always computed)."""
  ordered = sorted(token_lists)
  shared = 0
  for a, b in zip(ordered, ordered[1:]):
    n = 0
    while n < min(len(a), len(b) - 1) and a[n] == b[n]:
      n += 1
    shared += n // block * block
  return shared / sum(map(len, ordered))


def _block_size(root: str) -> int:
  """vLLM's KV cache block size, from its cache_config_info gauge."""
  found = re.search(r'^vllm:cache_config_info\{[^}]*block_size="(\d+)"',
                    httpx.get(f"{root}/metrics", timeout=30).text, re.M)
  if not found:
    sys.exit(f"{root}/metrics does not give vLLM's block size")
  return int(found.group(1))


def _counters(root: str) -> dict[str, float]:
  text = httpx.get(f"{root}/metrics", timeout=30).text
  found = {}
  for name, value in _COUNTER.findall(text):
    found[name] = found.get(name, 0.0) + float(value)
  if set(found) != {"queries", "hits"}:
    sys.exit(f"{root}/metrics has no vllm:prefix_cache_queries/_hits "
             "counters: is prefix caching on?")
  return found


async def _judge_calls(backend, calls: list[list[str]], in_flight: int,
                       sort: bool) -> list:
  """The calls, `in_flight` at a time as the batcher hands them over; each
  call's prompts as collected, or sent sorted (the judgements come back
  in the call's order either way)."""
  slots = asyncio.Semaphore(in_flight)

  async def one(call):
    order = sorted(range(len(call)), key=call.__getitem__) if sort else (
        range(len(call)))
    async with slots:
      judged = await backend.judge([call[i] for i in order])
    back = dict(zip(order, judged))
    return [back[i] for i in range(len(call))]
  return [j for judged in await asyncio.gather(*map(one, calls))
          for j in judged]


def _round(args, base_url: str, model: str, step: list[str],
           sort: bool) -> tuple[float, float, int]:
  """(hit rate, seconds, unscorable) of judging `step` on an emptied
  prefix cache."""
  root = base_url.removesuffix("/v1")
  reset = httpx.post(f"{root}/reset_prefix_cache", timeout=60)
  reset.raise_for_status()
  if not reset.json().get("success"):
    sys.exit(f"{root}/reset_prefix_cache did not empty the cache: "
             f"{reset.text}")
  before = _counters(root)
  calls = [step[i:i + args.max_batch]
           for i in range(0, len(step), args.max_batch)]

  async def run():
    backend = openai_compat.OpenAIBackend(
        OpenAIConfig(base_url=base_url, model=model,
                     max_concurrency=args.concurrency),
        max_batch=args.max_batch, min_score_mass=0.0, answer=prompts.BINARY)
    try:
      return await _judge_calls(backend, calls, args.calls_in_flight, sort)
    finally:
      await backend.close()

  started = time.perf_counter()
  judged = asyncio.run(run())
  seconds = time.perf_counter() - started
  after = _counters(root)
  hits = after["hits"] - before["hits"]
  queries = after["queries"] - before["queries"]
  return hits / queries, seconds, sum(j.score is None for j in judged)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--questions", type=int, default=4)
  p.add_argument("--generations", type=int, default=4)
  p.add_argument("--max-batch", type=int, default=8,
                 help="prompts per backend call (the server's max_batch)")
  p.add_argument("--calls-in-flight", type=int, default=2)
  p.add_argument("--concurrency", type=int, default=8,
                 help="requests in flight (openai.max_concurrency)")
  args = p.parse_args(argv)
  log = pathlib.Path(tempfile.gettempdir()) / "grar-bench-prefix-vllm.log"
  model_dir = prepare.prepare_gemma3_270m()
  # Dev mode: /reset_prefix_cache.
  with vllm_server.serving(model_dir, log,
                           {"VLLM_SERVER_DEV_MODE": "1"}) as server:
    base_url = server.base_url
    root = base_url.removesuffix("/v1")
    print(f"vLLM serving {model_dir} at {base_url} (log {log})", flush=True)
    block = _block_size(root)
    summary = {}
    for shots in ("few_shot", "zero_shot"):
      step = _step(args.questions, args.generations, shots == "few_shot")
      tokens = [httpx.post(f"{root}/tokenize", timeout=60, json={
          "model": vllm_server.SERVED_NAME, "prompt": text}).json()["tokens"]
                for text in step]
      ideal, ideal_blocks = _ideal(tokens), _ideal(tokens, block)
      print(f"\n{shots}: {len(step)} prompts, "
            f"{sum(map(len, tokens)) / len(tokens):.0f} tokens each; "
            f"ideal hit rate {ideal:.3f}, in {block}-token blocks "
            f"{ideal_blocks:.3f}", flush=True)
      _round(args, base_url, vllm_server.SERVED_NAME, step, True)  # warm-up
      rates, times = {False: [], True: []}, {False: [], True: []}
      for run in range(args.runs):
        for sort in (False, True):
          rate, seconds, unscorable = _round(
              args, base_url, vllm_server.SERVED_NAME, step, sort)
          rates[sort].append(rate)
          times[sort].append(seconds)
          print(f"  round {run + 1} {'sorted   ' if sort else 'collected'}"
                f" hit rate {rate:.3f}  {seconds:6.2f} s"
                f"  unscorable {unscorable}", flush=True)
      hit = {s: statistics.median(rates[s]) for s in rates}
      sec = {s: statistics.median(times[s]) for s in times}
      print(f"  median: collected {hit[False]:.3f} in {sec[False]:.2f} s, "
            f"sorted {hit[True]:.3f} in {sec[True]:.2f} s "
            f"(time sorted / collected {sec[True] / sec[False]:.3f})")
      summary.update({f"{shots}_ideal": ideal,
                      f"{shots}_ideal_blocks": ideal_blocks,
                      f"{shots}_hit_collected": hit[False],
                      f"{shots}_hit_sorted": hit[True],
                      f"{shots}_time_sorted_over_collected":
                          sec[True] / sec[False]})
  print(" ".join(f"{k}={v:.3f}" for k, v in summary.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
