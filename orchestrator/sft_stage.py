"""`grar sft`: LoRA SFT on reasoning rows, the warm start before GRPO.

The model learns to write `<reasoning>…</reasoning>\n<answer>…</answer>`
after the reasoning prompt (orchestrator/templates.py) that GRPO samples
with; only completion tokens are targets. The stage directory holds
config.yaml, metrics.csv (train loss per step, eval loss on held-out rows),
tensorboard/ and checkpoints/step_N in GRPO's LoRA checkpoint layout.
"""

import dataclasses
import datetime
import pathlib

import jax

from grar_config import strict
from grar_config.mesh import MeshShape
from orchestrator import mesh as mesh_lib
from orchestrator import stage_run
from orchestrator import templates
from orchestrator.sft_data import completion, load_sft
from policy_worker import sft
from grar_config.model import ModelSpec

COLUMNS = ("loss", "perplexity", "grad_norm", "eval_loss", "eval_perplexity")


@dataclasses.dataclass(frozen=True)
class SFTConfig(stage_run.StageConfig):
  """LoRA SFT; see stage_run.StageConfig for the fields."""
  data: str = "data/sft-sample.jsonl"


@dataclasses.dataclass(frozen=True)
class SFTRunConfig:
  """`grar sft --config`: the stage alone. mesh: the policy's devices;
  init_lora: a LoRA checkpoint to start from ("" for fresh adapters)."""
  model: ModelSpec = ModelSpec()
  mesh: MeshShape = MeshShape(fsdp=1, tp=4)
  sft: SFTConfig = SFTConfig()
  init_lora: str = ""
  output_dir: str = "runs"
  run_name: str = ""  # default: a timestamp and "-sft"


def load(path, overrides=()) -> SFTRunConfig:
  return strict.load(SFTRunConfig, path, overrides)


def run_sft(cfg: SFTConfig, spec: ModelSpec, mesh: jax.sharding.Mesh,
            out_dir: pathlib.Path,
            init_lora: pathlib.Path | None = None) -> pathlib.Path:
  """Trains LoRA adapters of `spec` on `mesh` for cfg.steps steps in a new
  directory `out_dir`; returns the final checkpoint directory
  (out_dir/checkpoints/step_N), which policy_worker.checkpoint.restore_lora
  reads. Raises DatasetError / ValueError for bad data or config, and
  run_dir.RunDirError when out_dir is not empty."""
  rows, eval_rows = stage_run.read(cfg, load_sft)
  model, tokenizer = stage_run.policy(spec, mesh, cfg, init_lora)

  def encode(rows, where):
    return stage_run.encode_all(
        rows, lambda r: sft.encode(tokenizer, templates.render(r.prompt),
                                   completion(r.reasoning, r.answer)),
        lambda enc: len(enc[0]), cfg.max_tokens, where)

  train, held = stage_run.train_eval(cfg, rows, eval_rows, encode)
  # Created once the data is known good, so a retry finds it free.
  run_dir = stage_run.create_dir(out_dir, spec, mesh, "sft", cfg, init_lora)
  # One sequence length for every batch: one compiled step.
  length = max(len(ids) for ids, _ in train + held)
  pad = tokenizer.pad_id()

  def collate(items):
    return sft.batch(items, length, pad)

  metrics = stage_run.StageMetrics(run_dir, "sft", COLUMNS,
                                   ("loss", "eval_loss"), cfg.steps)
  try:
    with jax.set_mesh(mesh):
      trainer = sft.make_trainer(
          model, learning_rate=cfg.learning_rate,
          max_grad_norm=cfg.max_grad_norm, eval_every=cfg.eval_interval,
          pad_id=pad, emit=metrics.emit)
      trainer.train(stage_run.train_batches(train, cfg, collate),
                    stage_run.eval_batches(held, cfg.batch_size, collate))
  finally:
    metrics.close()
  return stage_run.save_final(run_dir, cfg.steps, model, trainer.optimizer)


def run(cfg: SFTRunConfig) -> pathlib.Path:
  """The `grar sft` command: plans the mesh on this process's devices and
  runs the stage in output_dir/run_name."""
  policy_mesh, _ = mesh_lib.plan_meshes(jax.devices(), cfg.mesh, None,
                                        cfg.model)
  name = cfg.run_name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S-sft")
  return run_sft(cfg.sft, cfg.model, policy_mesh,
                 pathlib.Path(cfg.output_dir) / name,
                 pathlib.Path(cfg.init_lora) if cfg.init_lora else None)
