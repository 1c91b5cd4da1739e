"""Rubrics: weighted criteria with a category and a polarity.

A rubric is part of the judge contract: it arrives from a dataset row, a YAML
pack (judge_server/packs.py) or a gRPC message, and all three go through
`Rubric.from_dict`, so a bad rubric is refused the same way everywhere, with
the field named. `Example` is a worked judgement that only packs carry, for
few-shot judge prompts. Pure Python: the trainer and the judge both load it.
"""

import dataclasses
import math
from typing import Any, Mapping

CATEGORIES = ("essential", "important", "optional", "pitfall")
POLARITIES = ("positive", "negative")
MAX_CRITERION_CHARS = 2000
# Every example is shown in every judge prompt of its rubric, so a few
# short ones: prompt length costs judge time on every criterion.
MAX_EXAMPLES = 3
MAX_EXAMPLE_CHARS = 1000


class RubricError(ValueError):
  """A rubric that cannot be used; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Criterion:
  text: str
  category: str
  weight: float
  polarity: str

  def __post_init__(self):
    if not isinstance(self.text, str) or not self.text.strip():
      raise RubricError("text: must be a non-empty string")
    if len(self.text) > MAX_CRITERION_CHARS:
      raise RubricError(f"text: longer than {MAX_CRITERION_CHARS} characters")
    if self.category not in CATEGORIES:
      raise RubricError(
          f"category: {self.category!r} is not one of {', '.join(CATEGORIES)}")
    if self.polarity not in POLARITIES:
      raise RubricError(
          f"polarity: {self.polarity!r} is not one of {', '.join(POLARITIES)}")
    if (isinstance(self.weight, bool)
        or not isinstance(self.weight, (int, float))
        or not math.isfinite(self.weight) or self.weight <= 0):
      raise RubricError(
          f"weight: must be a finite number > 0 (the sign comes from "
          f"polarity), got {self.weight!r}")


@dataclasses.dataclass(frozen=True)
class Example:
  """A worked judgement shown before the graded response (few-shot).
  answers: per criterion of its rubric, in order, how far the example meets
  it (a pitfall: makes the mistake) in [0, 1]."""
  question: str
  response: str
  answers: tuple[float, ...]
  reference: str = ""

  def __post_init__(self):
    for name in ("question", "response", "reference"):
      value = getattr(self, name)
      if not isinstance(value, str):
        raise RubricError(f"{name}: must be a string")
      if len(value) > MAX_EXAMPLE_CHARS:
        raise RubricError(f"{name}: longer than {MAX_EXAMPLE_CHARS} "
                          "characters")
    for name in ("question", "response"):
      if not getattr(self, name).strip():
        raise RubricError(f"{name}: must not be empty")
    if not all(isinstance(a, float) and 0.0 <= a <= 1.0
               for a in self.answers):
      raise RubricError("answers: each must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class Rubric:
  criteria: tuple[Criterion, ...]
  id: str = ""
  version: int = 0
  examples: tuple[Example, ...] = ()

  def __post_init__(self):
    if not self.criteria:
      raise RubricError("criteria: a rubric needs at least one criterion")
    if not any(c.polarity == "positive" for c in self.criteria):
      raise RubricError(
          "criteria: at least one criterion must have positive polarity, or "
          "no score above 0 is possible")
    if len(self.examples) > MAX_EXAMPLES:
      raise RubricError(f"examples: {len(self.examples)} examples, more than "
                        f"{MAX_EXAMPLES}")
    for i, e in enumerate(self.examples):
      if len(e.answers) != len(self.criteria):
        raise RubricError(f"examples[{i}].answers: {len(e.answers)} answers "
                          f"for {len(self.criteria)} criteria")

  @classmethod
  def from_dict(cls, data: Any, *, where: str = "rubric") -> "Rubric":
    """Builds a rubric from parsed JSON/YAML; errors are prefixed by `where`."""
    if not isinstance(data, Mapping):
      raise RubricError(f"{where}: must be a mapping with 'criteria'")
    unknown = set(data) - {"id", "version", "description", "criteria"}
    if unknown:
      raise RubricError(f"{where}.{sorted(unknown)[0]}: unknown key")
    raw = data.get("criteria")
    if not isinstance(raw, list):
      raise RubricError(f"{where}.criteria: must be a list")
    criteria = []
    for i, item in enumerate(raw):
      if not isinstance(item, Mapping):
        raise RubricError(f"{where}.criteria[{i}]: must be a mapping")
      extra = set(item) - {"text", "category", "weight", "polarity"}
      if extra:
        raise RubricError(f"{where}.criteria[{i}].{sorted(extra)[0]}: unknown key")
      missing = {"text", "category", "weight"} - set(item)
      if missing:
        raise RubricError(f"{where}.criteria[{i}].{sorted(missing)[0]}: missing")
      try:
        criteria.append(Criterion(
            text=item["text"], category=item["category"],
            weight=item["weight"],
            polarity=item.get("polarity", default_polarity(item["category"]))))
      except RubricError as e:
        raise RubricError(f"{where}.criteria[{i}].{e}") from None
    version = data.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
      raise RubricError(f"{where}.version: must be an integer >= 0")
    try:
      return cls(criteria=tuple(criteria), id=str(data.get("id", "")),
                 version=version)
    except RubricError as e:
      raise RubricError(f"{where}.{e}") from None


def default_polarity(category: str) -> str:
  return "negative" if category == "pitfall" else "positive"
