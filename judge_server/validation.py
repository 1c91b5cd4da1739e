"""How well a judge orders probes (judge_server.probes): the statistics and
the report `grar judge validate` and the trainer's start-up check print.

Pure functions over plain floats; a reward of None is an unscorable probe,
left out of every statistic and counted. Rewards are in [0, 1].
"""

import math
from collections.abc import Mapping, Sequence

import numpy as np

from judge_server import probes as probes_lib

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
NAN = float("nan")


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
  """The Wilson score interval (low, high) of a proportion successes / n
  (successes may be fractional: ties counted half); (nan, nan) when n is 0.

  Wilson rather than the normal approximation p +- z sqrt(p(1-p)/n): that one
  leaves [0, 1] near the ends and collapses to the single point p at 0/n and
  n/n (as if 8 right out of 8 proved a model never errs), while Wilson stays
  inside [0, 1] and still gives 0/n and n/n an interval of width ~z^2/n.
  """
  if n <= 0:
    return NAN, NAN
  p = successes / n
  z2 = z * z
  denominator = 1 + z2 / n
  centre = (p + z2 / (2 * n)) / denominator
  half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
  # Clamped against rounding: low <= p <= high and both inside [0, 1] hold
  # in exact arithmetic, and error bars drawn from them must not come out
  # negative.
  return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def _proportion(successes: float, n: int) -> dict[str, float]:
  low, high = wilson(successes, n)
  return {"accuracy": successes / n if n else NAN, "low": low, "high": high,
          "n": n}


def pairwise(better: Sequence[float | None], worse: Sequence[float | None],
             at_least: bool = False) -> dict[str, float]:
  """How often better[i] beats worse[i], over the i where both are scored.

  Strict (at_least False): a win counts 1, a tie 1/2. at_least: better[i] >=
  worse[i] - PADDING_TOLERANCE counts 1. Returns accuracy, its Wilson 95 %
  interval (low, high) and n, the pairs counted; accuracy nan when n is 0.
  """
  pairs = [(b, w) for b, w in zip(better, worse, strict=True)
           if b is not None and w is not None]
  if at_least:
    wins = sum(b >= w - probes_lib.PADDING_TOLERANCE for b, w in pairs)
  else:
    wins = sum(1.0 if b > w else 0.5 if b == w else 0.0 for b, w in pairs)
  return _proportion(float(wins), len(pairs))


def auc(positives: Sequence[float | None],
        negatives: Sequence[float | None]) -> float:
  """The area under the ROC curve of scores telling positives from
  negatives (Mann–Whitney U / (P N), ties counted half); nan when either
  side has no scored value."""
  pos = np.array([p for p in positives if p is not None], dtype=np.float64)
  neg = np.array([n for n in negatives if n is not None], dtype=np.float64)
  if not pos.size or not neg.size:
    return NAN
  # [P, N] comparisons: the probe sets are a few hundred at most.
  wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (
      pos[:, None] == neg[None, :]).sum()
  return float(wins / (pos.size * neg.size))


def auc_interval(positives: Sequence[float | None],
                 negatives: Sequence[float | None], z: float = Z95
                 ) -> dict[str, float]:
  """auc() with DeLong's 95 % interval: auc, low, high (clipped to [0, 1];
  nan with fewer than two scored values on a side), n_pos, n_neg.

  DeLong rather than a bootstrap: closed form, so the same scores always
  give the same interval. Each positive's share of negatives it beats (and
  each negative's of positives beating it) is a placement value; the AUC's
  variance is var(positive placements) / P + var(negative placements) / N.
  """
  pos = np.array([p for p in positives if p is not None], dtype=np.float64)
  neg = np.array([n for n in negatives if n is not None], dtype=np.float64)
  out = {"auc": auc(pos, neg), "low": NAN, "high": NAN, "n_pos": pos.size,
         "n_neg": neg.size}
  if pos.size < 2 or neg.size < 2:
    return out
  beats = ((pos[:, None] > neg[None, :])
           + 0.5 * (pos[:, None] == neg[None, :]))
  variance = (np.var(beats.mean(axis=1), ddof=1) / pos.size
              + np.var(beats.mean(axis=0), ddof=1) / neg.size)
  half = z * math.sqrt(variance)
  out["low"] = max(0.0, out["auc"] - half)
  out["high"] = min(1.0, out["auc"] + half)
  return out


# The orderings a judge of training rewards must get right on every problem
# of a probe set (judge_server/probe_sets): the one a GRPO group relies on
# first, then the one any reader sees.
TRIPLE_PAIRS = (probes_lib.Pair("correct", "wrong"),
                probes_lib.Pair("correct", "off_topic"))


def separation(correct: Sequence[float | None], wrong: Sequence[float | None],
               off_topic: Sequence[float | None]) -> dict:
  """For problems i with three completions: correct > wrong and correct >
  off_topic (pairwise: accuracy, Wilson low/high, n) and the AUC of correct
  against both others (auc_interval)."""
  return {"pairs": [{"name": p.name, **pairwise(
              correct, {"wrong": wrong, "off_topic": off_topic}[p.worse])}
                    for p in TRIPLE_PAIRS],
          "auc": auc_interval(correct, [*wrong, *off_topic])}


_THREE = ("correct", "wrong", "off_topic")


def triple_report(domains: Sequence[str],
                  rewards: Mapping[str, Sequence[float | None]],
                  latencies_ms: Sequence[float]) -> dict:
  """The report on problems with a correct, a wrong and an off-topic
  completion each: rewards[kind][i] of problem i, in domain domains[i]
  (None: unscorable). Returns overall and per domain (sorted) separation(),
  with rows, probes, unscorable, unscorable_rate and latency_ms as in
  probe_report."""
  every = [r for k in _THREE for r in rewards[k]]
  unscorable = sum(r is None for r in every)
  return {
      "rows": len(domains), "probes": len(every), "unscorable": unscorable,
      "unscorable_rate": unscorable / len(every) if every else NAN,
      **by_domain(domains, rewards), "latency_ms": _latency(latencies_ms),
  }


def by_domain(domains: Sequence[str],
              rewards: Mapping[str, Sequence[float | None]]) -> dict:
  """separation() over every row ("overall") and per domain ("domains",
  sorted), each with its number of rows."""
  def part(rows: Sequence[int]) -> dict:
    return {"rows": len(rows), **separation(
        *([rewards[k][i] for i in rows] for k in _THREE))}
  return {"overall": part(range(len(domains))),
          "domains": {d: part([i for i, e in enumerate(domains) if e == d])
                      for d in sorted(set(domains))}}


def _mean(values: Sequence[float]) -> float:
  return float(np.mean(values)) if len(values) else NAN


def _latency(latencies_ms: Sequence[float]) -> dict[str, float]:
  if not len(latencies_ms):
    return {"p50": NAN, "p95": NAN}
  return {"p50": float(np.percentile(latencies_ms, 50)),
          "p95": float(np.percentile(latencies_ms, 95))}


def probe_report(rewards: Mapping[str, Sequence[float | None]],
                 latencies_ms: Sequence[float],
                 domains: Sequence[str] | None = None) -> dict:
  """The report on built probes.

  rewards: per kind of probes.KINDS, [rows] rewards, row i of every kind
    built from the same reference (None: unscorable).
  latencies_ms: the server's latency of each scored probe (one rollout).
  domains: row i's domain (default: all "general"), for by_domain().
  Returns a JSON-ready dict (nan where undefined): by_domain()'s overall
  and domains (correct against wrong and off_topic), rows, probes,
  unscorable,
  unscorable_rate, pairs (per probes.PAIRS: name, accuracy, low, high, n),
  auc (correct against every kind of probes.BAD_KINDS), spread (std over
  all scored rewards; mean per kind), injection_above_correct (rate, n) and
  latency_ms (p50, p95).
  """
  rows = len(rewards["correct"])
  every = [r for kind in probes_lib.KINDS for r in rewards[kind]]
  scored = [r for r in every if r is not None]
  injected = [(c, i) for c, i in zip(rewards["correct"], rewards["injection"])
              if c is not None and i is not None]
  return {
      **by_domain(domains or ["general"] * rows, rewards),
      "rows": rows, "probes": len(every),
      "unscorable": len(every) - len(scored),
      "unscorable_rate": (len(every) - len(scored)) / len(every) if every
                         else NAN,
      "pairs": [{"name": p.name, **pairwise(rewards[p.better],
                                            rewards[p.worse], p.at_least)}
                for p in probes_lib.PAIRS],
      "auc": auc(rewards["correct"],
                 [r for k in probes_lib.BAD_KINDS for r in rewards[k]]),
      "spread": {"std": float(np.std(scored)) if scored else NAN,
                 "mean": {k: _mean([r for r in rewards[k] if r is not None])
                          for k in probes_lib.KINDS}},
      "injection_above_correct": {
          "rate": _mean([float(i > c) for c, i in injected]),
          "n": len(injected)},
      "latency_ms": _latency(latencies_ms),
  }


def user_report(rewards: Sequence[float | None], labels: Sequence[int],
                better: Sequence[float | None], worse: Sequence[float | None],
                latencies_ms: Sequence[float]) -> dict:
  """The report on a user's probes: labelled completions (rewards[i] with
  labels[i], 1 good, 0 bad) and better/worse pairs (better[j] against
  worse[j]). Labelled: auc (good against bad) and accuracy_at_half (reward
  >= 0.5 predicting label 1, Wilson interval, n). Pairs: one entry "better
  > worse" (strict, ties half). Unscorable counts and latency as in
  probe_report; a part without rows is left out."""
  every = [*rewards, *better, *worse]
  unscorable = sum(r is None for r in every)
  report = {"probes": len(every), "unscorable": unscorable,
            "unscorable_rate": unscorable / len(every) if every else NAN,
            "latency_ms": _latency(latencies_ms)}
  if rewards:
    right = [float((r >= 0.5) == (y == 1))
             for r, y in zip(rewards, labels, strict=True) if r is not None]
    report["auc"] = auc([r for r, y in zip(rewards, labels) if y == 1],
                        [r for r, y in zip(rewards, labels) if y == 0])
    report["accuracy_at_half"] = _proportion(sum(right), len(right))
  if better:
    report["pairs"] = [{"name": "better > worse", **pairwise(better, worse)}]
  return report


def fmt(value: float | None, spec: str = ".3f") -> str:
  """A number as the table prints it; "-" for nan or None."""
  return "-" if value is None or math.isnan(value) else format(value, spec)


def _pair_lines(pairs: Sequence[dict]) -> list[str]:
  lines = [f"{'pair':<22}{'accuracy':>9}  {'95% interval':<16}{'n':>4}"]
  for p in pairs:
    lines.append(f"{p['name']:<22}{fmt(p['accuracy']):>9}  "
                 f"[{fmt(p['low'])}, {fmt(p['high'])}]  {p['n']:>4}")
  return lines


def _interval(p: Mapping, value: str) -> str:
  return f"{fmt(p[value])} [{fmt(p['low'])}, {fmt(p['high'])}]"


def separation_lines(report: Mapping) -> list[str]:
  """A triple_report's overall and per-domain figures, one line each."""
  head = (f"{'domain':<15}{'n':>4}  {'correct > wrong':<22}"
          f"{'correct > off_topic':<22}AUC, correct vs rest")
  lines = [head]
  for name, part in [*report["domains"].items(), ("overall",
                                                   report["overall"])]:
    wrong, off = part["pairs"]
    lines.append(f"{name:<15}{part['rows']:>4}  "
                 f"{_interval(wrong, 'accuracy'):<22}"
                 f"{_interval(off, 'accuracy'):<22}"
                 f"{_interval(part['auc'], 'auc')}")
  lines.append("[95% intervals: Wilson for the pairs (a tie counts half), "
               "DeLong for the AUC]")
  return lines


def table(report: Mapping) -> str:
  """The report as the lines `grar judge validate` prints."""
  lines = []
  if "domains" in report:
    lines += separation_lines(report)
  if report.get("pairs"):
    lines += _pair_lines(report["pairs"])
  if "accuracy_at_half" in report:
    a = report["accuracy_at_half"]
    lines.append(f"{'label at reward 0.5':<22}{fmt(a['accuracy']):>9}  "
                 f"[{fmt(a['low'])}, {fmt(a['high'])}]  {a['n']:>4}")
  if "auc" in report:
    what = ("correct vs bad probes" if "spread" in report
            else "good vs bad labels")
    lines.append(f"AUC ({what}): {fmt(report['auc'])}")
  if "injection_above_correct" in report:
    i = report["injection_above_correct"]
    lines.append(f"injection scored above correct: {fmt(i['rate'])} "
                 f"(of {i['n']} rows)")
  if "spread" in report:
    s = report["spread"]
    means = ", ".join(f"{k} {fmt(v)}" for k, v in s["mean"].items())
    lines.append(f"score spread: std {fmt(s['std'])}; mean {means}")
  lines.append(f"unscorable: {fmt(report['unscorable_rate'])} "
               f"({report['unscorable']} of {report['probes']} probes)")
  lat = report["latency_ms"]
  lines.append(f"latency per rollout: p50 {fmt(lat['p50'], '.0f')} ms, "
               f"p95 {fmt(lat['p95'], '.0f')} ms")
  if report.get("pairs"):
    lines.append("'>': a tie counts half" + (
        f"; '>=': within {probes_lib.PADDING_TOLERANCE} counts as right"
        if any(">=" in p["name"] for p in report["pairs"]) else ""))
  return "\n".join(lines)


def json_ready(value):
  """`value` with every nan float as None (JSON has no NaN)."""
  if isinstance(value, float) and math.isnan(value):
    return None
  if isinstance(value, Mapping):
    return {k: json_ready(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_ready(v) for v in value]
  return value
