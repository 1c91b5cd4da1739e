"""SFT rows: a question, worked reasoning and the answer.

A row (JSON Lines, parquet, or a dataset saved by datasets' save_to_disk)
has the non-empty strings `prompt` and `answer`, the reasoning as either
the string `reasoning` or `steps`, an object of step name -> text for a
scaffold (orchestrator/data/templates.py), and may have an `id` and a
`provenance` object (who wrote the row, e.g. `grar distill`'s teacher; not
read for training); any other key is an error. The model is taught to
write `target(row, scaffold)` after `templates.render(prompt, scaffold)`,
the same prompt GRPO samples with.
"""

import dataclasses
import os

import numpy as np

from orchestrator import rewards
from orchestrator.data import templates
from orchestrator.data.dataset import DatasetError, load_table, text_field

KEYS = ("id", "prompt", "reasoning", "steps", "answer", "provenance")


@dataclasses.dataclass(frozen=True)
class SFTRow:
  prompt: str
  reasoning: str  # "" when the row gives steps
  answer: str
  steps: tuple[tuple[str, str], ...] = ()  # (name, text), the row's order


def completion(reasoning: str, answer: str) -> str:
  """The target completion: both blocks whole, as the format reward wants."""
  return (f"{templates.REASONING_START}{reasoning.strip()}"
          f"{templates.REASONING_END}\n{templates.ANSWER_START}"
          f"{answer.strip()}{templates.ANSWER_END}")


def target(row: SFTRow, scaffold: tuple[str, ...] = ()) -> str:
  """The completion the model learns for `row` under `scaffold`: its steps
  in the scaffold's order (in its own without a scaffold), or its
  reasoning, which must then already go through every step of a scaffold
  in order. ValueError("reasoning: problem") for a row that does not fit
  the scaffold."""
  if not row.steps:
    if scaffold and rewards.scaffold_steps(row.reasoning, scaffold) < 1:
      raise ValueError(
          "reasoning: does not go through the scaffold's steps "
          f"({', '.join(scaffold)}) in order, one 'Name: text' line each; "
          "write them, or give the row's steps")
    return completion(row.reasoning, row.answer)
  steps = dict(row.steps)
  if scaffold:
    by_name = {name.casefold(): name for name in steps}
    names = [name.casefold() for name in scaffold]
    if sorted(by_name) != sorted(names):
      raise ValueError(f"steps: {', '.join(steps)} are not the scaffold's "
                       f"steps ({', '.join(scaffold)})")
    steps = {name: steps[by_name[name.casefold()]] for name in scaffold}
  return completion(templates.scaffolded(steps.items()), row.answer)


def _steps(row: dict) -> tuple[tuple[str, str], ...]:
  steps = row["steps"]
  if not isinstance(steps, dict) or not steps:
    raise DatasetError("steps: must be a non-empty object of step name -> "
                       "text")
  for name in steps:
    text_field(steps, name)
  return tuple(steps.items())


def _row(row: dict) -> SFTRow:
  if "id" in row:
    text_field(row, "id")
  if "provenance" in row and not isinstance(row["provenance"], dict):
    raise DatasetError(f"provenance: must be an object, got "
                       f"{type(row['provenance']).__name__}")
  if "steps" not in row:
    return SFTRow(text_field(row, "prompt"), text_field(row, "reasoning"),
                  text_field(row, "answer"))
  if "reasoning" in row:
    raise DatasetError("steps: give reasoning or steps, not both")
  steps = _steps(row)
  return SFTRow(text_field(row, "prompt"), "", text_field(row, "answer"),
                steps)


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
