"""Rubrics: weighted criteria with a category and a polarity.

A rubric arrives from three edges (a dataset row, a YAML pack, a gRPC
message); all three go through `Rubric.from_dict`, so a bad rubric is refused
the same way everywhere, with the field named. A pack may also carry worked
examples for few-shot judge prompts (`examples`, parsed by `load_pack`):

  examples:
    - question: What is 6 * 7?
      reference: 42                # optional
      response: <reasoning>6 * 7 = 42.</reasoning><answer>42</answer>
      answers: [yes, yes, no]      # one per criterion, in order

An answer is how far the example meets that criterion (for a pitfall: makes
the mistake): yes, no, or a score 0-9. The binary format shows a score of 5
or more as yes; the scale shows yes as 9 and no as 0.
"""

import dataclasses
import math
import pathlib
from typing import Any, Mapping

import yaml

CATEGORIES = ("essential", "important", "optional", "pitfall")
POLARITIES = ("positive", "negative")
MAX_CRITERION_CHARS = 2000
# Every example is shown in every judge prompt of its rubric, so a few
# short ones: prompt length costs judge time on every criterion.
MAX_EXAMPLES = 3
MAX_EXAMPLE_CHARS = 1000
_EXAMPLE_KEYS = ("question", "reference", "response", "answers")
PACK_DIR = pathlib.Path(__file__).resolve().parent / "rubrics"


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


def _answer(value: Any) -> float:
  """yes 1, no 0, a score n of 0-9 n / 9. YAML reads a bare yes or no as a
  boolean, so those count too."""
  if isinstance(value, bool):
    return float(value)
  if isinstance(value, str) and value.strip().lower() in ("yes", "no"):
    return float(value.strip().lower() == "yes")
  if isinstance(value, int) and 0 <= value <= 9:
    return value / 9
  raise RubricError(f"must be yes, no or a score 0-9, got {value!r}")


def _example(item: Any, where: str) -> Example:
  if not isinstance(item, Mapping):
    raise RubricError(f"{where}: must be a mapping")
  extra = set(item) - set(_EXAMPLE_KEYS)
  if extra:
    raise RubricError(f"{where}.{sorted(extra)[0]}: unknown key (known: "
                      f"{', '.join(_EXAMPLE_KEYS)})")
  missing = {"question", "response", "answers"} - set(item)
  if missing:
    raise RubricError(f"{where}.{sorted(missing)[0]}: missing")
  if not isinstance(item["answers"], list):
    raise RubricError(f"{where}.answers: must be a list, one per criterion")
  answers = []
  for j, value in enumerate(item["answers"]):
    try:
      answers.append(_answer(value))
    except RubricError as e:
      raise RubricError(f"{where}.answers[{j}]: {e}") from None
  reference = item.get("reference", "")
  if isinstance(reference, (int, float)) and not isinstance(reference, bool):
    reference = str(reference)  # `reference: 42` means the text 42
  try:
    return Example(question=item["question"], response=item["response"],
                   answers=tuple(answers), reference=reference)
  except RubricError as e:
    raise RubricError(f"{where}.{e}") from None


def load_pack(path: pathlib.Path) -> Rubric:
  try:
    data = yaml.safe_load(path.read_text())
  except (OSError, yaml.YAMLError) as e:
    raise RubricError(f"{path}: cannot read rubric pack: {e}") from None
  # Examples are a pack's own: rubrics from rows or requests have none.
  raw = data.pop("examples", []) if isinstance(data, dict) else []
  rubric = Rubric.from_dict(data, where=str(path))
  if not rubric.id:
    raise RubricError(f"{path}: id: missing")
  if not isinstance(raw, list):
    raise RubricError(f"{path}.examples: must be a list")
  examples = tuple(_example(item, f"{path}.examples[{i}]")
                   for i, item in enumerate(raw))
  try:
    return dataclasses.replace(rubric, examples=examples)
  except RubricError as e:
    raise RubricError(f"{path}.{e}") from None


def load_packs(directory: pathlib.Path = PACK_DIR) -> dict[str, Rubric]:
  """All `*.yaml` packs of a directory, by id; duplicate ids are an error."""
  packs: dict[str, Rubric] = {}
  for path in sorted(directory.glob("*.yaml")):
    rubric = load_pack(path)
    if rubric.id in packs:
      raise RubricError(f"{path}: id: {rubric.id!r} is defined twice")
    packs[rubric.id] = rubric
  return packs
