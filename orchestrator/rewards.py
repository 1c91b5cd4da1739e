"""Rule rewards computed on CPU, and the composite reward.

Rule rewards are pure functions of the completion text (the prompt is not
part of it) and the example. The composite keeps NaN: a component that
could not be computed (an unscorable judge call) makes the rollout's reward
NaN, and the trainer masks it out of the group baseline and the loss rather
than pretending it scored 0.

The `relevance` component is not one of rule_rewards(): it needs vocabulary
statistics fitted on the run's prompts, so it is a fitted scorer
(orchestrator/relevance.py) the trainer builds from its examples and
computes beside them.
"""

from collections.abc import Callable, Mapping, Sequence
import math
import re
import unicodedata

import numpy as np

from orchestrator.data import tasks
from orchestrator.data.dataset import Example
from policy_worker.advantages import group_advantages
# The answer block is read as the judge's extraction criterion reads it.
from protos.answers import (ANSWER_BLOCK as _ANSWER,
                            REASONING_BLOCK as _REASONING, extract_answer,
                            extract_reasoning)

_STRICT = re.compile(
    rf"\s*{_REASONING.pattern}\s*{_ANSWER.pattern}\s*", re.DOTALL)


def _has_block(pattern: re.Pattern, text: str) -> bool:
  return any(m.strip() for m in pattern.findall(text))


def _blocks_reward(completion: str) -> float:
  strict = _STRICT.fullmatch(completion)
  if strict and all(part.strip() for part in strict.groups()):
    return 1.0
  if not _has_block(_ANSWER, completion):
    return 0.0
  return 0.5 if _has_block(_REASONING, completion) else 0.25


def format_reward(completion: str, scaffold: Sequence[str] = ()) -> float:
  """How well the completion follows the reasoning template.

  A block is well formed when its content is not blank and holds none of the
  four tags.
    1.0   exactly a well-formed reasoning block then a well-formed answer
          block, with only whitespace around and between them
    0.5   a well-formed reasoning block and a well-formed answer block, but
          with other text, in the other order, or with more blocks
    0.25  a well-formed answer block without a well-formed reasoning block
    0.0   no well-formed answer block
  With a scaffold (named steps), that score times (1 + steps) / 2, where
  steps = scaffold_steps(reasoning, scaffold): half the credit is for the
  blocks, half for going through the steps in order.
  """
  blocks = _blocks_reward(completion)
  if not scaffold or not blocks:
    return blocks
  return blocks * (1 + scaffold_steps(extract_reasoning(completion) or "",
                                      scaffold)) / 2


def _labels(reasoning: str, scaffold: Sequence[str]) -> list[str]:
  """The scaffold steps the reasoning writes, in its order: lines that start
  with a step's name (any case) and a colon, and whose step (to the next
  such line) holds text."""
  label = re.compile(
      r"^[ \t]*({}):".format("|".join(re.escape(n) for n in scaffold)),
      re.IGNORECASE | re.MULTILINE)
  found = list(label.finditer(reasoning))
  names = {n.casefold(): n for n in scaffold}
  return [names[m[1].casefold()] for m, end in zip(
      found, [m.start() for m in found[1:]] + [len(reasoning)])
          if reasoning[m.end():end].strip()]


def scaffold_steps(reasoning: str, scaffold: Sequence[str]) -> float:
  """The fraction of the scaffold's steps the reasoning goes through in
  order: the most of the steps it writes (see _labels) that keep the
  scaffold's order, over the number of steps. A step out of order, repeated,
  empty or missing earns nothing; the others keep their credit."""
  found = _labels(reasoning, scaffold)
  # The longest common subsequence of the steps written and the scaffold.
  best = [0] * (len(scaffold) + 1)
  for name in found:
    prev = 0
    for j, want in enumerate(scaffold, 1):
      prev, best[j] = best[j], (prev + 1 if name == want
                                else max(best[j], best[j - 1]))
  return best[-1] / len(scaffold)


# A leading number: sign, currency, digits (thousands commas allowed only in
# groups of three, so "1,5" is not read as 15), optional exponent, optional
# "/denominator", optional percent sign; then the rest of the text.
_NUMBER = re.compile(r"""
    (?P<sign>[-+\u2212]?)\s*[$\u00a3\u20ac]?\s*
    (?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)
    (?:\s*/\s*(?P<den>\d+(?:\.\d*)?))?
    \s*(?P<percent>%)?
    (?P<rest>.*)""", re.VERBOSE | re.DOTALL)
# What may follow a number that is still just that number: nothing, a word
# (a unit: "40 square metres", "10km"), a degree sign, or a closing full stop.
_UNIT = re.compile(r"\s*(?:[^\W\d_]|\u00b0).*|\s*[.!]?\s*", re.DOTALL)


def _number(text: str) -> tuple[float | int, bool] | None:
  """(value, is_percent) of a text that is a number, maybe with a unit; the
  value is an int for a whole number written without a point, fraction or
  exponent, so it can be compared exactly."""
  m = _NUMBER.fullmatch(text.strip())
  if not m or not _UNIT.fullmatch(m["rest"]):
    return None
  digits = m["num"].replace(",", "")
  value = (int(digits) if digits.isdigit() and m["den"] is None
           else float(digits))
  if m["den"] is not None:
    if float(m["den"]) == 0:
      return None
    value /= float(m["den"])
  return (-value if m["sign"] in ("-", "\u2212") else value,
          m["percent"] is not None)


_ARTICLES = frozenset(("a", "an", "the"))


def _normalise(text: str) -> str:
  """Casefolded words without punctuation or articles, single-spaced."""
  spaced = "".join(" " if unicodedata.category(c).startswith("P") else c
                   for c in text.casefold())
  return " ".join(w for w in spaced.split() if w not in _ARTICLES)


def exact_answer_reward(completion: str, reference: str,
                        rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> float:
  """1.0 if the completion's answer block matches the reference, else 0.0.

  When both read as numbers, two whole numbers written without a point are
  compared exactly and any other pair within the tolerances (math.isclose).
  Read as numbers: "1,000", "3.50", "$8.75", "-7", "1/4", "2e3", and a number
  followed by a unit, "40 square metres", which counts as its number. A
  percent sign scales the value, so it is not dropped like a unit: "50%"
  matches only a reference that is a percentage too ("50 %"), never "50" or
  "0.5". Otherwise both are compared as strings, casefolded, without
  punctuation and the articles a/an/the, and with single spaces. The answer
  block must hold only the answer: "The answer is 85" does not match "85".
  No answer block scores 0.0.
  """
  answer = extract_answer(completion)
  if answer is None:
    return 0.0
  got, want = _number(answer), _number(reference)
  if got is not None and want is not None:
    if got[1] != want[1]:
      return 0.0
    if isinstance(got[0], int) and isinstance(want[0], int):
      # The tolerance is for decimals: with it, 793546073 would pass for
      # 793546072.
      return float(got[0] == want[0])
    return float(math.isclose(got[0], want[0], rel_tol=rel_tol,
                              abs_tol=abs_tol))
  got_text, want_text = _normalise(answer), _normalise(reference)
  return float(bool(want_text) and got_text == want_text)


def composite(components: Mapping[str, np.ndarray],
              weights: Mapping[str, float]) -> np.ndarray:
  """The weighted sum of reward components, per rollout.

  components: name -> [N] rewards of N rollouts; NaN where unscorable.
  weights: name -> weight; components it does not name, or names with weight
  0, take no part (their NaNs included). Returns [N] float64, NaN for a
  rollout where any weighted component is NaN. Raises ValueError for a
  weight that names no component, a non-finite weight, no non-zero weight,
  or weighted components of different or non-1-D shapes.
  """
  missing = sorted(set(weights) - set(components))
  if missing:
    raise ValueError(f"weights: {missing[0]!r} names no reward component "
                     f"(have: {', '.join(sorted(components))})")
  bad = [name for name, w in weights.items() if not math.isfinite(w)]
  if bad:
    raise ValueError(f"weights.{bad[0]}: must be finite")
  used = {name: np.asarray(components[name], dtype=np.float64)
          for name, w in weights.items() if w != 0}
  if not used:
    raise ValueError("weights: every weight is 0, so the reward is constant")
  shapes = {name: r.shape for name, r in used.items()}
  if (len(set(shapes.values())) != 1
      or any(len(shape) != 1 for shape in shapes.values())):
    raise ValueError(f"components: need [N] arrays of one N, got {shapes}")
  return sum(weights[name] * r for name, r in used.items())


def group_normalized(components: Mapping[str, np.ndarray],
                     num_generations: int) -> dict[str, np.ndarray]:
  """Each component standardised within each prompt's group (GDPO style),
  NaN kept where the value was NaN or the group had too few valid members."""
  out = {}
  for name, values in components.items():
    z, valid = group_advantages(values, num_generations)
    out[name] = np.where(valid, z, np.nan)
  return out


def answer_reward(completion: str, example: Example) -> float:
  """1.0 if the completion's answer is right, else 0.0.

  A row that names a task (generated by orchestrator/data/tasks.py) is graded by
  that task's own verifier on the answer block's content, and only its full
  mark counts: the partial credit some verifiers give (len(reference) /
  len(answer) when the answer merely contains the reference, 0.05 for any
  fraction) would reward wrong answers and make an accuracy over these
  rewards no longer a proportion. No answer block scores 0.0. Other rows
  keep exact_answer_reward.
  """
  if not example.task:
    return exact_answer_reward(completion, example.answer)
  answer = extract_answer(completion)
  if answer is None:
    return 0.0
  return float(tasks.score_answer(example.task, example.metadata or {},
                                  example.prompt, example.answer,
                                  answer) == 1.0)


def rule_rewards(scaffold: Sequence[str] = ()
                 ) -> dict[str, Callable[[str, Example], float]]:
  """The rule reward components, name -> reward(completion, example), for
  a run whose reasoning follows `scaffold` (none: free reasoning)."""
  # The format does not depend on the question.
  return {"format": lambda completion, _: format_reward(completion, scaffold),
          "answer": answer_reward}
