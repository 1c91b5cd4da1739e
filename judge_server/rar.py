"""Importing Rubrics-as-Rewards (RaR) rubrics into grar's rubric model.

An RaR rubric is a list of items {"title", "description", "weight"}: the
description starts with its category ("Essential Criteria: ...", "Important
Criteria: ...", "Optional Criteria: ...", "Pitfall Criteria: ...") and the
integer weight is negative for pitfalls. RaR adds w for each satisfied item,
so a negative weight means "satisfying this is bad". grar stores the size of
the weight and says which way it counts in `polarity` (negative: a satisfied
criterion subtracts, see judge_server.aggregation.explicit).

One wrinkle of the released data: some negative-weight pitfalls are written
as the behaviour to show ("Avoids recommending X") rather than the mistake
("Recommends X"). Taking their sign literally would punish the good
behaviour, so such items become positive criteria: avoiding the mistake
earns the weight. `Import.flipped` lists them. docs/rubrics.md has the
whole mapping.
"""

import dataclasses
import json
import math
import pathlib
import re
from typing import Any, Iterable, Mapping

import yaml

from protos.rubric import Rubric, RubricError

_PREFIX = re.compile(
    r"^\s*(essential|important|optional|pitfall)\s+criteri(?:a|on)\s*:\s*",
    re.IGNORECASE)
# Pitfalls written as the good behaviour: satisfied means the mistake was
# avoided.
_AVOIDANCE = re.compile(
    r"^(?:avoids?|refrains? from|steers? clear of|is free of|does not "
    r"(?:incorrectly|falsely|wrongly|erroneously|mistakenly))\b",
    re.IGNORECASE)


class RaRError(ValueError):
  """Input that is not an RaR rubric; the message names the item and field."""


def criterion(item: Any, where: str) -> tuple[dict, bool]:
  """One RaR item as a grar criterion dict, and whether its sign was
  flipped because it is phrased as an avoidance."""
  if not isinstance(item, Mapping):
    raise RaRError(f"{where}: must be an object with description and weight")
  description = item.get("description")
  if not isinstance(description, str) or not description.strip():
    raise RaRError(f"{where}.description: must be a non-empty string")
  m = _PREFIX.match(description)
  if m is None:
    raise RaRError(
        f"{where}.description: does not start with a category (\"Essential "
        f"Criteria:\", \"Important Criteria:\", \"Optional Criteria:\" or "
        f"\"Pitfall Criteria:\"): {description[:60]!r}")
  text = description[m.end():].strip()
  if not text:
    raise RaRError(f"{where}.description: nothing after the category")
  weight = item.get("weight")
  if (isinstance(weight, bool) or not isinstance(weight, (int, float))
      or not math.isfinite(weight) or weight == 0):
    raise RaRError(f"{where}.weight: must be a non-zero number, got "
                   f"{weight!r}")
  flipped = weight < 0 and bool(_AVOIDANCE.match(text))
  polarity = "negative" if weight < 0 and not flipped else "positive"
  return {"text": text, "category": m.group(1).lower(),
          "weight": abs(weight), "polarity": polarity}, flipped


@dataclasses.dataclass(frozen=True)
class Import:
  """A converted rubric: the grar rubric dict (valid for Rubric.from_dict)
  and the indices of items whose sign was flipped."""
  rubric: dict
  flipped: tuple[int, ...]


def convert(items: Any, where: str = "rubric") -> Import:
  """An RaR rubric (a list of items) as a grar rubric dict."""
  if isinstance(items, str):  # some exports keep the list as JSON text
    try:
      items = json.loads(items)
    except json.JSONDecodeError as e:
      raise RaRError(
          f"{where}: not a list, nor JSON text of one: {e}") from None
  if not isinstance(items, list) or not items:
    raise RaRError(f"{where}: must be a non-empty list of rubric items")
  criteria, flipped = [], []
  for i, item in enumerate(items):
    c, was_flipped = criterion(item, f"{where}[{i}]")
    criteria.append(c)
    if was_flipped:
      flipped.append(i)
  rubric = {"criteria": criteria}
  try:
    Rubric.from_dict(rubric, where=where)
  except RubricError as e:
    raise RaRError(str(e)) from None
  return Import(rubric, tuple(flipped))


def pack(items: Any, rubric_id: str, version: int = 1,
         description: str = "") -> tuple[dict, tuple[int, ...]]:
  """A rubric pack (the YAML shape of judge_server/rubrics/) and the flipped
  item indices."""
  if not rubric_id:
    raise RaRError("id: a pack needs an id")
  imported = convert(items)
  data = {"id": rubric_id, "version": version}
  if description:
    data["description"] = description
  data["criteria"] = imported.rubric["criteria"]
  return data, imported.flipped


def _text_field(row: Mapping, key: str, where: str) -> str:
  value = row.get(key)
  if not isinstance(value, str) or not value.strip():
    raise RaRError(f"{where}.{key}: must be a non-empty string")
  return value


def dataset_rows(rows: Iterable[Any], id_prefix: str, domain: str = ""
                 ) -> tuple[list[dict], int]:
  """RaR dataset rows ({"question", "reference_answer", "rubric", ...}) as
  rows of grar's dataset format (orchestrator/data/dataset.py) with the rubric
  inline, and how many items were flipped in all. Other RaR columns
  (question_source, rubric_count, ...) are not carried over. A row's "id"
  is kept when it has one, else it is "<id_prefix>-<n>"."""
  out, flipped, seen = [], 0, {}
  for n, row in enumerate(rows):
    where = f"rows[{n}]"
    if not isinstance(row, Mapping):
      raise RaRError(f"{where}: must be an object")
    row_id = row.get("id", f"{id_prefix}-{n + 1}")
    if not isinstance(row_id, (str, int)) or isinstance(row_id, bool):
      raise RaRError(f"{where}.id: must be a string or an integer")
    row_id = str(row_id)
    if row_id in seen:
      raise RaRError(f"{where}.id: duplicate {row_id!r} (also "
                     f"rows[{seen[row_id]}])")
    seen[row_id] = n
    if "rubric" not in row:
      raise RaRError(f"{where}.rubric: missing")
    imported = convert(row["rubric"], f"{where}.rubric")
    flipped += len(imported.flipped)
    example = {"id": row_id}
    if domain:
      example["domain"] = domain
    example.update(prompt=_text_field(row, "question", where),
                   answer=_text_field(row, "reference_answer", where),
                   rubric=imported.rubric)
    out.append(example)
  if not out:
    raise RaRError("rows: no rows in the input")
  return out, flipped


def read(path: str | pathlib.Path) -> Any:
  """A JSON document, or JSON Lines (one value per line) as a list."""
  try:
    text = pathlib.Path(path).read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError) as e:
    raise RaRError(f"{path}: cannot read: {e}") from None
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    pass
  values = []
  for number, line in enumerate(text.splitlines(), start=1):
    if line.strip():
      try:
        values.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise RaRError(f"{path}:{number}: neither JSON nor JSON Lines: "
                       f"{e}") from None
  return values


def _items_of(doc: Any, path) -> Any:
  """The rubric items of a file holding either the item list or one row."""
  if isinstance(doc, Mapping):
    if "rubric" not in doc:
      raise RaRError(f"{path}: rubric: missing (expected a list of rubric "
                     "items or one row with a rubric)")
    return doc["rubric"]
  rows = [r for r in doc if isinstance(r, Mapping) and "rubric" in r]
  if len(rows) > 1:
    raise RaRError(f"{path}: {len(rows)} rows with a rubric each; a pack "
                   "holds one rubric (--dataset imports rows)")
  return rows[0]["rubric"] if rows else doc


def _flip_note(flipped: int) -> str:
  if not flipped:
    return ""
  return (f"; {flipped} negative-weight item(s) phrased as an avoidance "
          "became positive criteria (docs/rubrics.md)")


def import_pack(in_path, out_path, rubric_id: str, version: int = 1,
                description: str = "") -> str:
  """Writes a rubric pack from an RaR rubric file; returns a summary line."""
  data, flipped = pack(_items_of(read(in_path), in_path), rubric_id, version,
                       description)
  pathlib.Path(out_path).write_text(
      yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))
  return (f"{out_path}: rubric {rubric_id!r} v{version}, "
          f"{len(data['criteria'])} criteria{_flip_note(len(flipped))}")


def import_dataset(in_path, out_path, id_prefix: str, domain: str = "") -> str:
  """Writes grar dataset rows (JSONL) from RaR rows; returns a summary."""
  doc = read(in_path)
  rows, flipped = dataset_rows(doc if isinstance(doc, list) else [doc],
                               id_prefix, domain)
  with open(out_path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  return f"{out_path}: {len(rows)} rows{_flip_note(flipped)}"
