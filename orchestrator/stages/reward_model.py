"""`grar rm train`: a learned reward model (policy_worker/reward_model.py)
on preference pairs (orchestrator/data/preference_pairs.py), for the judge's
`kind: reward_model` backend.

The model sees the pair's prompt as the judge gets it (the dataset's
question, no template). The stage directory is SimPO's (runner): config.yaml,
metrics.csv (loss, margin and pairwise accuracy per step, their eval_
counterparts on held-out pairs), tensorboard/, checkpoints/step_N with the
adapters and the head, and among its files reward_model.NORMALISATION: the
fit that maps a raw reward into [0, 1], with what rebuilding the model
needs.
"""

import datetime
import json
import pathlib

import jax

from grar_config import strict
from grar_config.mesh import MeshShape
from grar_config.model import ModelSpec
from orchestrator import mesh as mesh_lib
from orchestrator.config import PromptConfig
from orchestrator.data.preference_pairs import load_pairs
from orchestrator.stages import runner, simpo as simpo_stage
from policy_worker import reward_model as rm_lib

_METRICS = ("rewards_chosen", "rewards_rejected", "rewards_margin",
            "rewards_accuracy")
COLUMNS = ("loss", "grad_norm", *_METRICS, "eval_loss",
           *(f"eval_{m}" for m in _METRICS))
SHOWN = ("loss", "rewards_accuracy", "eval_loss", "eval_rewards_accuracy")


@strict.config
class RewardModelConfig(runner.StageConfig):
  """The reward model; see runner.StageConfig for the shared fields
  (rewards_accuracy is the pairwise accuracy)."""
  data: str = "data/pairs-sample.jsonl"


def _fit(rm, tokenizer, cfg: RewardModelConfig, train) -> dict:
  """mean and std of the raw rewards of every training completion. A
  logistic of the z-score keeps the order, is smooth (no ties at clipped
  quantiles) and puts the typical training completion at 0.5."""
  pairs = [pair for (_, pair), _ in train]
  raw = rm_lib.rewards(
      rm, tokenizer, [p.prompt for p in pairs] * 2,
      [p.chosen for p in pairs] + [p.rejected for p in pairs],
      cfg.batch_size, cfg.max_tokens)
  return {"mean": float(raw.mean()), "std": float(max(raw.std(), 1e-6))}


def run_reward_model(cfg: RewardModelConfig, spec: ModelSpec,
                     mesh: jax.sharding.Mesh,
                     out_dir: pathlib.Path) -> pathlib.Path:
  """Trains the reward model in a new directory `out_dir` (as
  runner.run_stage) and writes the normalisation; returns the checkpoint
  directory."""
  rows, eval_rows = runner.read(cfg, load_pairs)
  rm, tokenizer = rm_lib.build(spec, mesh, cfg.lora_rank, cfg.lora_alpha,
                               cfg.seed)
  train, held = runner.train_eval(
      cfg, rows, eval_rows,
      # The prompt as the judge gets it: the question, no template.
      lambda pairs, where: simpo_stage.encode_pairs(
          tokenizer, [p.prompt for p in pairs], pairs, cfg.max_tokens,
          where))
  run_dir = runner.create_dir(out_dir, spec, mesh, "reward_model", cfg,
                              PromptConfig(), None)
  # SimPO's batches: one prompt and one response width for the whole run.
  collate = simpo_stage.collate(tokenizer, train + held)
  metrics = runner.StageMetrics(run_dir, "rm", COLUMNS, SHOWN, cfg.steps)
  try:
    with jax.set_mesh(mesh):
      trainer = rm_lib.make_trainer(
          rm, learning_rate=cfg.learning_rate,
          max_grad_norm=cfg.max_grad_norm, eval_every=cfg.eval_interval,
          emit=metrics.emit)
      trainer.train(runner.train_batches(train, cfg, collate),
                    runner.eval_batches(held, cfg.batch_size, collate))
      norm = _fit(rm, tokenizer, cfg, train)
  finally:
    metrics.close()
  directory = runner.save_final(run_dir, cfg.steps, rm, trainer.optimizer)
  (directory / rm_lib.NORMALISATION).write_text(json.dumps({
      **norm, "lora_rank": cfg.lora_rank, "lora_alpha": cfg.lora_alpha,
      "pooling": "last_token", "max_tokens": cfg.max_tokens}, indent=1))
  return directory


@strict.config
class RewardModelRunConfig:
  """`grar rm train --config`: model; mesh, its devices; reward_model, the
  training; output_dir; run_name (default: a timestamp and "-rm")."""
  model: ModelSpec = ModelSpec()
  mesh: MeshShape = MeshShape(fsdp=1, tp=4)
  reward_model: RewardModelConfig = RewardModelConfig()
  output_dir: str = "runs"
  run_name: str = ""


def load(path, overrides=()) -> RewardModelRunConfig:
  return strict.load(RewardModelRunConfig, path, overrides)


def run(cfg: RewardModelRunConfig) -> pathlib.Path:
  """The `grar rm train` command: plans the mesh on this process's devices
  and trains in output_dir/run_name."""
  policy_mesh, _ = mesh_lib.plan_meshes(jax.devices(), cfg.mesh, None,
                                        cfg.model)
  name = (cfg.run_name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S-")
          + "rm")
  return run_reward_model(cfg.reward_model, cfg.model, policy_mesh,
                          pathlib.Path(cfg.output_dir) / name)
