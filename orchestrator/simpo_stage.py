"""`grar simpo`: SimPO on preference pairs, to lock in the reasoning format
after SFT without a reference model (policy_worker/simpo.py).

Pairs come from a file (orchestrator/preference_data.py); the prompt the
model sees is the reasoning prompt GRPO samples with. The stage directory
holds config.yaml, metrics.csv (loss, the chosen-minus-rejected reward
margin and preference accuracy per step, their eval_ counterparts on
held-out pairs), tensorboard/ and checkpoints/step_N in GRPO's LoRA
checkpoint layout.
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
from orchestrator.preference_data import load_pairs
from policy_worker import simpo
from grar_config.model import ModelSpec

_METRICS = ("rewards_chosen", "rewards_rejected", "rewards_margin",
            "rewards_accuracy", "log_probs_chosen", "log_probs_rejected")
COLUMNS = ("loss", "grad_norm", *_METRICS, "eval_loss",
           *(f"eval_{m}" for m in _METRICS))


@dataclasses.dataclass(frozen=True)
class SimPOConfig(stage_run.StageConfig):
  """SimPO; see stage_run.StageConfig for the shared fields. beta scales
  the length-normalised log-likelihood (the implicit reward); gamma is the
  target margin between chosen and rejected rewards (Meng et al. use beta
  2-2.5 and gamma/beta about 0.5)."""
  data: str = "data/pairs-sample.jsonl"
  beta: float = 2.0
  gamma: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    if self.beta <= 0:
      raise ValueError(f"beta: must be > 0, got {self.beta}")
    if self.gamma < 0:
      raise ValueError(f"gamma: must be >= 0, got {self.gamma}")


@dataclasses.dataclass(frozen=True)
class SimPORunConfig:
  """`grar simpo --config`: the stage alone. mesh: the policy's devices;
  init_lora: a LoRA checkpoint to start from, usually SFT's."""
  model: ModelSpec = ModelSpec()
  mesh: MeshShape = MeshShape(fsdp=1, tp=4)
  simpo: SimPOConfig = SimPOConfig()
  init_lora: str = ""
  output_dir: str = "runs"
  run_name: str = ""  # default: a timestamp and "-simpo"


def load(path, overrides=()) -> SimPORunConfig:
  return strict.load(SimPORunConfig, path, overrides)


def run_simpo(cfg: SimPOConfig, spec: ModelSpec, mesh: jax.sharding.Mesh,
              out_dir: pathlib.Path,
              init_lora: pathlib.Path | None = None) -> pathlib.Path:
  """Trains LoRA adapters of `spec` on `mesh` with SimPO for cfg.steps
  steps in a new directory `out_dir`; returns the final checkpoint directory
  (out_dir/checkpoints/step_N). Raises DatasetError / ValueError for bad
  data or config, and run_dir.RunDirError when out_dir is not empty."""
  rows, eval_rows = stage_run.read(cfg, load_pairs)
  model, tokenizer = stage_run.policy(spec, mesh, cfg, init_lora)

  def tokens(pair):
    # (prompt with BOS, chosen with EOS, rejected with EOS)
    return (1 + len(tokenizer.encode(templates.render(pair.prompt))),
            1 + len(tokenizer.encode(pair.chosen)),
            1 + len(tokenizer.encode(pair.rejected)))

  def encode(pairs, where):
    lengths = stage_run.encode_all(
        pairs, tokens, lambda n: n[0] + max(n[1:]), cfg.max_tokens, where)
    return list(zip(pairs, lengths))

  train, held = stage_run.train_eval(cfg, rows, eval_rows, encode)
  # Created once the data is known good, so a retry finds it free.
  run_dir = stage_run.create_dir(out_dir, spec, mesh, "simpo", cfg, init_lora)
  # One prompt and one response length for every batch: one compiled step.
  prompt_len = max(n[0] for _, n in train + held)
  response_len = max(max(n[1:]) for _, n in train + held)

  def collate(items):
    pairs = [pair for pair, _ in items]
    return simpo.encode_pairs(
        tokenizer, [templates.render(p.prompt) for p in pairs],
        [p.chosen for p in pairs], [p.rejected for p in pairs], prompt_len,
        response_len)

  metrics = stage_run.StageMetrics(
      run_dir, "simpo", COLUMNS,
      ("loss", "rewards_margin", "rewards_accuracy", "eval_loss"), cfg.steps)
  try:
    with jax.set_mesh(mesh):
      trainer = simpo.make_trainer(
          model, beta=cfg.beta, gamma=cfg.gamma,
          learning_rate=cfg.learning_rate, max_grad_norm=cfg.max_grad_norm,
          eval_every=cfg.eval_interval, emit=metrics.emit)
      trainer.train(stage_run.train_batches(train, cfg, collate),
                    stage_run.eval_batches(held, cfg.batch_size, collate))
  finally:
    metrics.close()
  return stage_run.save_final(run_dir, cfg.steps, model, trainer.optimizer)


def run(cfg: SimPORunConfig) -> pathlib.Path:
  """The `grar simpo` command: plans the mesh on this process's devices
  and runs the stage in output_dir/run_name."""
  policy_mesh, _ = mesh_lib.plan_meshes(jax.devices(), cfg.mesh, None,
                                        cfg.model)
  name = (cfg.run_name
          or datetime.datetime.now().strftime("%Y%m%d-%H%M%S-simpo"))
  return run_simpo(cfg.simpo, cfg.model, policy_mesh,
                   pathlib.Path(cfg.output_dir) / name,
                   pathlib.Path(cfg.init_lora) if cfg.init_lora else None)
