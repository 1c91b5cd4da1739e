"""`grar eval`: policies side by side on a held-out set.

Each candidate (the base model, or what a run trained) answers every
held-out question greedily; the answers get the training rewards' measures:
format accuracy (the strict template, and every step of the scaffold in
order where prompt.scaffold names one: format reward 1), answer accuracy
(the `answer` reward 1), each with its 95 % Wilson interval, the judge's mean
rubric score over the answers it could score (unscorable ones are counted,
never averaged in as 0) and the mean answer length in tokens; overall and
per task. Each candidate after the first is compared with the one before
it on the same questions: the paired difference in answer accuracy with
Newcombe's 95 % interval. Every answer goes to rows.jsonl; summary.json and
plots/heldout_accuracy.png hold the measures.
"""

import concurrent.futures
import dataclasses
import json
import math
import pathlib
import sys
import time

import jax
import matplotlib
matplotlib.use("Agg")  # files only; no display on a TPU VM or in CI
import matplotlib.pyplot as plt
import numpy as np

from judge_server import server as judge_server_lib
from grar_config import strict
from judge_server import validation
from orchestrator.data import dataset as dataset_lib
from orchestrator.judge import client as judge_client
from orchestrator.judge import target as judge_target
from orchestrator.judge import teacher as teacher_lib
from orchestrator.judge import validate as judge_validate
from orchestrator.judge.requests import judge_requests
from orchestrator import mesh as mesh_lib
from orchestrator.stages import pipeline
from orchestrator import rewards
from orchestrator import stats
from orchestrator.rundir import layout as run_dir_lib
from orchestrator.data import templates
from orchestrator.config import (DataConfig, JudgeRunConfig, MeshConfig,
                                 PromptConfig)
from policy_worker import grpo, models, rollout
from grar_config.model import ModelSpec
from protos import judge_pb2

ROWS = "rows.jsonl"
SUMMARY = "summary.json"
PLOT = "plots/heldout_accuracy.png"


@strict.config
class Candidate:
  """name: its column in the table. run: a run directory (`grar train`'s or
  `grar pipeline`'s), whose last checkpoint is evaluated; "" is the base
  model."""
  name: str
  run: str = ""

  def __post_init__(self):
    if not self.name.strip():
      raise ValueError("name: must not be empty")


@strict.config
class EvalConfig:
  model: ModelSpec = ModelSpec()
  mesh: MeshConfig = MeshConfig()
  data: DataConfig = DataConfig(path="data/heldout-sample.jsonl")
  prompt: PromptConfig = PromptConfig()
  judge: JudgeRunConfig = JudgeRunConfig()
  candidates: tuple[Candidate, ...] = (Candidate("base"),)
  max_prompt_tokens: int = 512
  max_new_tokens: int = 64
  # Questions generated together, every call the same shape (a short last
  # batch is padded), so the sampler compiles once per candidate.
  batch_size: int = 8
  # Completions sampled per question (temperature 1) to measure each
  # candidate's KL to the judge's model as a teacher (TokenLogprobs): the
  # teacher_kl of a row is the mean over its samples of the mean over their
  # tokens of log p_candidate - log p_teacher. 0: not measured.
  teacher_samples: int = 0
  # What GRPO would see on these questions: group_samples completions per
  # question sampled at group_temperature (a run's rollout.num_generations
  # and rollout.temperature), scored by the answer reward. Each row gets
  # group_successes (how many were right); the summary sampled_accuracy
  # (their mean), pass_at_g (a question with at least one right) and
  # flat_group_fraction (all right or all wrong: a group whose answer
  # reward has no spread, which teaches GRPO nothing). Measured on training
  # prompts, it tells which task and warm start GRPO can learn from:
  # pass@G well above greedy accuracy, few flat groups. 0: not measured.
  group_samples: int = 0
  group_temperature: float = 1.0
  output_dir: str = "runs/eval"  # gets config.yaml, rows.jsonl, summary.json

  def __post_init__(self):
    for name in ("max_prompt_tokens", "max_new_tokens", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}: must be >= 1")
    for name in ("teacher_samples", "group_samples"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name}: must be >= 0")
    if self.group_temperature <= 0:
      raise ValueError("group_temperature: must be > 0")
    if not self.candidates:
      raise ValueError("candidates: give at least one")
    names = [c.name for c in self.candidates]
    if len(set(names)) != len(names):
      raise ValueError(f"candidates: names must be unique, got {names}")
    if self.judge.placement == "ray":
      raise ValueError("judge.placement: eval runs the judge in-process, as "
                       "a subprocess or remote, not on ray")


def load(path, overrides=()) -> EvalConfig:
  return strict.load(EvalConfig, path, overrides)


class EvalError(RuntimeError):
  """An evaluation that cannot go on (its judge failed its check)."""


def _say(message: str) -> None:
  print(f"grar: {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Report:
  output_dir: pathlib.Path
  summaries: dict[str, dict]  # candidate -> summarise()'s measures
  plot: pathlib.Path  # heldout_accuracy.png


def evaluate(cfg: EvalConfig) -> Report:
  out = pathlib.Path(cfg.output_dir)
  if out.exists() and any(out.iterdir()):
    raise ValueError(f"output_dir: {out} exists and is not empty")
  trained = {}
  for c in (c for c in cfg.candidates if c.run):
    try:
      trained[c.name] = pipeline.trained(pathlib.Path(c.run))
    except ValueError as e:
      raise ValueError(f"candidates: {c.name}: {e}") from None
    if trained[c.name].model != cfg.model:
      raise ValueError(f"candidates: {c.name}'s run trained "
                       f"{trained[c.name].model.name}, not model "
                       f"{cfg.model.name}")
  packs = judge_server_lib.load_packs(cfg.judge.server.rubric_dir)
  examples = dataset_lib.load_jsonl(cfg.data.path, packs.keys())
  policy_mesh, judge_mesh = mesh_lib.plan_for(cfg, jax.devices())
  out.mkdir(parents=True, exist_ok=True)
  run_dir_lib.write_config(out, dataclasses.asdict(cfg))
  summaries, previous = {}, None
  with judge_target.connected(cfg, judge_mesh, out, _say) as client, \
      open(out / ROWS, "w", encoding="utf-8") as rows_file:
    # The numbers a run's start-up check gives, for this judge on this set.
    judge_validate.check(client, examples, cfg.judge.validation,
                         cfg.judge.aggregation, 0, out, _say, EvalError)
    teacher = None
    if cfg.teacher_samples:
      teacher = _Teacher(client, cfg.teacher_samples)
    generators = {}
    for candidate in cfg.candidates:
      print(f"grar: evaluating {candidate.name} on {len(examples)} held-out "
            "questions", file=sys.stderr, flush=True)
      rows = _answers(cfg, trained.get(candidate.name), examples, policy_mesh,
                      client, candidate.name, generators, teacher)
      for row in rows:
        rows_file.write(json.dumps(row) + "\n")
      summaries[candidate.name] = summarise(rows)
      if previous is not None:
        summaries[candidate.name].update(paired(*previous, rows))
      previous = candidate.name, rows
  (out / SUMMARY).write_text(
      json.dumps(validation.json_ready(summaries), indent=2) + "\n")
  return Report(out, summaries, plot_accuracy(summaries, out))


@dataclasses.dataclass
class _Teacher:
  """The judge as a teacher: `samples` completions per question go to its
  TokenLogprobs. `checked`: the candidates' tokenizer was checked."""
  client: object
  samples: int
  checked: bool = False

  def kl(self, generator, model, tokenizer, mesh, prompts: list[str],
         rollout_id: str, seed: int) -> list[float | None]:
    """Per prompt, the mean teacher_kl of its samples (None when the
    teacher answered none of them)."""
    if not self.checked:
      try:
        self.client.check_tokenizer(tokenizer)
      except judge_client.TeacherMismatch as e:
        raise EvalError(f"teacher_samples: {e}") from None
      self.checked = True
    rolls = generator.generate(prompts, self.samples, temperature=1.0,
                               top_p=1.0, seed=seed)
    pad = tokenizer.pad_id()
    student = grpo.completion_logps(model, rolls, mesh, pad)
    ids = [f"{rollout_id}-{i}" for i in range(len(rolls.texts))]
    teacher, answered, _ = teacher_lib.logps(
        ids, self.client.token_logprobs(
            teacher_lib.requests(ids, rolls, pad)), student.shape)
    kl = np.where(answered, teacher_lib.kl(
        student, teacher, rolls.completion_tokens != pad), np.nan)
    per_prompt = kl.reshape(len(prompts), self.samples)
    return [float(np.nanmean(k)) if np.isfinite(k).any() else None
            for k in per_prompt]


def _answers(cfg: EvalConfig, trained, examples, mesh, client, name: str,
             generators: dict, teacher: _Teacher | None) -> list[dict]:
  """One row per example: the candidate's greedy answer and its measures
  (and its teacher_kl, with a teacher).
  generators: one RolloutGenerator per model structure (None for the base,
  (rank, alpha) for LoRA), reused by candidates of that structure: a new one
  compiles the sampler again, about a minute on the 270M."""
  if trained is None:
    model, tokenizer = models.build_model(cfg.model, mesh)
  else:
    model, tokenizer = models.build_policy(
        cfg.model, mesh, rank=trained.rank, alpha=trained.alpha, seed=0,
        init_lora=trained.checkpoint)
  scaffold = cfg.prompt.scaffold
  lengths = [rollout.prompt_length(tokenizer,
                                   templates.render(ex.prompt, scaffold))
             for ex in examples]
  for ex, n in zip(examples, lengths):
    if n > cfg.max_prompt_tokens:
      raise ValueError(f"max_prompt_tokens: {cfg.max_prompt_tokens} is too "
                       f"small for example {ex.id}, which needs {n}")
  structure = None if trained is None else (trained.rank, trained.alpha)
  if structure in generators:
    generators[structure].sync(model)
  else:
    generators[structure] = rollout.RolloutGenerator(
        # Padded to the longest prompt asked, not max_prompt_tokens: the
        # passes over prompts do no work on padding.
        model, tokenizer, mesh, max_prompt_tokens=max(lengths),
        max_new_tokens=cfg.max_new_tokens)
  generator = generators[structure]
  size = min(cfg.batch_size, len(examples))
  rows, pending, t_start = [], None, time.monotonic()
  # The judge scores batch k while the policy generates batch k + 1: one
  # batch in flight, so a failing judge stops the eval a batch later.
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    for start in range(0, len(examples), size):
      batch = examples[start:start + size]
      t0 = time.monotonic()
      texts, lengths = _generate(generator, batch, size, scaffold)
      kls = (teacher.kl(generator, model, tokenizer, mesh,
                        _prompts(batch, size, scaffold), f"{name}-{start}",
                        start)[:len(batch)]
             if teacher else [None] * len(batch))
      successes = (_group_successes(generator, batch, size, scaffold,
                                    cfg.group_samples, cfg.group_temperature,
                                    start)
                   if cfg.group_samples else [{}] * len(batch))
      t1 = time.monotonic()
      if pending is not None:
        rows += _rows(name, scaffold, *pending)
      requests = judge_requests(name, batch, texts, 1,
                                         cfg.judge.aggregation)
      pending = (batch, texts, lengths, kls, successes, requests,
                 pool.submit(client.score, requests))
      # Where the time goes: generating, or waiting for the judge.
      print(f"grar: eval {name}: {start + len(batch)}/{len(examples)} "
            f"answered  generate {t1 - t0:.1f} s "
            f"({lengths.sum() / (t1 - t0):.1f} tok/s)  judge wait "
            f"{time.monotonic() - t1:.1f} s  {time.monotonic() - t_start:.0f}"
            " s", file=sys.stderr, flush=True)
    rows += _rows(name, scaffold, *pending)
  return rows


def _generate(generator, batch, size: int, scaffold: tuple[str, ...]
              ) -> tuple[list[str], np.ndarray]:
  """(texts, [len(batch)] token counts): greedy answers to batch. A batch
  shorter than size is padded with copies of its last prompt: another batch
  shape would compile the sampler again (minutes on the 270M), and a copy
  stops when its original does, so it adds no decode steps."""
  prompts = _prompts(batch, size, scaffold)
  # Without top_p, tunix's sampler takes the most likely token.
  rolls = generator.generate(prompts, 1, temperature=1.0, top_p=None, seed=0)
  return rolls.texts[:len(batch)], rolls.completion_lengths[:len(batch)]


def _group_successes(generator, batch, size: int, scaffold: tuple[str, ...],
                     samples: int, temperature: float, seed: int
                     ) -> list[dict]:
  """Per question of batch, its row's group_successes (how many of
  `samples` completions sampled at `temperature` the answer reward counts
  right) and group_samples."""
  rolls = generator.generate(_prompts(batch, size, scaffold), samples,
                             temperature=temperature, top_p=1.0, seed=seed)
  return [{"group_successes": sum(
              rewards.answer_reward(text, ex) == 1.0
              for text in rolls.texts[i * samples:(i + 1) * samples]),
           "group_samples": samples} for i, ex in enumerate(batch)]


def _prompts(batch, size: int, scaffold: tuple[str, ...]) -> list[str]:
  """The batch's prompts, padded to `size` (_generate says why)."""
  prompts = [templates.render(ex.prompt, scaffold) for ex in batch]
  return prompts + prompts[-1:] * (size - len(prompts))


def _rows(name: str, scaffold: tuple[str, ...], batch, texts, lengths, kls,
          successes, requests, judged) -> list[dict]:
  """The rows of one generated batch, once its judge call (a future) ends."""
  by_id = judged.result()
  rows = []
  for ex, text, n, kl, group, request in zip(batch, texts, lengths, kls,
                                            successes, requests):
    result = by_id[request.rollout_id]
    scored = result.status == judge_pb2.SCORED
    rows.append({
        "candidate": name, "example_id": ex.id,
        "task": ex.task or ex.domain, "prompt": ex.prompt,
        "reference_answer": ex.answer, "completion": text,
        "completion_tokens": int(n),
        "format": rewards.format_reward(text, scaffold),
        "answer": rewards.answer_reward(text, ex),
        "judge_status": judge_pb2.Status.Name(result.status),
        "judge_reward": result.reward if scored else None,
        "judge_reason": result.reason, "teacher_kl": kl, **group})
  return rows


def summarise(rows: list[dict]) -> dict:
  """The measures of one candidate's rows (they must not be empty):
  examples; format_accuracy, the fraction of rows with format reward 1.0;
  answer_accuracy, the fraction with answer reward 1.0 (a task's verifier
  may give partial credit, which counts as wrong here); each with its 95 %
  Wilson interval as [low, high] in *_ci; judge_mean over the scored rows
  only (NaN when none was), with judge_scored and judge_unscorable counted;
  answer_tokens_mean; teacher_kl and its 95 % interval in teacher_kl_ci
  where rows have one; and per_task: task name -> examples, both
  accuracies with intervals and judge_mean of its rows, tasks in name
  order."""
  scored = sum(r["judge_reward"] is not None for r in rows)
  kls = [r["teacher_kl"] for r in rows if r.get("teacher_kl") is not None]
  teacher = {}
  if kls:
    mean, low, high = stats.mean_interval(kls)
    teacher = {"teacher_kl": mean, "teacher_kl_ci": [low, high]}
  return {
      **_measures(rows), **teacher, **_group_measures(rows),
      "judge_scored": scored,
      "judge_unscorable": len(rows) - scored,
      "answer_tokens_mean": float(np.mean([r["completion_tokens"]
                                           for r in rows])),
      "per_task": {task: _measures([r for r in rows if r["task"] == task])
                   for task in sorted({r["task"] for r in rows})},
  }


def paired(previous_name: str, previous: list[dict], rows: list[dict]
           ) -> dict:
  """How rows' candidate differs from previous's, which answered the same
  questions: paired_with, previous's name; paired_n, the questions;
  answer_accuracy_diff, rows' answer accuracy minus previous's, with its
  95 % interval (stats.newcombe_paired) as [low, high] in
  answer_accuracy_diff_ci; b, the questions only rows answered right, and
  c, those only previous did (the difference is (b - c) / paired_n).
  Raises ValueError when the two answered other questions, or in another
  order: a difference between other questions measures nothing."""
  ids = [r["example_id"] for r in rows]
  theirs = [r["example_id"] for r in previous]
  if theirs != ids:
    at = next((i for i, (x, y) in enumerate(zip(theirs, ids)) if x != y),
              min(len(theirs), len(ids)))
    raise ValueError(
        f"cannot pair with {previous_name}: not the same questions "
        f"({len(theirs)} there, {len(ids)} here, first differing at row "
        f"{at + 1})")
  pairs = [(r["answer"] == 1.0, p["answer"] == 1.0)
           for r, p in zip(rows, previous)]
  both = sum(r and p for r, p in pairs)
  b = sum(r and not p for r, p in pairs)
  c = sum(p and not r for r, p in pairs)
  n = len(pairs)
  return {"paired_with": previous_name, "paired_n": n,
          "answer_accuracy_diff": (b - c) / n,
          "answer_accuracy_diff_ci": list(
              stats.newcombe_paired(both, b, c, n - both - b - c)),
          "b": b, "c": c}


def _group_measures(rows: list[dict]) -> dict:
  """sampled_accuracy (with its 95 % interval over questions), pass_at_g,
  flat_group_fraction and group_samples of rows with group_successes
  (EvalConfig.group_samples says what they mean); {} without."""
  wins = [r["group_successes"] for r in rows if "group_successes" in r]
  if not wins:
    return {}
  samples = rows[0]["group_samples"]
  rates = [w / samples for w in wins]
  mean, low, high = stats.mean_interval(rates)
  return {"group_samples": samples, "sampled_accuracy": mean,
          "sampled_accuracy_ci": [low, high],
          "pass_at_g": sum(w > 0 for w in wins) / len(wins),
          "flat_group_fraction": sum(w in (0, samples) for w in wins)
          / len(wins)}


def _measures(rows: list[dict]) -> dict:
  """examples, format and answer accuracy with [low, high] intervals, and
  the judge mean over scored rows (NaN if none)."""
  out = {"examples": len(rows)}
  for measure in ("format", "answer"):
    hits = sum(r[measure] == 1.0 for r in rows)
    out[f"{measure}_accuracy"] = hits / len(rows)
    out[f"{measure}_accuracy_ci"] = list(stats.wilson(hits, len(rows)))
  judged = [r["judge_reward"] for r in rows if r["judge_reward"] is not None]
  out["judge_mean"] = float(np.mean(judged)) if judged else math.nan
  return out


_TABLE = (("format accuracy", "format_accuracy", ".3f"),
          ("answer accuracy", "answer_accuracy", ".3f"),
          ("judge mean", "judge_mean", ".3f"),
          ("judge unscorable", "judge_unscorable", ".0f"),
          ("teacher kl", "teacher_kl", ".4f"),
          ("sampled answer accuracy", "sampled_accuracy", ".3f"),
          ("pass@G", "pass_at_g", ".3f"),
          ("flat groups (answer)", "flat_group_fraction", ".3f"),
          ("answer tokens", "answer_tokens_mean", ".1f"),
          ("examples", "examples", ".0f"))


def table(summaries: dict[str, dict]) -> str:
  """Metrics by candidate, accuracies as `value [low, high]` (95 %); with
  two candidates a change column (second - first); then each paired answer
  accuracy difference (paired()'s); then answer accuracy by task. Takes
  evaluate's summaries or summary.json read back (null: NaN)."""
  names = list(summaries)
  change = len(names) == 2
  lines = [["metric", *names] + (["change"] if change else [])]
  for label, key, spec in _TABLE:
    if any(key not in summaries[n] for n in names):
      continue  # teacher_kl, measured only with a teacher
    line = [label, *(_cell(summaries[n], key, spec) for n in names)]
    if change:
      first, second = (_number(summaries[n][key]) for n in names)
      line.append(format(second - first, "+" + spec))
    lines.append(line)
  diffs = [["answer accuracy, paired", "difference [95 %]", "n", "b", "c"]]
  for name in names:
    s = summaries[name]
    if "answer_accuracy_diff" in s:
      diffs.append([f"{name} - {s['paired_with']}",
                    _cell(s, "answer_accuracy_diff", "+.3f"),
                    *(str(s[k]) for k in ("paired_n", "b", "c"))])
  paired_lines = ""
  if len(diffs) > 1:
    paired_lines = (f"\n\n{_aligned(diffs)}\n(b: right only in the first "
                    "named, c: only in the second; Newcombe's interval)")
  tasks = summaries[names[0]]["per_task"]
  by_task = [["answer accuracy by task", "n", *names]]
  for task, measures in tasks.items():
    by_task.append([task, str(measures["examples"]),
                    *(_cell(summaries[n]["per_task"][task], "answer_accuracy",
                            ".3f") for n in names)])
  return f"{_aligned(lines)}{paired_lines}\n\n{_aligned(by_task)}"


def _number(value) -> float:
  return math.nan if value is None else value


def _cell(measures: dict, key: str, spec: str) -> str:
  text = format(_number(measures[key]), spec)
  if f"{key}_ci" in measures:
    low, high = measures[f"{key}_ci"]
    text += f" [{low:{spec}}, {high:{spec}}]"
  return text


def _aligned(lines: list[list[str]]) -> str:
  """Plain-text columns: the first left-aligned, the others right-aligned."""
  widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
  return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(line, widths)))
                   for line in lines)


def plot_accuracy(summaries: dict[str, dict],
                  out_dir: pathlib.Path) -> pathlib.Path:
  """Writes out_dir/plots/heldout_accuracy.png and returns its path: format
  and answer accuracy of each candidate, in the order given (base, then each
  stage), with their 95 % intervals as error bars."""
  names = list(summaries)
  x = np.arange(len(names))
  width = 0.38
  fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(names) + 2), 4))
  for i, measure in enumerate(("format", "answer")):
    values = np.array([summaries[n][f"{measure}_accuracy"] for n in names])
    ci = np.array([summaries[n][f"{measure}_accuracy_ci"] for n in names])
    ax.bar(x + (i - 0.5) * width, values, width, label=measure,
           yerr=[values - ci[:, 0], ci[:, 1] - values], capsize=4)
  examples = summaries[names[0]]["examples"]
  ax.set(xticks=x, xticklabels=names, ylim=(0, 1.05), ylabel="accuracy",
         title=f"Held-out accuracy, {examples} questions (95 % intervals)")
  ax.legend()
  path = pathlib.Path(out_dir) / PLOT
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
