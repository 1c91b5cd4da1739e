"""The one runner of the SFT and SimPO stages, which differ only in what
they train (an `Objective`): their training fields, the LoRA policy on its
mesh, the held-out split, batches, the stage directory with metrics.csv and
a progress line, and the final LoRA checkpoint (GRPO's checkpoint layout, so
`grar train` can start from it)."""

from collections.abc import Callable, Sequence
import dataclasses
import datetime
import math
import pathlib
import sys
import time

import jax

from grar_config import strict
from grar_config.mesh import MeshShape
from grar_config.model import ModelSpec
from orchestrator import mesh as mesh_lib
from orchestrator.config import PromptConfig, positive
from orchestrator.data.batches import batch_for_step
from orchestrator.data.sft_rows import split_eval
from orchestrator.rundir import layout as run_dir_lib
from orchestrator.rundir import metrics as metrics_lib
from policy_worker import checkpoint, models


@strict.config
class StageConfig:
  """data: the training rows; eval_data: held-out rows ("" holds out
  eval_fraction of data). Held-out rows are evaluated in whole batches
  (a remainder is left out) before the first step and every `eval_every`
  steps (0: after the last step only; else it must divide steps, so the
  last step is evaluated).
  max_tokens: the longest sequence (prompt and completion) allowed.
  lora_rank / lora_alpha must match the GRPO run that starts from the
  checkpoint."""
  data: str = ""
  eval_data: str = ""
  eval_fraction: float = 0.1
  steps: int = 20
  batch_size: int = 4
  learning_rate: float = 1e-3
  max_grad_norm: float = 1.0
  lora_rank: int = 4
  lora_alpha: float = 8.0
  max_tokens: int = 512
  eval_every: int = 0
  seed: int = 0

  def __post_init__(self):
    positive(self, "steps", "batch_size", "learning_rate", "max_grad_norm",
              "lora_rank", "lora_alpha", "max_tokens")
    if not self.data:
      raise ValueError("data: required (a JSONL or parquet file, or a "
                       "dataset directory)")
    if not 0 < self.eval_fraction < 1:
      raise ValueError("eval_fraction: must be in (0, 1)")
    if self.eval_every < 0 or (self.eval_every
                               and self.steps % self.eval_every):
      raise ValueError(f"eval_every: must be 0 or divide steps={self.steps}, "
                       f"got {self.eval_every}")

  @property
  def eval_interval(self) -> int:
    """tunix's eval_every_n_steps."""
    return self.eval_every or self.steps


def encode_all(items: Sequence, encode: Callable, length: Callable[..., int],
               max_tokens: int, where: str) -> list:
  """encode(item) for every item, refusing any whose length(encoded) is over
  max_tokens with a message naming `where` and the row."""
  encoded = [encode(item) for item in items]
  for i, enc in enumerate(encoded):
    if (n := length(enc)) > max_tokens:
      raise ValueError(f"max_tokens: {max_tokens} is too small for {where}: "
                       f"its row {i} (counting rows from 0) needs {n} tokens")
  return encoded


def read(cfg: StageConfig, load: Callable[[str], list]) -> tuple[list, list]:
  """(rows of data, rows of eval_data or []): read before the model is
  built, so bad data fails fast."""
  return load(cfg.data), load(cfg.eval_data) if cfg.eval_data else []


def train_eval(cfg: StageConfig, rows: list, eval_rows: list,
               encode: Callable[[list, str], list]) -> tuple[list, list]:
  """(train, held out) encoded items; `encode(items, path)` checks lengths."""
  train = encode(rows, cfg.data)
  if cfg.eval_data:
    held = encode(eval_rows, cfg.eval_data)
    if len(held) < cfg.batch_size:
      raise ValueError(f"eval_data: {len(held)} rows, fewer than one batch "
                       f"(batch_size={cfg.batch_size})")
    held = held[:len(held) - len(held) % cfg.batch_size]
  else:
    train, held = split_eval(train, cfg.eval_fraction, cfg.batch_size,
                             cfg.seed)
  if len(train) < cfg.batch_size:
    raise ValueError(f"batch_size: {len(train)} rows to train on, fewer "
                     f"than batch_size={cfg.batch_size}")
  return train, held


def train_batches(train: list, cfg: StageConfig, collate: Callable) -> list:
  """cfg.steps batches, epochs of seeded permutations as in GRPO."""
  return [collate([train[i] for i in batch_for_step(
      len(train), cfg.batch_size, cfg.seed, step)])
          for step in range(1, cfg.steps + 1)]


def eval_batches(held: list, batch_size: int, collate: Callable) -> list:
  return [collate(held[i:i + batch_size])
          for i in range(0, len(held), batch_size)]


def create_dir(out_dir: pathlib.Path, spec: ModelSpec,
               mesh: jax.sharding.Mesh, section: str, cfg: StageConfig,
               prompt: PromptConfig,
               init_lora: pathlib.Path | None) -> pathlib.Path:
  """The stage directory with config.yaml, the stage's run config."""
  out_dir = pathlib.Path(out_dir)
  return run_dir_lib.create(str(out_dir.parent), out_dir.name, {
      "model": dataclasses.asdict(spec), "mesh": dict(mesh.shape),
      "prompt": dataclasses.asdict(prompt), section: dataclasses.asdict(cfg),
      "init_lora": str(init_lora) if init_lora else ""})


class StageMetrics(metrics_lib.MetricsWriter):
  """metrics.csv and TensorBoard, one row per step with fixed columns (an
  empty cell, and no TensorBoard point, where a step has no value: eval_*
  between evaluations, train columns at step 0, the evaluation before
  training), and a progress line."""

  def __init__(self, run_dir: pathlib.Path, stage: str,
               columns: Sequence[str], shown: Sequence[str],
               total_steps: int, out=sys.stderr):
    super().__init__(run_dir, run_dir_lib.METRICS, 1, total_steps, out)
    self._stage = stage
    self._wanted = list(columns)
    self._shown = list(shown)

  def emit(self, step: int, values: dict[str, float]) -> None:
    self.write({"step": step,
                **{c: values.get(c, math.nan) for c in self._wanted},
                "time_s": time.monotonic() - self._start})

  def progress(self, step: int, row) -> None:
    width = 20
    filled = int(width * step / self._total)
    shown = "  ".join(f"{c} {row[c]:.4f}" for c in self._shown
                      if not math.isnan(row[c]))
    eta = (f"  eta {row['time_s'] / step * (self._total - step):.0f}s"
           if step else "  (before training)")
    print(f"[{'#' * filled}{'.' * (width - filled)}] {self._stage} step "
          f"{step}/{self._total}  {shown}  {row['time_s']:.0f}s{eta}",
          file=self._out, flush=True)


def save_final(run_dir: pathlib.Path, step: int, model,
               optimizer) -> pathlib.Path:
  """Writes checkpoints/step_N (LoRA and optimizer state) and its manifest;
  returns the checkpoint directory."""
  directory = run_dir_lib.checkpoint_dir(run_dir, step)
  checkpoint.save(directory, model, optimizer)
  run_dir_lib.write_manifest(run_dir, run_dir_lib.Manifest(step, 0))
  return directory


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a stage trains, as the runner needs it.

  name: the config section and the progress line's label; columns: its
  metrics.csv columns (shown: those on the progress line); load(path): the
  rows of a data file; encode(tokenizer, cfg, rows, where, scaffold): the
  encoded items, their prompts rendered with the scaffold, refusing those
  over cfg.max_tokens (see encode_all);
  collate(tokenizer, items): the function that makes a batch of items, for
  every item of the run (train and held out) so one shape compiles once;
  make_trainer(model, cfg, tokenizer, emit): the tunix trainer.
  """
  name: str
  columns: Sequence[str]
  shown: Sequence[str]
  load: Callable[[str], list]
  encode: Callable
  collate: Callable
  make_trainer: Callable


def run_stage(objective: Objective, cfg: StageConfig, spec: ModelSpec,
              mesh: jax.sharding.Mesh, out_dir: pathlib.Path,
              init_lora: pathlib.Path | None = None,
              prompt: PromptConfig = PromptConfig()) -> pathlib.Path:
  """Trains LoRA adapters of `spec` on `mesh` for cfg.steps steps in a new
  directory `out_dir`, on rows written in prompt's template; returns the final checkpoint directory
  (out_dir/checkpoints/step_N), which policy_worker.checkpoint.restore_lora
  reads. Raises DatasetError / ValueError for bad data or config, and
  run_dir.RunDirError when out_dir is not empty."""
  rows, eval_rows = read(cfg, objective.load)
  scaffold = prompt.scaffold
  model, tokenizer = models.build_policy(
      spec, mesh, rank=cfg.lora_rank, alpha=cfg.lora_alpha, seed=cfg.seed,
      init_lora=init_lora)
  train, held = train_eval(
      cfg, rows, eval_rows,
      lambda items, where: objective.encode(tokenizer, cfg, items, where,
                                            scaffold))
  # Created once the data is known good, so a retry finds it free.
  run_dir = create_dir(out_dir, spec, mesh, objective.name, cfg, prompt,
                       init_lora)
  collate = objective.collate(tokenizer, train + held)
  metrics = StageMetrics(run_dir, objective.name, objective.columns,
                         objective.shown, cfg.steps)
  try:
    with jax.set_mesh(mesh):
      trainer = objective.make_trainer(model, cfg, tokenizer, metrics.emit)
      trainer.train(train_batches(train, cfg, collate),
                    eval_batches(held, cfg.batch_size, collate))
  finally:
    metrics.close()
  return save_final(run_dir, cfg.steps, model, trainer.optimizer)


def run_config(objective: Objective, section: type) -> type:
  """The config of `grar NAME --config`, the stage alone: model; mesh, the
  policy's devices; NAME, the stage's section; init_lora, a LoRA checkpoint
  to start from ("" for fresh adapters); prompt, the reasoning template
  (orchestrator.config.PromptConfig); output_dir; run_name (default: a
  timestamp and "-NAME")."""
  return strict.config(dataclasses.make_dataclass(
      f"{objective.name.upper()}RunConfig", [
          ("model", ModelSpec, dataclasses.field(default=ModelSpec())),
          ("mesh", MeshShape,
           dataclasses.field(default=MeshShape(fsdp=1, tp=4))),
          ("prompt", PromptConfig, dataclasses.field(default=PromptConfig())),
          (objective.name, section, dataclasses.field(default=section())),
          ("init_lora", str, ""), ("output_dir", str, "runs"),
          ("run_name", str, "")], frozen=True))


def run_alone(objective: Objective, cfg) -> pathlib.Path:
  """`grar sft` / `grar simpo` with a run_config(objective) config: plans
  the mesh on this process's devices and runs the stage in
  output_dir/run_name."""
  policy_mesh, _ = mesh_lib.plan_meshes(jax.devices(), cfg.mesh, None,
                                        cfg.model)
  name = (cfg.run_name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S-")
          + objective.name)
  return run_stage(objective, getattr(cfg, objective.name), cfg.model,
                   policy_mesh, pathlib.Path(cfg.output_dir) / name,
                   pathlib.Path(cfg.init_lora) if cfg.init_lora else None,
                   cfg.prompt)
