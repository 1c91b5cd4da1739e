"""Which judging levers let a small judge tell right from wrong: every
judge prompt a lever needs, scored once by the jax judge (the shipped
Gemma-3-270M by default, binary criteria), then each lever's reward per
completion computed from those scores, and its separation on probe sets
(judge_server/probe_sets: correct, plausibly wrong and off-topic
completions per problem).

Prompt kinds (per completion unless said):
  implicit   the rubric as a whole (what the demo's judge asks today; the
             probe rows' inline rubrics have no worked examples, so it is
             zero-shot, as the server sends it)
  explicit   one per criterion, aggregated by weight (pitfalls subtract)
  check      the extraction criterion (prompts.answer_check_prompt)
  check_b, check_c   two rewordings of check's question
  cf_*       per problem: implicit and check with the response "N/A", the
             content-free prior that calibration divides out
Levers: each kind alone, blends of the rubric reward with the check
(answer_check w), the mean of the three check wordings (agreement), and
the check calibrated by its content-free prior (logit(p) - logit(p_cf)).

Prompts go to the backend in rounds of a few problems, every kind in each
round. A kind's seconds per prompt is this process's CPU time over its
prompts (on a machine shared with other work, wall time measures the
others), and a lever's seconds per rollout adds those of the prompts it
needs (a content-free prompt counts once per problem: per GRPO group, not
per rollout).

  .venv/bin/python bench/judge_levers.py --probes judge_server/probe_sets/dev.jsonl \
      --per-domain 6 --out /tmp/levers.json
The held-out set is for the final candidates only (--probes
judge_server/probe_sets/heldout.jsonl).
"""

import argparse
import asyncio
import json
import math
import os
import random
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from judge_server import aggregation, packs as packs_lib, prompts, validation
from judge_server import config as judge_config
from judge_server.config import BackendConfig, CriteriaConfig
from orchestrator.judge import validate as judge_validate

THREE = judge_validate.THREE
BINARY = prompts.BINARY
# Rewordings of the check's instruction (agreement across prompt variants).
_DECIDE = ("Decide whether the final answer matches the reference: numbers "
           "must be equal, words must mean the same.")
_VARIANTS = {
    "check_b": "Is the final answer the same as the reference answer? Equal "
               "numbers and words of the same meaning match.",
    "check_c": "Say yes when the final answer agrees with the reference "
               "answer and no when it differs.",
}
NO_RESPONSE = "N/A"


def _chosen(path: str, per_domain: int | None, seed: int) -> list:
  probes = judge_validate.load_probes(path, packs_lib.load_packs().keys())
  if per_domain is None:
    return probes
  by_domain = {}
  for p in probes:
    by_domain.setdefault(p.example.domain, []).append(p)
  return [p for d in sorted(by_domain)
          for p in judge_validate.choose(by_domain[d], per_domain, seed)]


def _check(ex, completion: str, kind: str = "check") -> str:
  text = prompts.answer_check_prompt(ex.answer, completion, BINARY)
  return text if kind == "check" else text.replace(_DECIDE, _VARIANTS[kind])


def _prompts(probe) -> dict[str, list[str]]:
  """Every prompt of one problem, by kind (per completion in THREE order;
  cf_ kinds one each)."""
  ex = probe.example
  out = {"implicit": [], "explicit": [], "check": [], "check_b": [],
         "check_c": []}
  for k in THREE:
    c = probe.three[k]
    out["implicit"].append(prompts.implicit_prompt(
        ex.prompt, c, ex.answer, ex.rubric, BINARY))
    out["explicit"] += [prompts.explicit_prompt(ex.prompt, c, ex.answer, cr,
                                                BINARY)
                        for cr in ex.rubric.criteria]
    for kind in ("check", "check_b", "check_c"):
      out[kind].append(_check(ex, c, kind))
  out["cf_implicit"] = [prompts.implicit_prompt(
      ex.prompt, NO_RESPONSE, ex.answer, ex.rubric, BINARY)]
  out["cf_check"] = [_check(ex, NO_RESPONSE)]
  return out


def _logit(p: float) -> float:
  p = min(max(p, 1e-6), 1 - 1e-6)
  return math.log(p / (1 - p))


def _calibrated(p: float, prior: float) -> float:
  return 1 / (1 + math.exp(-(_logit(p) - _logit(prior))))


def levers(probe, s: dict[str, list[float]]) -> dict[str, list[float]]:
  """Each lever's reward of the problem's three completions, from its
  prompts' scores s (as _prompts orders them)."""
  n = len(probe.example.rubric.criteria)
  missing = [math.nan] * len(THREE)  # a kind not asked: its levers go
  implicit, check = s["implicit"], s["check"]
  explicit = [aggregation.explicit(probe.example.rubric,
                                   s["explicit"][i * n:(i + 1) * n])
              for i in range(len(THREE))] if "explicit" in s else missing
  agree = ([(a + b + c) / 3 for a, b, c in zip(check, s["check_b"],
                                                s["check_c"])]
           if "check_c" in s else missing)
  calibrated = [_calibrated(p, s["cf_check"][0]) for p in check]
  implicit_cal = [_calibrated(p, s["cf_implicit"][0]) for p in implicit]

  def blend(rubric, w):
    return [(1 - w) * r + w * c for r, c in zip(rubric, check)]
  return {name: scores for name, scores in {
      "implicit (today)": implicit,
      "implicit, calibrated": implicit_cal,
      "explicit": explicit,
      "check alone": check,
      "check, 3 wordings": agree,
      "check, calibrated": calibrated,
      "implicit + check 0.25": blend(implicit, 0.25),
      "implicit + check 0.5": blend(implicit, 0.5),
      "implicit + check 0.75": blend(implicit, 0.75),
      "explicit + check 0.5": blend(explicit, 0.5),
      "implicit + 3-wording check 0.5": [
          0.5 * r + 0.5 * c for r, c in zip(implicit, agree)],
  }.items() if set(COST[name]) <= set(s)}


# The prompt kinds each lever asks: kind -> prompts per rollout.
COST = {
    "implicit (today)": {"implicit": 1},
    "implicit, calibrated": {"implicit": 1, "cf_implicit": 1 / 3},
    "explicit": {"explicit": 1},
    "check alone": {"check": 1},
    "check, 3 wordings": {"check": 1, "check_b": 1, "check_c": 1},
    "check, calibrated": {"check": 1, "cf_check": 1 / 3},
    "implicit + check 0.25": {"implicit": 1, "check": 1},
    "implicit + check 0.5": {"implicit": 1, "check": 1},
    "implicit + check 0.75": {"implicit": 1, "check": 1},
    "explicit + check 0.5": {"explicit": 1, "check": 1},
    "implicit + 3-wording check 0.5": {"implicit": 1, "check": 1,
                                       "check_b": 1, "check_c": 1},
}


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--probes", default=str(judge_validate.PROBE_SETS
                                          / "dev.jsonl"))
  ap.add_argument("--per-domain", type=int,
                  help="problems per domain, a seeded choice (default all)")
  ap.add_argument("--config", default="configs/judge-gemma3-270m.yaml",
                  help="the judge (its backend's model; binary criteria, "
                  "batches of 16)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--round", type=int, default=4,
                  help="problems per round of prompts")
  ap.add_argument("--skip", nargs="*", default=[],
                  choices=["explicit", "check_b", "check_c", "implicit",
                           "cf_implicit"],
                  help="prompt kinds not to ask (their levers are left "
                  "out): explicit costs one prompt per criterion")
  ap.add_argument("--reuse", help="a JSON this bench wrote for the same "
                  "problems: the kinds it holds are taken from it, not "
                  "asked again")
  ap.add_argument("--out", help="write the per-completion scores and the "
                  "table here (JSON)")
  args = ap.parse_args()
  chosen = _chosen(args.probes, args.per_domain, args.seed)

  import jax
  import numpy as np
  from judge_server.backends import jax_local
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                           ("fsdp", "tp"))
  t0 = time.monotonic()
  backend = jax_local.build(BackendConfig(
      model=judge_config.load(args.config).backend.model, max_batch=16,
      criteria=CriteriaConfig(format=BINARY)), mesh)
  print(f"model loaded ({time.monotonic() - t0:.0f} s); {len(chosen)} "
        "problems", file=sys.stderr, flush=True)
  reused = {}
  if args.reuse:
    old = json.load(open(args.reuse))
    by_id = dict(zip(old["problems"], old["scores"]))
    reused = {p.example.id: by_id[p.example.id] for p in chosen}
  have = set(next(iter(reused.values()))) if reused else set()
  asked = [{k: v for k, v in _prompts(p).items()
            if k not in args.skip and k not in have} for p in chosen]
  kinds = list(asked[0])
  scores = [{k: [] for k in kinds} for _ in chosen]
  seconds = {k: 0.0 for k in kinds}
  count = {k: 0 for k in kinds}
  # The first round untimed, twice over: the compiles of its shapes.
  for k in kinds:
    asyncio.run(backend.judge([p for a in asked[:args.round] for p in a[k]]))
  start = time.monotonic()
  for r in range(0, len(chosen), args.round):
    for k in random.Random(r).sample(kinds, len(kinds)):
      batch = [(i, p) for i in range(r, min(r + args.round, len(chosen)))
               for p in asked[i][k]]
      t = time.process_time()
      got = asyncio.run(backend.judge([p for _, p in batch]))
      seconds[k] += time.process_time() - t
      count[k] += len(batch)
      for (i, _), j in zip(batch, got):
        scores[i][k].append(j.score)
    print(f"{min(r + args.round, len(chosen))}/{len(chosen)} problems "
          f"({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)
  per_prompt = {k: seconds[k] / count[k] for k in kinds}
  if reused:
    per_prompt.update({k: v for k, v in old["per_prompt_s"].items()
                       if k in have})
    for p, s in zip(chosen, scores):
      s.update({k: v for k, v in reused[p.example.id].items() if k in have})
  rewards = [levers(p, s) for p, s in zip(chosen, scores)]
  domains = [p.example.domain for p in chosen]
  rows = []
  for name in rewards[0]:
    by_kind = {k: [r[name][i] for r in rewards]
               for i, k in enumerate(THREE)}
    report = validation.by_domain(domains, by_kind)
    cost = sum(per_prompt[k] * n for k, n in COST[name].items())
    rows.append({"lever": name, "s_per_rollout": cost, **report})
  base = rows[0]["s_per_rollout"]
  print(f"{'lever':<32}{'correct>wrong':>22}{'correct>off_topic':>22}"
        f"{'AUC':>22}{'s/rollout':>11}{'x today':>8}")
  for row in rows:
    o = row["overall"]
    wrong, off = o["pairs"]
    cell = lambda p, v: (f"{validation.fmt(p[v])} [{validation.fmt(p['low'], '.2f')}-"  # noqa: E731
                         f"{validation.fmt(p['high'], '.2f')}]")
    print(f"{row['lever']:<32}{cell(wrong, 'accuracy'):>22}"
          f"{cell(off, 'accuracy'):>22}{cell(o['auc'], 'auc'):>22}"
          f"{row['s_per_rollout']:>11.2f}{row['s_per_rollout'] / base:>8.2f}")
  print("per prompt (s): " + ", ".join(f"{k} {v:.2f}"
                                       for k, v in per_prompt.items()))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(validation.json_ready({
          "probes": args.probes, "problems": [p.example.id for p in chosen],
          "per_prompt_s": per_prompt, "scores": scores, "levers": rows}),
          f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
