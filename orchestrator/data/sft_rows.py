"""SFT rows: a question, worked reasoning and the answer.

A row (JSON Lines, parquet, or a dataset saved by datasets' save_to_disk)
has the non-empty strings `prompt`, `reasoning` and `answer`, and may have
an `id`; any other key is an error. The model is taught to write
`completion(reasoning, answer)` after `templates.render(prompt)`, the same
prompt GRPO samples with.
"""

import dataclasses
import os

import numpy as np

from orchestrator.data import templates
from orchestrator.data.dataset import load_table, text_field

KEYS = ("id", "prompt", "reasoning", "answer")


@dataclasses.dataclass(frozen=True)
class SFTRow:
  prompt: str
  reasoning: str
  answer: str


def completion(reasoning: str, answer: str) -> str:
  """The target completion: both blocks whole, as the format reward wants."""
  return (f"{templates.REASONING_START}{reasoning.strip()}"
          f"{templates.REASONING_END}\n{templates.ANSWER_START}"
          f"{answer.strip()}{templates.ANSWER_END}")


def _row(row: dict) -> SFTRow:
  if "id" in row:
    text_field(row, "id")
  return SFTRow(text_field(row, "prompt"), text_field(row, "reasoning"),
                text_field(row, "answer"))


def load_sft(path: str | os.PathLike) -> list[SFTRow]:
  """All rows of `path`; DatasetError "<where>: <field>: <problem>"."""
  return load_table(path, KEYS, _row)


def split_eval(items: list, fraction: float, unit: int,
               seed: int) -> tuple[list, list]:
  """(train, held out): a seeded `fraction` of the items held out, rounded
  to a whole number of `unit`s (eval batches), at least one unit.

  Raises ValueError (naming eval_fraction) when nothing would be left to
  train on.
  """
  n_eval = max(unit, round(len(items) * fraction / unit) * unit)
  if n_eval >= len(items):
    raise ValueError(f"eval_fraction: holding out {n_eval} of {len(items)} "
                     f"rows (whole batches of {unit}) leaves none to train on")
  order = np.random.default_rng(seed).permutation(len(items))
  held = set(order[:n_eval].tolist())
  return ([x for i, x in enumerate(items) if i not in held],
          [x for i, x in enumerate(items) if i in held])
