"""`grar eval`: policies side by side on a held-out set.

Each candidate (the base model, or what a run trained) answers every
held-out question greedily; the answers get the training rewards' measures:
format accuracy (the strict template, format reward 1), exact-answer
accuracy (numeric tolerance), the judge's mean rubric score over the answers
it could score (unscorable ones are counted, never averaged in as 0) and the
mean answer length in tokens. Every answer goes to rows.jsonl.
"""

import dataclasses
import json
import math
import pathlib
import sys

import jax
import numpy as np
import yaml

from judge_server import server as judge_server_lib
from judge_server import strict
from orchestrator import dataset as dataset_lib
from orchestrator import mesh as mesh_lib
from orchestrator import pipeline
from orchestrator import rewards
from orchestrator import templates
from orchestrator import trainer
from orchestrator.config import DataConfig, JudgeRunConfig, MeshConfig
from policy_worker import checkpoint, models, rollout
from policy_worker.spec import ModelSpec
from protos import judge_pb2

ROWS = "rows.jsonl"
SUMMARY = "summary.json"


@dataclasses.dataclass(frozen=True)
class Candidate:
  """name: its column in the table. run: a run directory (`grar train`'s or
  `grar pipeline`'s), whose last checkpoint is evaluated; "" is the base
  model."""
  name: str
  run: str = ""

  def __post_init__(self):
    if not self.name.strip():
      raise ValueError("name: must not be empty")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  model: ModelSpec = ModelSpec()
  mesh: MeshConfig = MeshConfig()
  data: DataConfig = DataConfig(path="data/heldout-sample.jsonl")
  judge: JudgeRunConfig = JudgeRunConfig()
  candidates: tuple[Candidate, ...] = (Candidate("base"),)
  max_prompt_tokens: int = 512
  max_new_tokens: int = 64
  batch_size: int = 8  # questions generated together
  output_dir: str = "runs/eval"  # gets config.yaml, rows.jsonl, summary.json

  def __post_init__(self):
    for name in ("max_prompt_tokens", "max_new_tokens", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}: must be >= 1")
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


@dataclasses.dataclass(frozen=True)
class Report:
  output_dir: pathlib.Path
  summaries: dict[str, dict[str, float]]  # candidate -> metric -> value


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
  judge_shape = cfg.mesh.judge if cfg.judge.placement == "in-process" else None
  policy_mesh, judge_mesh = mesh_lib.plan_meshes(
      jax.devices(), cfg.mesh.policy, judge_shape, cfg.model,
      cfg.judge.server.backend.model if judge_shape else None)
  out.mkdir(parents=True, exist_ok=True)
  (out / "config.yaml").write_text(
      yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
  summaries = {}
  with trainer.judge_target(cfg, judge_mesh, out) as target, \
      trainer.judge_client(cfg, target) as client, \
      open(out / ROWS, "w", encoding="utf-8") as rows_file:
    try:
      client.wait_ready(cfg.judge.timeout_s)
    except TimeoutError as e:
      raise trainer.TrainError(
          f"{e}; start the judge server or fix judge.target") from None
    for candidate in cfg.candidates:
      print(f"grar: evaluating {candidate.name} on {len(examples)} held-out "
            "questions", file=sys.stderr, flush=True)
      rows = _answers(cfg, trained.get(candidate.name), examples, policy_mesh,
                      client, candidate.name)
      for row in rows:
        rows_file.write(json.dumps(row) + "\n")
      summaries[candidate.name] = summarise(rows)
  # NaN (no scored answer) is not JSON: null.
  (out / SUMMARY).write_text(json.dumps(
      {name: {k: None if isinstance(v, float) and math.isnan(v) else v
              for k, v in summary.items()}
       for name, summary in summaries.items()}, indent=2) + "\n")
  return Report(out, summaries)


def _answers(cfg: EvalConfig, trained, examples, mesh, client,
             name: str) -> list[dict]:
  """One row per example: the candidate's greedy answer and its measures."""
  model, tokenizer = models.build_model(cfg.model, mesh)
  if trained is not None:
    model = models.apply_lora(model, mesh, rank=trained.rank,
                              alpha=trained.alpha, seed=0)
    checkpoint.restore_lora(trained.checkpoint, model)
  generator = rollout.RolloutGenerator(
      model, tokenizer, mesh, max_prompt_tokens=cfg.max_prompt_tokens,
      max_new_tokens=cfg.max_new_tokens)
  for ex in examples:
    if (n := generator.prompt_length(templates.render(ex.prompt))
        ) > cfg.max_prompt_tokens:
      raise ValueError(f"max_prompt_tokens: {cfg.max_prompt_tokens} is too "
                       f"small for example {ex.id}, which needs {n}")
  rows = []
  for start in range(0, len(examples), cfg.batch_size):
    batch = examples[start:start + cfg.batch_size]
    # Without top_p, tunix's sampler takes the most likely token.
    rolls = generator.generate([templates.render(ex.prompt) for ex in batch],
                               1, temperature=1.0, top_p=None, seed=0)
    requests = trainer.judge_requests(name, batch, rolls.texts, 1,
                                       cfg.judge.aggregation)
    judged = client.score(requests)
    for ex, text, n, request in zip(batch, rolls.texts,
                                    rolls.completion_lengths, requests):
      result = judged[request.rollout_id]
      scored = result.status == judge_pb2.SCORED
      rows.append({
          "candidate": name, "example_id": ex.id, "prompt": ex.prompt,
          "reference_answer": ex.answer, "completion": text,
          "completion_tokens": int(n),
          "format": rewards.format_reward(text),
          "answer": rewards.exact_answer_reward(text, ex.answer),
          "judge_status": judge_pb2.Status.Name(result.status),
          "judge_reward": result.reward if scored else None,
          "judge_reason": result.reason})
  return rows


def summarise(rows: list[dict]) -> dict[str, float]:
  """The measures of one candidate's rows. judge_mean is over the scored
  rows only (NaN when none was), with the unscorable ones counted."""
  judged = [r["judge_reward"] for r in rows if r["judge_reward"] is not None]
  return {
      "examples": len(rows),
      "format_accuracy": float(np.mean([r["format"] == 1.0 for r in rows])),
      "answer_accuracy": float(np.mean([r["answer"] for r in rows])),
      "judge_mean": float(np.mean(judged)) if judged else math.nan,
      "judge_scored": len(judged),
      "judge_unscorable": len(rows) - len(judged),
      "answer_tokens_mean": float(np.mean([r["completion_tokens"]
                                           for r in rows])),
  }


_TABLE = (("format accuracy", "format_accuracy", ".3f"),
          ("answer accuracy", "answer_accuracy", ".3f"),
          ("judge mean", "judge_mean", ".3f"),
          ("judge unscorable", "judge_unscorable", ".0f"),
          ("answer tokens", "answer_tokens_mean", ".1f"))


def table(summaries: dict[str, dict[str, float]]) -> str:
  """Metrics by candidate; with two, a change column (second - first)."""
  names = list(summaries)
  header = ["metric", *names] + (["change"] if len(names) == 2 else [])
  lines = [header]
  for label, key, spec in _TABLE:
    values = [summaries[n][key] for n in names]
    line = [label, *(format(v, spec) for v in values)]
    if len(names) == 2:
      line.append(format(values[1] - values[0], "+" + spec))
    lines.append(line)
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(line, widths)))
                   for line in lines)
