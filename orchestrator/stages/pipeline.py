"""`grar pipeline`: SFT, optionally SimPO, then GRPO, each stage starting
from the previous stage's LoRA checkpoint, in one directory.

The config is a `grar train` config (the GRPO stage, which also names the
model, the policy mesh and the LoRA rank and alpha every stage shares) plus
an `sft` section, an optional `simpo` section and an optional `eval`
section: a held-out evaluation (`grar eval`) of the base model and of every
stage's adapters once the stages are done. The pipeline directory holds
config.yaml, a directory per stage (sft/, simpo/, grpo/: each stage's own
run directory; eval/: the evaluation's output) and stages.json, which
records each finished stage's final checkpoint (the evaluation's directory),
written when the stage ends. `--resume` skips the stages recorded there,
starts an unfinished SFT, SimPO or eval stage over, and resumes an
unfinished GRPO stage from its last checkpoint.
"""

from collections.abc import Callable
import dataclasses
import datetime
import json
import os
import pathlib
import shutil
import sys

import jax
import yaml

from grar_config import strict
from orchestrator import config as config_lib
from orchestrator.rundir import inspect_run
from orchestrator import mesh as mesh_lib
from orchestrator.rundir import layout as run_dir_lib
from orchestrator.rundir import tracking
from orchestrator.stages import sft as sft_stage
from orchestrator.stages import simpo as simpo_stage
from orchestrator.stages import grpo as trainer
from orchestrator.config import RunConfig
from grar_config.model import ModelSpec

STAGES = "stages.json"
GRPO = "grpo"
EVAL = "eval"


@strict.config
class HeldOutEval:
  """The evaluation after the stages: every candidate answers each row of
  `data` (a dataset like data.path's, held out from training) greedily;
  see orchestrator/stages/evaluate.py for what is measured. The judge is the GRPO
  stage's (judge section)."""
  data: str = ""
  max_new_tokens: int = 64
  batch_size: int = 16

  def __post_init__(self):
    if not self.data:
      raise ValueError("data: required (held-out rows, e.g. the heldout.jsonl "
                       "that grar data make writes)")
    config_lib.positive(self, "max_new_tokens", "batch_size")


@strict.config
class PipelineConfig(RunConfig):
  """A GRPO run config with the stages before it."""
  sft: sft_stage.SFTConfig = sft_stage.SFTConfig()
  simpo: simpo_stage.SimPOConfig | None = None
  eval: HeldOutEval | None = None

  def __post_init__(self):
    super().__post_init__()
    if self.grpo.init_from:
      raise ValueError("grpo.init_from: the pipeline sets it (the last "
                       "stage's checkpoint); leave it empty")
    for name in ("sft", "simpo"):
      stage = getattr(self, name)
      for field in ("lora_rank", "lora_alpha"):
        if stage is not None and getattr(stage, field) != getattr(
            self.grpo, field):
          raise ValueError(
              f"{name}.{field}: {getattr(stage, field)} differs from "
              f"grpo.{field}={getattr(self.grpo, field)}; every stage trains "
              "the same adapters")

  def grpo_run(self, pipeline_dir: pathlib.Path,
               init_from: pathlib.Path) -> RunConfig:
    """The GRPO stage's own config: a run in pipeline_dir/grpo."""
    fields = {f.name: getattr(self, f.name)
              for f in dataclasses.fields(RunConfig)}
    return RunConfig(**{
        **fields, "output_dir": str(pipeline_dir), "run_name": GRPO,
        "grpo": dataclasses.replace(self.grpo, init_from=str(init_from))})


def load(path, overrides=()) -> PipelineConfig:
  return strict.load(PipelineConfig, path, overrides)


def _stages(cfg: PipelineConfig) -> list[tuple[str, Callable[
    [pathlib.Path, pathlib.Path | None], pathlib.Path]]]:
  """(name, runner) of the SFT and SimPO stages, in order."""
  stages = [("sft", lambda d, init: sft_stage.run_sft(
      cfg.sft, cfg.model, _policy_mesh(cfg), d, init, cfg.prompt))]
  if cfg.simpo is not None:
    stages.append(("simpo", lambda d, init: simpo_stage.run_simpo(
        cfg.simpo, cfg.model, _policy_mesh(cfg), d, init, cfg.prompt)))
  return stages


def _policy_mesh(cfg: PipelineConfig) -> jax.sharding.Mesh:
  mesh, _ = mesh_lib.plan_meshes(jax.devices(), cfg.mesh.policy, None,
                                 cfg.model)
  return mesh


def _done(pipeline_dir: pathlib.Path) -> dict[str, str]:
  """Finished stage -> its final checkpoint, relative to pipeline_dir."""
  path = pipeline_dir / STAGES
  return json.loads(path.read_text()) if path.exists() else {}


def _write_done(pipeline_dir: pathlib.Path, done: dict[str, str]) -> None:
  tmp = pipeline_dir / f".{STAGES}.tmp"
  tmp.write_text(json.dumps(done, indent=2) + "\n")
  os.replace(tmp, pipeline_dir / STAGES)


def _record(pipeline_dir: pathlib.Path, stage: str,
            checkpoint: pathlib.Path) -> None:
  done = _done(pipeline_dir)
  done[stage] = str(pathlib.Path(checkpoint).relative_to(pipeline_dir))
  _write_done(pipeline_dir, done)


def run(cfg: PipelineConfig, resume_dir: pathlib.Path | None = None
        ) -> trainer.RunResult:
  """Runs (or, with resume_dir, finishes) the pipeline; returns the GRPO
  stage's result (rows only for the steps trained in this call)."""
  if resume_dir is None:
    name = cfg.run_name or datetime.datetime.now().strftime(
        "%Y%m%d-%H%M%S-pipeline")
    pipeline_dir = run_dir_lib.create(cfg.output_dir, name,
                                      dataclasses.asdict(cfg))
    # run_dir.create makes checkpoints/, which only the stages have.
    (pipeline_dir / run_dir_lib.CHECKPOINTS).rmdir()
    _write_done(pipeline_dir, {})
  else:
    pipeline_dir = pathlib.Path(resume_dir)
    run_dir_lib.write_config(pipeline_dir, dataclasses.asdict(cfg))
  done = _done(pipeline_dir)
  init = None
  for name, runner in _stages(cfg):
    stage_dir = pipeline_dir / name
    if name in done:
      print(f"grar: pipeline: {name} finished earlier, skipped",
            file=sys.stderr, flush=True)
    else:
      if stage_dir.exists():
        # Only a recorded stage is finished; this one stopped part way.
        shutil.rmtree(stage_dir)
      print(f"grar: pipeline: {name}", file=sys.stderr, flush=True)
      _record(pipeline_dir, name, runner(stage_dir, init))
    init = pipeline_dir / _done(pipeline_dir)[name]
  grpo_cfg = cfg.grpo_run(pipeline_dir, init)
  grpo_dir = pipeline_dir / GRPO
  if GRPO in done:
    print(f"grar: pipeline: {GRPO} finished earlier, skipped",
          file=sys.stderr, flush=True)
    result = trainer.RunResult(grpo_dir, [])
  else:
    print(f"grar: pipeline: {GRPO} from {init}", file=sys.stderr, flush=True)
    result = (trainer.resume(grpo_dir, grpo_cfg) if grpo_dir.exists()
              else trainer.train(grpo_cfg))
    last = run_dir_lib.latest_manifest(grpo_dir)
    _record(pipeline_dir, GRPO,
            run_dir_lib.checkpoint_dir(grpo_dir, last.step))
    print(f"grar: pipeline: reward components per step: "
          f"{inspect_run.plot_rewards(grpo_dir)}", file=sys.stderr, flush=True)
  if cfg.eval is not None and EVAL not in done:
    _evaluate(cfg, pipeline_dir)
  return result


def candidates(cfg: PipelineConfig, pipeline_dir: pathlib.Path
               ) -> list[tuple[str, str]]:
  """(name, run directory) of what the eval stage compares, in training
  order: the base model ("" directory), then each stage's adapters, named
  for the stages that trained them (sft, sft+simpo, sft+simpo+grpo)."""
  names = ["sft"] + (["simpo"] if cfg.simpo is not None else []) + [GRPO]
  return [("base", "")] + [
      ("+".join(names[:i + 1]), str(pipeline_dir / name))
      for i, name in enumerate(names)]


def _evaluate(cfg: PipelineConfig, pipeline_dir: pathlib.Path) -> None:
  # Imported here: evaluate reads run directories with this module's
  # `trained`, so it imports this module.
  from orchestrator.stages import evaluate
  out = pipeline_dir / EVAL
  if out.exists():
    shutil.rmtree(out)  # unrecorded: stopped part way
  print(f"grar: pipeline: {EVAL} on {cfg.eval.data}", file=sys.stderr,
        flush=True)
  report = evaluate.evaluate(evaluate.EvalConfig(
      model=cfg.model, mesh=cfg.mesh,
      data=config_lib.DataConfig(path=cfg.eval.data), prompt=cfg.prompt,
      judge=cfg.judge,
      candidates=tuple(evaluate.Candidate(name, run)
                       for name, run in candidates(cfg, pipeline_dir)),
      max_prompt_tokens=cfg.rollout.max_prompt_tokens,
      max_new_tokens=cfg.eval.max_new_tokens,
      batch_size=cfg.eval.batch_size, output_dir=str(out)))
  # To the GRPO stage's tracked runs: that is the run the config names.
  grpo_dir = pipeline_dir / GRPO
  tracking.record_evaluation(
      cfg.tracking, grpo_dir, report.summaries,
      [*sorted((grpo_dir / "plots").glob("*.png")), report.plot],
      run_dir_lib.latest_manifest(grpo_dir).step)
  _record(pipeline_dir, EVAL, out)
  print(f"\nheld-out evaluation ({out}):\n{evaluate.table(report.summaries)}"
        f"\n\nheld-out accuracy per stage: {report.plot}\n", flush=True)


@dataclasses.dataclass(frozen=True)
class Trained:
  """What a run directory trained: LoRA adapters of `model`."""
  model: ModelSpec
  checkpoint: pathlib.Path
  rank: int
  alpha: float


def trained(run_dir: pathlib.Path) -> Trained:
  """The last checkpoint of a run directory: `grar train`'s, `grar sft`'s,
  `grar simpo`'s or `grar pipeline`'s (its GRPO stage). Raises ValueError
  naming the directory when it holds none."""
  run_dir = pathlib.Path(run_dir)
  if (run_dir / STAGES).exists():
    if GRPO not in _done(run_dir):
      raise ValueError(f"{run_dir}: the pipeline has not finished its "
                       f"{GRPO} stage; finish it with grar pipeline --resume")
    return trained(run_dir / GRPO)
  try:
    data = yaml.safe_load((run_dir / run_dir_lib.CONFIG).read_text())
  except OSError:
    raise ValueError(f"{run_dir}: not a run directory (no "
                     f"{run_dir_lib.CONFIG})") from None
  last = run_dir_lib.latest_manifest(run_dir)
  if last is None:
    raise ValueError(f"{run_dir}: no complete checkpoint yet")
  stage = next((s for s in ("sft", "simpo") if s in data), None)
  if stage is None:
    cfg = config_lib.load(run_dir / run_dir_lib.CONFIG)
    model, lora = cfg.model, cfg.grpo
  else:
    model = strict.from_dict(ModelSpec, data["model"], "model")
    section = {"sft": sft_stage.SFTConfig,
               "simpo": simpo_stage.SimPOConfig}[stage]
    lora = strict.from_dict(section, data[stage], stage)
  return Trained(model, run_dir_lib.checkpoint_dir(run_dir, last.step),
                 lora.lora_rank, lora.lora_alpha)
