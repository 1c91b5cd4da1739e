"""One judge pass per rollout: the jax judge (the shipped Gemma-3-270M on
one CPU device) scoring every explicit criterion of a rollout in one call,
with the prompts that share the rollout's prefix (intro, question,
reference, response) packed into one row (zero-shot prompts: a few-shot
prompt puts the criterion and its graded examples before the response, so
a rollout's prompts share only the intro), against each criterion's prompt
as a row of its own (`pack_shared_prefixes: false`, how it scored before).

The rollouts are the sample problems of data/reasoning-sample.jsonl, each
with a response of --response-tokens tokens (worked reasoning from
data/sft-sample.jsonl, then the reference answer), judged against
--criteria criteria of the shipped rubric packs. An untimed first round
compiles every shape both ways and checks that the scores agree. Then
--runs timed rounds, interleaved, over the same rollouts; per rollout:
tokens in the prompts, tokens encoded (the packed rows), tokens the device
ran (the padded batches), and wall time, with the medians' ratios.

  .venv/bin/python bench/judge_prefix.py [--criteria 4 12] [--rollouts 8]
"""

import argparse
import asyncio
import dataclasses
import functools
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from judge_server import packs as packs_lib  # noqa: E402
from judge_server import prompts  # noqa: E402
from judge_server.backends import jax_local  # noqa: E402
from judge_server.config import BackendConfig  # noqa: E402
from orchestrator.data import dataset  # noqa: E402
from policy_worker import prepare  # noqa: E402
from grar_config.model import ModelSpec  # noqa: E402

DATA = "data/reasoning-sample.jsonl"
REASONING = "data/sft-sample.jsonl"


@functools.cache
def _reasoning() -> list[str]:
  return [row["reasoning"] for _, row in dataset.read_rows(REASONING)]


def _response(tokenizer, n_tokens: int, answer: str, start: int) -> str:
  """Worked reasoning of the SFT sample, from row `start` on, cut to about
  n_tokens tokens, then the answer."""
  rows = _reasoning()
  text, i = "", start
  while len(tokenizer.encode(text)) < n_tokens:
    text += rows[i % len(rows)] + " "
    i += 1
  cut = tokenizer.decode(tokenizer.encode(text)[:n_tokens])
  return f"<reasoning>{cut}</reasoning><answer>{answer}</answer>"


def _rollouts(tokenizer, n: int, n_criteria: int, response_tokens: int,
              answer: str) -> list[list[str]]:
  """n rollouts' zero-shot explicit judge prompts in format `answer`,
  n_criteria each: the problem's own rubric first, then the other packs'
  criteria in a fixed order."""
  packs = packs_lib.load_packs()
  every = [c for name in sorted(packs) for c in packs[name].criteria]
  examples = dataset.load_jsonl(DATA, packs.keys())
  out = []
  for i in range(n):
    ex = examples[i % len(examples)]
    own = list((ex.rubric or packs[ex.rubric_id]).criteria)
    criteria = (own + [c for c in every if c not in own])[:n_criteria]
    completion = _response(tokenizer, response_tokens, ex.answer, i)
    out.append([prompts.explicit_prompt(ex.prompt, completion, ex.answer, c,
                                           answer)
                for c in criteria])
  return out


def _round(backend, rollouts) -> tuple[float, list[float],
                                       jax_local.TokenCounts]:
  """One call per rollout, one after another: seconds, scores, tokens."""
  before = dataclasses.replace(backend.tokens)
  scores, started = [], time.perf_counter()
  for r in rollouts:
    scores += [j.score for j in asyncio.run(backend.judge(r))]
  seconds = time.perf_counter() - started
  after = backend.tokens
  return seconds, scores, jax_local.TokenCounts(
      *(getattr(after, f.name) - getattr(before, f.name)
        for f in dataclasses.fields(after)))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--criteria", type=int, nargs="+", default=[4, 12])
  p.add_argument("--rollouts", type=int, default=8)
  p.add_argument("--response-tokens", type=int, default=160)
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--size", default="", help="a Gemma-3 size (1b, 4b, 12b) "
                 "with random weights, for an accelerator host without "
                 "checkpoints (default: the shipped 270M)")
  p.add_argument("--dtype", default="float32")
  args = p.parse_args(argv)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                           ("fsdp", "tp"))
  # The shipped 270M: the model, or for --size the tokenizer.
  shipped = str(prepare.prepare_gemma3_270m())
  spec = (ModelSpec(family="gemma3-random", size=args.size, dtype=args.dtype)
          if args.size else ModelSpec(family="gemma3", dtype=args.dtype,
                                      path=shipped))
  packed = jax_local.build(BackendConfig(model=spec, max_batch=16), mesh)
  # The same weights, each prompt a row of its own.
  single = jax_local.JaxBackend(
      packed._model, packed._tok, mesh, spec,
      dataclasses.replace(packed._cfg, pack_shared_prefixes=False))
  print(f"jax judge: {spec.name} on 1 {mesh.devices.flat[0].platform} "
        f"device, {args.dtype}; "
        f"{args.rollouts} rollouts of {args.response_tokens}-token "
        f"responses; one call per rollout", flush=True)
  pairs = []
  for n in args.criteria:
    rollouts = _rollouts(packed._tok, args.rollouts, n, args.response_tokens,
                         packed.answer)
    worst = max(abs(a - b) for a, b in zip(_round(packed, rollouts)[1],
                                           _round(single, rollouts)[1]))
    ways = {"one pass": packed, "per criterion": single}
    times, counts = {name: [] for name in ways}, {}
    for _ in range(args.runs):  # interleaved: both see the same machine
      for name, backend in ways.items():
        # Tokens are the same every round.
        seconds, _, counts[name] = _round(backend, rollouts)
        times[name].append(seconds)
    per = {name: statistics.median(t) / args.rollouts
           for name, t in times.items()}
    print(f"\n{n} criteria: largest score difference {worst:.1e}")
    for name, c in counts.items():
      print(f"  {name:>13}: per rollout {c.prompts / args.rollouts:6.0f}"
            f" prompt tokens, {c.rows / args.rollouts:6.0f} encoded, "
            f"{c.padded / args.rollouts:6.0f} run (padded), "
            f"{per[name] * 1000:6.0f} ms (median of {args.runs})")
    one, each = counts["one pass"], counts["per criterion"]
    pairs += [(f"tokens_ratio_{n}", one.rows / each.rows),
              (f"padded_ratio_{n}", one.padded / each.padded),
              (f"time_ratio_{n}", per["one pass"] / per["per criterion"]),
              (f"max_score_diff_{n}", worst)]
  print(" ".join(f"{k}={v:.3g}" for k, v in pairs))
  return 0


if __name__ == "__main__":
  sys.exit(main())
