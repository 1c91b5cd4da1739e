"""Reasoning datasets: JSON Lines of question, reference answer and rubric.

One object per line:
  id        non-empty string, unique in the file
  prompt    non-empty string, the question
  answer    non-empty string, the reference answer
  domain    optional string, default "general"
  rubric    an inline rubric ({"criteria": [...]}, see protos.rubric)
  rubric_id the id of a known rubric pack
  task      optional non-empty string: the reasoning-gym task that generated
            the row (orchestrator/data/tasks.py); its own verifier then grades
            the answer instead of the exact-answer rule
  metadata  optional JSON object, only with task: the generator's metadata,
            what that verifier needs to re-score an answer
Any other key is an error, so a typo cannot silently drop a field.
"""

import dataclasses
import json
import os
import pathlib
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, TypeVar

from protos.rubric import Rubric, RubricError

DEFAULT_DOMAIN = "general"
DEFAULT_RUBRIC_ID = "general-reasoning"
KEYS = ("id", "domain", "prompt", "answer", "rubric", "rubric_id", "task",
        "metadata")


class DatasetError(ValueError):
  """A row that cannot be used: "<path>:<line>: <field>: <problem>"."""


@dataclasses.dataclass(frozen=True)
class Example:
  """One question. Exactly one of `rubric` (inline) and `rubric_id` (a pack
  the judge knows) is set; the other is None or "". `task` names the
  generator whose verifier grades the answer ("" for none) and `metadata`
  is what that verifier reads (None without a task)."""
  id: str
  domain: str
  prompt: str
  answer: str
  rubric: Rubric | None
  rubric_id: str
  task: str = ""
  # A dict is not hashable; leaving it out of the hash keeps Example one.
  metadata: dict | None = dataclasses.field(default=None, hash=False)


def text_field(row: dict, key: str) -> str:
  """row[key] as a non-blank string; DatasetError("key: problem") else."""
  value = row.get(key)
  if value is None:
    raise DatasetError(f"{key}: missing")
  if not isinstance(value, str):
    raise DatasetError(f"{key}: must be a string, got {type(value).__name__}")
  if not value.strip():
    raise DatasetError(f"{key}: empty")
  return value


def _rubric(row: dict,
            known: Collection[str]) -> tuple[Rubric | None, str]:
  if "rubric" in row and "rubric_id" in row:
    raise DatasetError("rubric: give rubric or rubric_id, not both")
  if "rubric" in row:
    try:
      return Rubric.from_dict(row["rubric"], where="rubric"), ""
    except RubricError as e:
      raise DatasetError(str(e)) from None
  if "rubric_id" not in row:
    if DEFAULT_RUBRIC_ID in known:
      return None, DEFAULT_RUBRIC_ID
    raise DatasetError(
        f"rubric_id: missing; give rubric or rubric_id (the default "
        f"{DEFAULT_RUBRIC_ID!r} is not a known rubric)")
  rubric_id = text_field(row, "rubric_id")
  if rubric_id not in known:
    raise DatasetError(f"rubric_id: unknown rubric {rubric_id!r} (known: "
                       f"{', '.join(sorted(known)) or 'none'})")
  return None, rubric_id


def _task(row: dict) -> tuple[str, dict | None]:
  if "task" not in row:
    if "metadata" in row:
      raise DatasetError("metadata: only rows with a task may have metadata")
    return "", None
  task = text_field(row, "task")
  metadata = row.get("metadata", {})
  if not isinstance(metadata, dict):
    raise DatasetError(f"metadata: must be a JSON object, got "
                       f"{type(metadata).__name__}")
  return task, metadata


def _example(line: str, known: Collection[str]) -> Example:
  try:
    row = json.loads(line)
  except json.JSONDecodeError as e:
    raise DatasetError(f"row: invalid JSON: {e}") from None
  if not isinstance(row, dict):
    raise DatasetError(
        f"row: must be a JSON object, got {type(row).__name__}")
  unknown = sorted(set(row) - set(KEYS))
  if unknown:
    raise DatasetError(f"{unknown[0]}: unknown key (known: {', '.join(KEYS)})")
  example_id = text_field(row, "id")
  domain = text_field(row, "domain") if "domain" in row else DEFAULT_DOMAIN
  prompt, answer = text_field(row, "prompt"), text_field(row, "answer")
  rubric, rubric_id = _rubric(row, known)
  task, metadata = _task(row)
  return Example(id=example_id, domain=domain, prompt=prompt, answer=answer,
                 rubric=rubric, rubric_id=rubric_id, task=task,
                 metadata=metadata)


def load_jsonl(path: str | os.PathLike,
               known_rubric_ids: Collection[str]) -> list[Example]:
  """All examples of a JSONL file, in file order.

  known_rubric_ids: the rubric packs the judge has (judge_server.packs
  .load_packs()). A row with neither rubric nor rubric_id gets the pack
  "general-reasoning" when that pack is known, and is an error otherwise:
  every example must reach the judge with some rubric, and the generic pack
  is the one written for any single-answer question. Blank lines are
  skipped. Raises DatasetError, "<path>:<line>: <field>: <problem>", for the
  first bad row, and "<path>: ..." for a file that cannot be read or has no
  rows.
  """
  try:
    with open(path, "rb") as f:
      raw_lines = f.read().splitlines()
  except OSError as e:
    raise DatasetError(f"{path}: cannot read: {e.strerror}") from None
  examples: list[Example] = []
  first_line: dict[str, int] = {}
  for number, raw in enumerate(raw_lines, start=1):
    try:
      line = raw.decode("utf-8")
      if not line.strip():
        continue
      example = _example(line, known_rubric_ids)
      if example.id in first_line:
        raise DatasetError(f"id: duplicate {example.id!r} (first on line "
                           f"{first_line[example.id]})")
    except UnicodeDecodeError as e:
      raise DatasetError(
          f"{path}:{number}: row: not UTF-8: {e.reason}") from None
    except DatasetError as e:
      raise DatasetError(f"{path}:{number}: {e}") from None
    first_line[example.id] = number
    examples.append(example)
  if not examples:
    raise DatasetError(f"{path}: no examples (the file is empty or blank)")
  return examples


def _jsonl_rows(path: pathlib.Path) -> Iterator[tuple[str, Any]]:
  try:
    raw_lines = path.read_bytes().splitlines()
  except OSError as e:
    raise DatasetError(f"{path}: cannot read: {e.strerror}") from None
  for number, raw in enumerate(raw_lines, start=1):
    where = f"{path}:{number}"
    try:
      line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise DatasetError(f"{where}: row: not UTF-8: {e.reason}") from None
    if not line.strip():
      continue
    try:
      yield where, json.loads(line)
    except json.JSONDecodeError as e:
      raise DatasetError(f"{where}: row: invalid JSON: {e}") from None


def _parquet_rows(path: pathlib.Path) -> Iterator[tuple[str, Any]]:
  import pyarrow
  import pyarrow.parquet
  try:
    rows = pyarrow.parquet.read_table(path).to_pylist()
  except (OSError, pyarrow.ArrowException) as e:
    raise DatasetError(f"{path}: cannot read as parquet: {e}") from None
  for index, row in enumerate(rows):
    yield f"{path}: row {index}", row


def _saved_dataset_rows(path: pathlib.Path) -> Iterator[tuple[str, Any]]:
  # Imported here: datasets takes seconds to import.
  import datasets
  try:
    data = datasets.load_from_disk(str(path))
  except (OSError, ValueError) as e:
    raise DatasetError(f"{path}: not a dataset saved by datasets' "
                       f"save_to_disk: {e}") from None
  if isinstance(data, datasets.DatasetDict):
    splits = list(data)
    raise DatasetError(f"{path}: holds the splits {', '.join(splits)}; give "
                       f"one of them, e.g. {path / splits[0]}")
  for index, row in enumerate(data):
    yield f"{path}: row {index}", row


def read_rows(path: str | os.PathLike) -> Iterator[tuple[str, Any]]:
  """The rows of a table, each with where it is for error messages.

  A directory is a dataset written by datasets' `save_to_disk` (one split),
  a `.parquet` file is parquet, anything else is JSON Lines (blank lines
  skipped). Where: "<path>:<line>" in JSON Lines, "<path>: row <index>"
  (0-based) otherwise. A row is what the file holds, not necessarily an
  object. Raises DatasetError for a file that cannot be read.
  """
  path = pathlib.Path(path)
  if path.is_dir():
    return _saved_dataset_rows(path)
  if path.suffix == ".parquet":
    return _parquet_rows(path)
  return _jsonl_rows(path)


T = TypeVar("T")


def load_table(path: str | os.PathLike, keys: Sequence[str],
               build: Callable[[dict], T]) -> list[T]:
  """`build(row)` for every row of `path` (see read_rows), in file order.

  keys: the keys a row may have; any other is an error, so a typo cannot
  silently drop a field. build reads the fields (text_field) and raises
  DatasetError("field: problem"). Errors read "<where>: <field>: <problem>";
  a table without rows is an error.
  """
  items = []
  for where, row in read_rows(path):
    try:
      if not isinstance(row, dict):
        raise DatasetError(
            f"row: must be an object, got {type(row).__name__}")
      unknown = sorted(set(row) - set(keys))
      if unknown:
        raise DatasetError(
            f"{unknown[0]}: unknown key (known: {', '.join(keys)})")
      items.append(build(row))
    except DatasetError as e:
      raise DatasetError(f"{where}: {e}") from None
  if not items:
    raise DatasetError(f"{path}: no rows (the file is empty or blank)")
  return items
