"""Rubric packs: YAML files of a rubric and its worked examples.

A pack may carry worked examples for few-shot judge prompts (`examples`):

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
import pathlib
from typing import Any, Mapping

import yaml

from protos.rubric import Example, Rubric, RubricError

_EXAMPLE_KEYS = ("question", "reference", "response", "answers")
PACK_DIR = pathlib.Path(__file__).resolve().parent / "rubrics"


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
