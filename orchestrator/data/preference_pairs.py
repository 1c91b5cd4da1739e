"""Preference pairs for SimPO: a question, a better and a worse completion.

A row (JSON Lines, parquet, or a dataset saved by datasets' save_to_disk)
has the non-empty strings `prompt` (the question; the model sees
`templates.render(prompt)`), `chosen` and `rejected` (whole completions as
the model would write them), and may have an `id`; any other key is an
error, and so is a pair whose two completions are the same.
"""

import dataclasses
import os

from orchestrator.data.dataset import DatasetError, load_table, text_field

KEYS = ("id", "prompt", "chosen", "rejected")


@dataclasses.dataclass(frozen=True)
class PreferencePair:
  prompt: str
  chosen: str
  rejected: str


def _pair(row: dict) -> PreferencePair:
  if "id" in row:
    text_field(row, "id")
  pair = PreferencePair(text_field(row, "prompt"), text_field(row, "chosen"),
                        text_field(row, "rejected"))
  if pair.chosen == pair.rejected:
    raise DatasetError("rejected: the same text as chosen; a pair must "
                       "prefer one completion over a different one")
  return pair


def load_pairs(path: str | os.PathLike) -> list[PreferencePair]:
  """All pairs of `path`; DatasetError "<where>: <field>: <problem>"."""
  return load_table(path, KEYS, _pair)
