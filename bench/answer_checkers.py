"""math-verify against the hand-written numeric rule, judged by the tasks'
own verifiers: which is the better answer check for rows without a task?

For generated rows of numeric and string task families (orchestrator/tasks
.py), each row's reference answer is written several ways: the reference
itself, formatting variants ("3.0", "+3", "1,000", "3.", "\\boxed{3}",
"3 units", "x = 3", LaTeX or plain fractions, upper case, list spacing) and
wrong answers (a digit changed, off by one, negated, times ten, a fraction
not in lowest terms, a letter changed, a list reordered). The task's
verifier decides which are right (its full mark, as the answer reward
counts); each checker is scored on agreeing with it:

  hand        rewards.exact_answer_reward (numeric tolerance, else
              normalised strings)
  mv          math_verify.verify(parse(reference), parse(answer))
  mv+strings  math-verify, and the hand rule's string comparison when the
              reference does not parse as math

A formatting variant the verifier rejects ("3." where it wants "3") says
nothing about a lenient checker and is left out of the agreement; how often
each checker accepts those is shown in brackets. Prints per family the share
of right answers each checker accepts and of wrong ones it rejects, the
disagreements by kind, the agreement per group of families and the time per
check, then one line of name=value pairs.

  .venv/bin/python bench/answer_checkers.py [--rows 100] [--seed 0]
"""

import argparse
import collections
import re
import sys
import time

from math_verify import parse, verify

from orchestrator import rewards
from orchestrator.data import tasks

NUMERIC = ("chain_sum", "decimal_chain_sum", "basic_arithmetic", "products",
           "gcd", "lcm", "leg_counting", "count_bits", "decimal_arithmetic",
           "fraction_simplification")
STRINGS = ("spell_backward", "word_sorting", "caesar_cipher",
           "base_conversion")
_FRACTION = re.compile(r"^\$?\\?d?(?:frac)?\{?(-?\d+)\}?(?:/|\}\{)(\d+)\}?\$?$")


def _number_variants(r: str) -> list[tuple[str, str, str]]:
  """(kind, right-or-wrong intent, text) for a numeric reference."""
  out = [("full stop", "format", r + "."),
         ("boxed", "format", rf"\boxed{{{r}}}"),
         ("unit", "format", r + " units"), ("equation", "format", "x = " + r)]
  if not r.startswith("-"):
    out.append(("plus sign", "format", "+" + r))
  if re.fullmatch(r"-?\d+", r):
    n = int(r)
    out += [("point zero", "format", r + ".0"),
            ("off by one", "wrong", str(n + 1)),
            ("times ten", "wrong", str(n * 10))]
    if abs(n) >= 1000:
      out.append(("thousands commas", "format", f"{n:,}"))
    if n:
      out.append(("negated", "wrong", str(-n)))
  elif re.fullmatch(r"-?\d+\.\d+", r):
    out += [("trailing zero", "format", r + "0"),
            ("negated", "wrong", r[1:] if r.startswith("-") else "-" + r)]
  digits = [i for i, c in enumerate(r) if c.isdigit()]
  if digits:
    i = digits[-1]
    out.append(("last digit", "wrong", r[:i] + str((int(r[i]) + 1) % 10)
                + r[i + 1:]))
  return out


def _fraction_variants(r: str) -> list[tuple[str, str, str]]:
  num, den = map(int, _FRACTION.match(r).groups())
  return [("plain", "format", f"{num}/{den}"),
          ("spaced", "format", f"{num} / {den}"),
          ("latex", "format", rf"\frac{{{num}}}{{{den}}}"),
          ("decimal", "format", f"{num / den:.6f}"),
          ("not lowest terms", "wrong", f"{2 * num}/{2 * den}"),
          ("upside down", "wrong", f"{den}/{num}"),
          ("last digit", "wrong", f"{num}/{den + 1}")]


def _string_variants(r: str) -> list[tuple[str, str, str]]:
  out = [("upper case", "format", r.upper()), ("full stop", "format", r + "."),
         ("lower case", "format", r.lower())]
  if ", " in r:
    items = r.split(", ")
    out += [("no list spaces", "format", ",".join(items)),
            ("reordered", "wrong", ", ".join(items[1:] + items[:1]))]
  letters = [i for i, c in enumerate(r) if c.isalpha()]
  if letters:
    i = letters[len(letters) // 2]
    out.append(("letter changed", "wrong",
                r[:i] + ("b" if r[i].lower() == "a" else "a") + r[i + 1:]))
  if len(r) > 1:
    out.append(("cut short", "wrong", r[:-1]))
  return out


def _candidates(task: str, r: str) -> list[tuple[str, str, str]]:
  if task == "fraction_simplification":
    variants = _fraction_variants(r)
  elif task in NUMERIC:
    variants = _number_variants(r)
  else:
    variants = _string_variants(r)
  return [("reference", "format", r)] + variants


def _mv(reference: str, answer: str) -> bool:
  return verify(parse(reference), parse(answer))


def _hand(reference: str, answer: str) -> bool:
  return rewards.exact_answer_reward(f"<answer>{answer}</answer>",
                                     reference) == 1.0


def _mv_strings(reference: str, answer: str) -> bool:
  gold = parse(reference)
  return verify(gold, parse(answer)) if gold else _hand(reference, answer)


CHECKERS = {"hand": _hand, "mv": _mv, "mv+strings": _mv_strings}


def _label(truth: bool, intent: str) -> str:
  """right: the verifier gives full marks; wrong: a changed value it
  rejects; strict: a formatting variant it rejects (no ground truth for a
  lenient checker, so left out of the agreement)."""
  return "right" if truth else intent.replace("format", "strict")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rows", type=int, default=100, help="rows per family")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  seconds, checks = collections.Counter(), 0
  # (group, checker) -> [agreements, right or wrong candidates]
  totals = collections.defaultdict(lambda: [0, 0])
  print(f"{args.rows} rows per family. right: the task verifier's full mark; "
        "wrong: a changed value it rejects; strict: a format it rejects.\n"
        "Per checker: right accepted, wrong rejected, agreement on both "
        "(strict accepted)")
  for task in NUMERIC + STRINGS:
    group = "numeric" if task in NUMERIC else "strings"
    n = collections.Counter()  # label -> candidates
    agreed = collections.Counter()  # (checker, label) -> agreements
    missed = collections.defaultdict(collections.Counter)
    for row in tasks.generate(task, args.rows, args.seed):
      for kind, intent, text in _candidates(task, row["answer"]):
        label = _label(tasks.score_answer(
            task, row["metadata"], row["prompt"], row["answer"], text) == 1.0,
            intent)
        n[label] += 1
        for name, check in CHECKERS.items():
          start = time.perf_counter()
          accepted = check(row["answer"], text)
          seconds[name] += time.perf_counter() - start
          if accepted == (label != "wrong"):
            agreed[(name, label)] += 1
          elif label != "strict":
            missed[name][f"{kind} ({label})"] += 1
        checks += 1
    line = [f"{task:<24} right {n['right']:4d} wrong {n['wrong']:4d} "
            f"strict {n['strict']:4d}"]
    for name in CHECKERS:
      agree = agreed[(name, "right")] + agreed[(name, "wrong")]
      totals[(group, name)][0] += agree
      totals[(group, name)][1] += n["right"] + n["wrong"]
      line.append(
          f"{name} {agreed[(name, 'right')] / max(n['right'], 1):.2f} "
          f"{agreed[(name, 'wrong')] / max(n['wrong'], 1):.2f} "
          f"{agree / (n['right'] + n['wrong']):.3f} "
          f"({agreed[(name, 'strict')] / max(n['strict'], 1):.2f})")
    print("  ".join(line))
    for name in CHECKERS:
      if missed[name]:
        worst = ", ".join(f"{k} x{v}" for k, v in missed[name].most_common(4))
        print(f"    {name} disagrees on: {worst}")
  us = {name: 1e6 * seconds[name] / checks for name in CHECKERS}
  print("time per check: " + ", ".join(f"{name} {us[name]:.0f} us"
                                        for name in CHECKERS))
  agreement = {key: a / total for key, (a, total) in totals.items()}
  for group in ("numeric", "strings"):
    print(f"agreement on {group} families: " + ", ".join(
        f"{name} {agreement[(group, name)]:.3f}" for name in CHECKERS))
  # Replace the rule only if math-verify (with the string fallback rows
  # without a task need) agrees clearly more often on the numeric families
  # and no less often on the string ones.
  better = (agreement[("numeric", "mv+strings")]
            >= agreement[("numeric", "hand")] + 0.02 and
            agreement[("strings", "mv+strings")]
            >= agreement[("strings", "hand")])
  print(" ".join(
      [f"{name.replace('+', '_')}_{group}={agreement[(group, name)]:.3f}"
       for group in ("numeric", "strings") for name in CHECKERS]
      + [f"{name.replace('+', '_')}_us={us[name]:.0f}" for name in CHECKERS]
      + [f"replace_hand_rule={'yes' if better else 'no'}"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
