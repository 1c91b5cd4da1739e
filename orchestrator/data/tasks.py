"""Generated reasoning tasks (reasoning-gym) and their own verifiers.

A thin, deterministic layer over reasoning_gym's procedural generators:
rows in the trainer's dataset format (orchestrator/data/dataset.py) that name
their task and carry the generator's metadata, so that the task's verifier
can grade an answer later (`score_answer`), and `grar data make`, which
writes training, held-out and SFT files. Worked reasoning for the SFT rows
comes from orchestrator/data/task_traces.py (which families have it is listed
there).

reasoning_gym is imported inside the functions that need it: it takes about
a second to import, which the judge and the CLI's other commands must not
pay.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import hashlib
import json
import math
import os
import pathlib
import sys
from typing import Any

import yaml

from orchestrator.data import task_traces, templates

RUBRIC_ID = "reference-answer"
FILES = ("train.jsonl", "heldout.jsonl", "sft.jsonl", "manifest.json")
_MATH = frozenset(("arithmetic", "algebra", "geometry", "probability"))
# Families whose verifier reads these fields of its dataset's config, which
# get_score_answer_fn builds with the defaults: rows generated with other
# values would be graded by other rules than the generator's.
_VERIFIER_READS = {
    "decimal_arithmetic": {"max_num_decimal_places"},
    "polynomial_equations": {"exp_distance_factor", "penalty_extra_factor",
                             "penalty_missing_factor"},
    "puzzle24": {"min_value", "max_value"},
    "time_intervals": {"max_date_difference_days",
                       "max_time_difference_seconds"},
}
# Draws allowed per wanted row before a family is reported as unable to give
# enough usable, distinct rows.
_DRAWS_PER_ROW, _MIN_DRAWS = 10, 100


@functools.cache
def known_tasks() -> tuple[str, ...]:
  """The reasoning-gym dataset names, sorted ("composite" mixes others and
  is left out)."""
  from reasoning_gym.factory import DATASETS
  return tuple(sorted(set(DATASETS) - {"composite"}))


def _check_task(task: str) -> None:
  if task not in known_tasks():
    few = ", ".join(n for n in known_tasks() if n in task_traces.TRACES)
    raise ValueError(f"tasks: unknown task {task!r} (known include: {few}; "
                     f"{len(known_tasks())} in all)")


def _fits(value: Any, default: Any) -> bool:
  """Whether an option value has the type of the config field's default."""
  if default is None or default is dataclasses.MISSING:
    return True
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(default, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, (tuple, list)):
    return isinstance(value, list)
  return isinstance(value, type(default))


def parse_options(items: Sequence[str], tasks: Sequence[str]
                  ) -> dict[str, dict[str, Any]]:
  """--option NAME.KEY=VALUE strings -> {task: {key: value}}, every task
  of `tasks` present.

  VALUE is read as YAML (3, true, [+, -], text). KEY must be a field of the
  task's reasoning-gym config other than seed and size (which `generate`
  sets), VALUE of its default's type, and KEY not one the task's verifier
  reads. Raises ValueError naming the option.
  """
  from reasoning_gym.factory import DATASETS
  options: dict[str, dict[str, Any]] = {task: {} for task in tasks}
  for item in items:
    name, eq, text = item.partition("=")
    task, dot, key = name.partition(".")
    if not (eq and dot and task and key):
      raise ValueError(f"--option {item}: want NAME.KEY=VALUE")
    if task not in options:
      raise ValueError(f"--option {item}: {task!r} is not among --tasks")
    fields = {f.name: f for f in dataclasses.fields(DATASETS[task][1])
              if f.name not in ("seed", "size")}
    if key not in fields:
      raise ValueError(f"--option {item}: {task} has no option {key!r} "
                       f"(has: {', '.join(sorted(fields))})")
    if key in _VERIFIER_READS.get(task, ()):
      raise ValueError(f"--option {item}: {task}'s verifier reads {key} from "
                       "its default config, so it cannot be changed")
    try:
      value = yaml.safe_load(text)
    except yaml.YAMLError as e:
      raise ValueError(f"--option {item}: not YAML: {e}") from None
    if not _fits(value, fields[key].default):
      raise ValueError(f"--option {item}: want "
                       f"{type(fields[key].default).__name__}, got "
                       f"{type(value).__name__}")
    options[task][key] = value
  flat = options.get("basic_arithmetic", {})
  if flat.get("allow_parentheses") is False and set(
      flat.get("operators", "*")) - {"+", "-"}:
    # Without parentheses, reasoning-gym (0.1.25) computes the answer left to
    # right, ignoring that * and / bind first: 2 references in 3 are wrong.
    raise ValueError("--option basic_arithmetic.allow_parentheses=false: the "
                     "generator then ignores operator precedence in its "
                     "answers; keep parentheses or set operators to [+, -]")
  return options


def _domain(category: str) -> str:
  return "math" if category in _MATH else category


@functools.cache
def _verifier(task: str):
  import reasoning_gym
  return reasoning_gym.get_score_answer_fn(task)


def score_answer(task: str, metadata: Mapping[str, Any], question: str,
                 reference: str, answer_text: str) -> float:
  """The task's own verifier's score of `answer_text` (the content of the
  answer block), in [0, 1]; some verifiers give partial credit.

  The entry it sees is rebuilt from a row: {question, answer: reference,
  metadata}. Raises ValueError for an unknown task. A verifier that raises
  on the answer (the model wrote something it cannot parse) scores 0.0.
  """
  _check_task(task)
  entry = {"question": question, "answer": reference,
           "metadata": dict(metadata)}
  try:
    score = float(_verifier(task)(answer_text, entry))
  except Exception:  # whatever a verifier trips on is not a right answer
    return 0.0
  return 0.0 if math.isnan(score) else min(1.0, max(0.0, score))


def _seed(seed: int, task: str, split: str) -> int:
  """A seed for one task and split: reasoning-gym seeds row i with seed + i,
  so nearby seeds would share rows."""
  digest = hashlib.sha256(f"{seed}/{task}/{split}".encode()).digest()
  return int.from_bytes(digest[:4], "big")


def normalised(prompt: str) -> str:
  """A prompt compared for sameness: whitespace collapsed, casefolded."""
  return " ".join(prompt.split()).casefold()


def generate(task: str, n: int, seed: int, split: str = "train",
             options: Mapping[str, Any] | None = None,
             distinct_from: frozenset[str] | None = None) -> list[dict]:
  """n dataset rows of `task`, deterministic in (task, n, seed, split,
  options).

  A row: id "<task>-<split>-<k>", prompt (the generator's question), answer
  (its reference), domain ("math" for arithmetic, algebra, geometry and
  probability, else the reasoning-gym category), rubric_id
  "reference-answer", task and metadata (JSON: tuples become lists). A
  generated entry whose reference the verifier does not give 1.0 after the
  JSON round trip is skipped. With `distinct_from` (normalised prompts), so
  is an entry whose prompt is among them or repeats an earlier row's.
  Raises ValueError when 10 * n draws (at least 100) give fewer than n rows.
  """
  _check_task(task)
  if n == 0:
    return []
  import reasoning_gym
  draws = max(_MIN_DRAWS, _DRAWS_PER_ROW * n)
  try:
    data = reasoning_gym.create_dataset(
        task, seed=_seed(seed, task, split), size=draws, **(options or {}))
  except (AssertionError, TypeError, ValueError) as e:
    raise ValueError(f"--option {task}: {e or type(e).__name__}") from None
  domain = _domain(data.category)
  rows, seen, unscorable, repeated = [], set(distinct_from or ()), 0, 0
  for index in range(draws):
    entry = data[index]
    try:
      metadata = json.loads(json.dumps(entry["metadata"]))
    except TypeError as e:
      raise ValueError(f"tasks: {task}: its metadata is not JSON ({e})"
                       ) from None
    question, answer = entry["question"], str(entry["answer"])
    if not (question.strip() and answer.strip() and score_answer(
        task, metadata, question, answer, answer) == 1.0):
      unscorable += 1
      continue
    if distinct_from is not None:
      if normalised(question) in seen:
        repeated += 1
        continue
      seen.add(normalised(question))
    rows.append({"id": f"{task}-{split}-{len(rows)}", "prompt": question,
                 "answer": answer, "domain": domain, "rubric_id": RUBRIC_ID,
                 "task": task, "metadata": metadata})
    if len(rows) == n:
      return rows
  raise ValueError(
      f"tasks: {task}: {draws} draws gave only {len(rows)} of the {n} "
      f"{split} rows wanted ({unscorable} with a reference its verifier "
      f"does not accept, {repeated} repeating a prompt); ask for fewer rows "
      "or widen the generator (--option)")


def sft_row(row: dict, scaffold: Sequence[str] = ()) -> dict | None:
  """The SFT row (orchestrator/data/sft_rows.py) of a generated row, None when
  its family or the row has no derivable reasoning. With a scaffold of three
  step names, the row's steps: how the family's trace goes
  (task_traces.METHODS), the trace, and the result."""
  reasoning = task_traces.trace(row["task"], row["metadata"])
  if reasoning is None:
    return None
  sft = {"id": row["id"], "prompt": row["prompt"]}
  if scaffold:
    plan, work, result = scaffold
    sft["steps"] = {plan: task_traces.METHODS[row["task"]], work: reasoning,
                    result: f"The answer is {row['answer']}."}
  else:
    sft["reasoning"] = reasoning
  return {**sft, "answer": row["answer"]}


def _shares(total: int, parts: int) -> list[int]:
  """total split evenly in `parts`, the remainder to the first ones."""
  return [total // parts + (i < total % parts) for i in range(parts)]


def _jsonl(rows: list[dict]) -> str:
  return "".join(json.dumps(row) + "\n" for row in rows)


def make(tasks: Sequence[str], train: int, heldout: int, seed: int,
         out: str | os.PathLike, option_items: Sequence[str] = (),
         scaffold: Sequence[str] = ()) -> dict:
  """Writes `out`/train.jsonl, heldout.jsonl, sft.jsonl and manifest.json;
  returns the manifest.

  train and heldout rows are split evenly across the tasks (the remainder
  to the first). Held-out rows come from another derived seed and never
  share a normalised prompt with a training row or with each other. SFT
  rows come from the training rows of families with traces, with steps
  when a scaffold (three step names: plan, work, result) is given; pass the
  same names as prompt.scaffold to the stages. Same arguments,
  byte-identical files. Each file is written whole (temporary name, then
  renamed). Raises ValueError for an existing non-empty `out`, unknown or
  repeated tasks, bad options, or a generator that cannot give enough rows.
  """
  from policy_worker.prepare import json_writer, write_atomically
  out = pathlib.Path(out)
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise ValueError(f"--out: {out} exists and is not an empty directory")
  if not tasks:
    raise ValueError("--tasks: name at least one task")
  if len(set(tasks)) != len(tasks):
    raise ValueError(f"--tasks: a task is named twice: {', '.join(tasks)}")
  for task in tasks:
    _check_task(task)
  if train < 0 or heldout < 0 or train + heldout == 0:
    raise ValueError("--train, --heldout: want counts >= 0, not both 0")
  options = parse_options(option_items, tasks)
  if scaffold:
    try:
      templates.check_scaffold(scaffold)
    except ValueError as e:
      raise ValueError(f"--{e}") from None
    if len(scaffold) != 3:
      raise ValueError(f"--scaffold: give three step names (plan, work, "
                       f"result), got {len(scaffold)}")
  splits = {"train": [], "heldout": [], "sft": []}
  counts = {}
  for task, n, m in zip(tasks, _shares(train, len(tasks)),
                        _shares(heldout, len(tasks))):
    rows = generate(task, n, seed, "train", options[task])
    held = generate(task, m, seed, "heldout", options[task], frozenset(
        normalised(row["prompt"]) for row in rows))
    sft = [s for s in (sft_row(r, scaffold) for r in rows) if s is not None]
    splits["train"] += rows
    splits["heldout"] += held
    splits["sft"] += sft
    counts[task] = {"train": len(rows), "heldout": len(held),
                    "sft": len(sft)}
    print(f"grar: {task}: {len(rows)} train, {len(held)} held-out, "
          f"{len(sft)} SFT rows", file=sys.stderr, flush=True)
  manifest = {
      "arguments": {"tasks": list(tasks), "train": train, "heldout": heldout,
                    "seed": seed, "options": list(option_items),
                    "scaffold": list(scaffold)},
      "counts": counts,
      "traces": [t for t in tasks if t in task_traces.TRACES],
  }
  out.mkdir(parents=True, exist_ok=True)
  for name in FILES[:3]:
    text = _jsonl(splits[name.removesuffix(".jsonl")])
    write_atomically(out / name, lambda f, text=text: f.write_text(
        text, encoding="utf-8"))
  write_atomically(out / FILES[3], json_writer(manifest))
  return manifest
