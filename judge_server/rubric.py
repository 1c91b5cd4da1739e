"""Rubrics: weighted criteria with a category and a polarity.

A rubric arrives from three edges (a dataset row, a YAML pack, a gRPC
message); all three go through `Rubric.from_dict`, so a bad rubric is refused
the same way everywhere, with the field named.
"""

import dataclasses
import math
import pathlib
from typing import Any, Mapping

import yaml

CATEGORIES = ("essential", "important", "optional", "pitfall")
POLARITIES = ("positive", "negative")
MAX_CRITERION_CHARS = 2000
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
class Rubric:
  criteria: tuple[Criterion, ...]
  id: str = ""
  version: int = 0

  def __post_init__(self):
    if not self.criteria:
      raise RubricError("criteria: a rubric needs at least one criterion")
    if not any(c.polarity == "positive" for c in self.criteria):
      raise RubricError(
          "criteria: at least one criterion must have positive polarity, or "
          "no score above 0 is possible")

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


def load_pack(path: pathlib.Path) -> Rubric:
  try:
    data = yaml.safe_load(path.read_text())
  except (OSError, yaml.YAMLError) as e:
    raise RubricError(f"{path}: cannot read rubric pack: {e}") from None
  rubric = Rubric.from_dict(data, where=str(path))
  if not rubric.id:
    raise RubricError(f"{path}: id: missing")
  return rubric


def load_packs(directory: pathlib.Path = PACK_DIR) -> dict[str, Rubric]:
  """All `*.yaml` packs of a directory, by id; duplicate ids are an error."""
  packs: dict[str, Rubric] = {}
  for path in sorted(directory.glob("*.yaml")):
    rubric = load_pack(path)
    if rubric.id in packs:
      raise RubricError(f"{path}: id: {rubric.id!r} is defined twice")
    packs[rubric.id] = rubric
  return packs
