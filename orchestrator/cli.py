"""The `grar` command line.

Heavy imports (jax, tunix) happen inside the commands that need them, so
`grar judge score` and `--help` start fast and work without jax.
"""

import argparse
import os
import pathlib
import sys

from grar_config.strict import ConfigError
from orchestrator import devices, version
from orchestrator.judge import commands as judge_commands

# The packages whose own `raise ValueError(...)` speaks to the user.
_OURS = tuple(str(pathlib.Path(__file__).resolve().parents[1] / name) + os.sep
              for name in ("orchestrator", "judge_server", "policy_worker"))


def _claim_devices(cfg) -> None:
  """Shows this process only the devices its plan uses, before jax loads.

  In-process, the trainer holds both meshes: on a CPU host that needs enough
  virtual devices (the flag only shapes the CPU platform, harmless
  elsewhere). With the judge in its own process, the trainer must leave the
  judge's devices alone: it claims the first mesh.policy.size of them.
  Both use jax's persistent compilation cache (devices.use_compile_cache).
  """
  devices.use_compile_cache()
  if cfg.judge.placement == "subprocess":
    os.environ.update(devices.process_env(
        devices.detect_platform(), 0, cfg.mesh.policy.size,
        devices.TRAINER_TPU_PORT))
    return
  devices.ask_cpu_devices(cfg.mesh.policy.size + (
      cfg.mesh.judge.size if cfg.judge.placement == "in-process" else 0))


def _stage(args) -> int:
  """`grar sft` / `grar simpo` / `grar rm train`: one training stage on the
  policy mesh."""
  import importlib
  devices.use_compile_cache()  # jax reads its settings as it loads
  stage = importlib.import_module(f"orchestrator.stages.{args.stage}")
  cfg = stage.load(args.config, args.set)
  devices.ask_cpu_devices(cfg.mesh.size)
  from orchestrator.rundir import layout as run_dir
  try:
    path = stage.run(cfg)
  except run_dir.RunDirError as e:
    print(f"grar: error: {e}", file=sys.stderr)
    return 1
  print(f"\nLoRA checkpoint: {path}")
  return 0


def _run_errors(cfg) -> tuple[type[Exception], ...]:
  """What a training run raises for a problem the user can fix: one line,
  no traceback. Ray and the vLLM engine are imported only by runs that use
  them."""
  from orchestrator.judge import process as judge_process
  from orchestrator.judge import target as judge_target
  from orchestrator.rundir import layout as run_dir
  from orchestrator.stages import grpo as trainer
  errors = (trainer.TrainError, run_dir.RunDirError,
            judge_process.JudgeProcessError, judge_target.JudgeNotReady)
  if cfg.ray.used:
    from orchestrator.scaleout import cluster as ray_cluster
    errors += (ray_cluster.RayClusterError,)
  if cfg.rollout.engine == "vllm":
    from orchestrator.rollouts import vllm_engine, vllm_process
    errors += (vllm_engine.VllmEngineError, vllm_process.VllmProcessError)
  return errors


def _config_path(args, kind: str, marker: str):
  """--config, or with --resume DIR the config.yaml of the DIR, a kind
  directory when it holds `marker`."""
  from orchestrator.rundir import layout as run_dir
  if not args.resume:
    return args.config
  if args.config:
    raise ValueError(f"--resume takes the {kind}'s own config.yaml; use "
                     "--set to change fields, not --config")
  if not (pathlib.Path(args.resume) / marker).exists():
    raise ValueError(f"--resume {args.resume}: not a {kind} directory (no "
                     f"{marker})")
  return pathlib.Path(args.resume) / run_dir.CONFIG


def _train(args) -> int:
  from orchestrator import config as config_lib
  from orchestrator.rundir import layout as run_dir
  cfg = config_lib.load(_config_path(args, "run", run_dir.CONFIG), args.set)
  _claim_devices(cfg)
  from orchestrator.stages import grpo as trainer
  try:
    if args.resume:
      result = trainer.resume(pathlib.Path(args.resume), cfg)
    else:
      result = trainer.train(cfg)
  except _run_errors(cfg) as e:
    print(f"grar: error: {e}", file=sys.stderr)
    return 1
  print(f"\nrun directory: {result.run_dir}")
  print(reward_table(result.rows))
  return 0


def reward_table(rows) -> str:
  cols = [("step", "step", "{:.0f}"), ("reward", "reward_mean", "{:.3f}"),
          ("format", "format_mean", "{:.3f}"),
          ("answer", "answer_mean", "{:.3f}"),
          ("judge", "judge_mean", "{:.3f}"),
          ("unscorable", "judge_unscorable", "{:.0f}"),
          ("loss", "loss", "{:.4f}"), ("kl", "kl", "{:.4f}"),
          ("s/step", "time_step", "{:.1f}")]
  if rows and "teacher_kl_mean" in rows[0]:  # a distillation run
    cols.insert(-1, ("teacher_kl", "teacher_kl_mean", "{:.4f}"))
  lines = ["  ".join(f"{h:>10}" for h, _, _ in cols)]
  for row in rows:
    lines.append("  ".join(f"{fmt.format(row[k]):>10}" for _, k, fmt in cols))
  return "\n".join(lines)


def _pipeline(args) -> int:
  from orchestrator.stages import pipeline
  cfg = pipeline.load(_config_path(args, "pipeline", pipeline.STAGES),
                      args.set)
  _claim_devices(cfg)
  try:
    result = pipeline.run(
        cfg, pathlib.Path(args.resume) if args.resume else None)
  except _run_errors(cfg) as e:
    print(f"grar: error: {e}", file=sys.stderr)
    return 1
  print(f"\npipeline directory: {result.run_dir.parent}")
  if result.rows:
    print(reward_table(result.rows))
  return 0


def _eval(args) -> int:
  from orchestrator.stages import evaluate
  cfg = evaluate.load(args.config, args.set)
  _claim_devices(cfg)
  from orchestrator.judge import process as judge_process
  from orchestrator.judge import target as judge_target
  try:
    report = evaluate.evaluate(cfg)
  except (evaluate.EvalError, judge_target.JudgeNotReady,
          judge_process.JudgeProcessError) as e:
    print(f"grar: error: {e}", file=sys.stderr)
    return 1
  print(f"\n{evaluate.table(report.summaries)}\n\nper-answer rows: "
        f"{report.output_dir / evaluate.ROWS}\nheld-out accuracy plot: "
        f"{report.plot}")
  return 0


def _distill(args) -> int:
  from orchestrator.stages import distill
  cfg = distill.load(args.config, args.set)
  try:
    summary = distill.run(cfg)
  except distill.DistillError as e:
    print(f"grar: error: {e}", file=sys.stderr)
    return 1
  print(f"{distill.summary_text(summary)}\nSFT rows: {cfg.out}")
  return 0


def _export(args) -> int:
  from orchestrator.stages import pipeline
  from policy_worker import export
  run = pipeline.trained(pathlib.Path(args.run_dir))
  print(export.export(run.model, run.checkpoint, run.alpha,
                      pathlib.Path(args.out)))
  return 0


def _inspect(args) -> int:
  from orchestrator.rundir import inspect_run
  return inspect_run.inspect(args.run_dir, sys.stdout, args.samples)


def _models_prepare(args) -> int:
  from policy_worker import prepare
  try:
    print(prepare.prepare_gemma3_270m(args.out))
  except prepare.PrepareError as e:
    print(f"grar: error: {e}", file=sys.stderr)
    return 1
  return 0


def _data_make(args) -> int:
  from orchestrator.data import tasks
  manifest = tasks.make(args.tasks.split(","), args.train, args.heldout,
                        args.seed, args.out, args.option,
                        args.scaffold.split(",") if args.scaffold else ())
  counts = manifest["counts"].values()
  print(f"{args.out}: {sum(c['train'] for c in counts)} train, "
        f"{sum(c['heldout'] for c in counts)} held-out, "
        f"{sum(c['sft'] for c in counts)} SFT rows")
  return 0


# `grar config schema KIND`: the config class each command reads.
CONFIG_KINDS = {
    "train": ("orchestrator.config", "RunConfig"),
    "pipeline": ("orchestrator.stages.pipeline", "PipelineConfig"),
    "sft": ("orchestrator.stages.sft", "SFTRunConfig"),
    "simpo": ("orchestrator.stages.simpo", "SimPORunConfig"),
    "rm": ("orchestrator.stages.reward_model", "RewardModelRunConfig"),
    "eval": ("orchestrator.stages.evaluate", "EvalConfig"),
    "distill": ("orchestrator.stages.distill", "DistillConfig"),
    "judge": ("judge_server.config", "JudgeConfig"),
}


def _config_schema(args) -> int:
  """The JSON schema of a command's YAML config, from its config class (the
  field types and defaults; the range checks are the class's own)."""
  import importlib
  import json
  import pydantic
  module, name = CONFIG_KINDS[args.kind]
  cls = getattr(importlib.import_module(module), name)
  print(json.dumps(pydantic.TypeAdapter(cls).json_schema(), indent=2))
  return 0


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="grar", description=__doc__.splitlines()[0])
  p.add_argument("--debug", action="store_true",
                 help="a traceback for every error, a user's mistake too")
  p.add_argument("--version", action="version",
                 version=f"%(prog)s {version.version()}")
  sub = p.add_subparsers(dest="command", required=True)

  def with_config(sp, required=True):
    sp.add_argument("--config", required=required, help="YAML config file")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. train.steps=3")

  t = sub.add_parser("train", help="GRPO training with the rubric judge")
  with_config(t, required=False)
  t.add_argument("--resume", metavar="RUN_DIR",
                 help="continue a run from its last complete step")
  t.set_defaults(func=_train)

  for name, what in (("sft", "LoRA SFT on reasoning rows (warm start)"),
                     ("simpo", "SimPO on preference pairs, no reference "
                      "model")):
    stage = sub.add_parser(name, help=what)
    with_config(stage)
    stage.set_defaults(func=_stage, stage=name)

  rm = sub.add_parser("rm", help="learned reward models").add_subparsers(
      dest="rm_command", required=True)
  rm_train = rm.add_parser("train", help="a reward model on preference "
                           "pairs (Bradley-Terry), for the judge's kind "
                           "reward_model")
  with_config(rm_train)
  rm_train.set_defaults(func=_stage, stage="reward_model")

  pipe = sub.add_parser("pipeline", help="SFT, optional SimPO, then GRPO, "
                        "each from the previous stage's LoRA")
  with_config(pipe, required=False)
  pipe.add_argument("--resume", metavar="PIPELINE_DIR",
                    help="skip finished stages, finish the rest")
  pipe.set_defaults(func=_pipeline)

  ev = sub.add_parser("eval", help="base and trained policies on a held-out "
                      "set: accuracy, judge score, length")
  with_config(ev)
  ev.set_defaults(func=_eval)

  dist = sub.add_parser("distill", help="SFT rows written by teacher "
                        "models, kept when format, answer (and judge) pass")
  with_config(dist)
  dist.set_defaults(func=_distill)

  exp = sub.add_parser("export", help="a run's LoRA merged into the base, "
                       "as an HF-format model directory")
  exp.add_argument("run_dir", metavar="RUN_DIR",
                   help="a train, sft, simpo or pipeline run directory")
  exp.add_argument("--out", required=True, metavar="DIR",
                   help="a new or empty directory")
  exp.set_defaults(func=_export)

  ins = sub.add_parser("inspect", help="summarise a run directory and plot it")
  ins.add_argument("run_dir", metavar="RUN_DIR")
  ins.add_argument("--samples", type=int, default=3,
                   help="best and worst rollouts to show")
  ins.set_defaults(func=_inspect)

  judge_commands.add(sub, with_config)

  config = sub.add_parser("config", help="config files").add_subparsers(
      dest="config_command", required=True)
  schema = config.add_parser(
      "schema", help="print the JSON schema of a command's YAML config")
  schema.add_argument("kind", choices=sorted(CONFIG_KINDS))
  schema.set_defaults(func=_config_schema)

  data = sub.add_parser("data", help="datasets").add_subparsers(
      dest="data_command", required=True)
  make = data.add_parser(
      "make", help="generated reasoning tasks (reasoning-gym): train, "
      "held-out and SFT rows")
  make.add_argument("--tasks", required=True, metavar="NAME[,NAME...]",
                    help="reasoning-gym task names, e.g. chain_sum,gcd")
  make.add_argument("--train", type=int, required=True, metavar="N",
                    help="training rows, split evenly across the tasks")
  make.add_argument("--heldout", type=int, required=True, metavar="M",
                    help="held-out rows, none with a training prompt")
  make.add_argument("--seed", type=int, default=0,
                    help="the generators' seed (default 0)")
  make.add_argument("--out", required=True, metavar="DIR",
                    help="a new or empty directory")
  make.add_argument("--option", action="append", default=[],
                    metavar="NAME.KEY=VALUE", help="a generator option "
                    "(repeatable), e.g. chain_sum.max_terms=3")
  make.add_argument("--scaffold", default="", metavar="PLAN,WORK,RESULT",
                    help="write the SFT rows' reasoning in these three named "
                    "steps (the same names as prompt.scaffold)")
  make.set_defaults(func=_data_make)

  models = sub.add_parser("models", help="model checkpoints").add_subparsers(
      dest="models_command", required=True)
  prep = models.add_parser(
      "prepare", help="turn a shipped model into an HF-format directory "
      "(prints it)")
  prep.add_argument("name", choices=["gemma3-270m"])
  prep.add_argument("--out", metavar="DIR", help="default: "
                    "$GRAR_CACHE/models/NAME, GRAR_CACHE=~/.cache/grar")
  prep.set_defaults(func=_models_prepare)
  return p


def user_error(e: BaseException) -> bool:
  """A user's mistake (one line) rather than a bug (a traceback): a
  ConfigError, or a ValueError that grar's own code raised. A ValueError
  from inside jax, numpy or the standard library is a bug of ours that
  reached them. (A builtin such as int() has no frame: its error counts as
  raised where it was called.)"""
  if isinstance(e, ConfigError):
    return True
  if not isinstance(e, ValueError) or e.__traceback__ is None:
    return False
  tb = e.__traceback__
  while tb.tb_next is not None:
    tb = tb.tb_next
  return os.path.realpath(tb.tb_frame.f_code.co_filename).startswith(_OURS)


def main(argv=None) -> int:
  args = parser().parse_args(argv)
  try:
    return args.func(args)
  except ValueError as e:
    if args.debug or not user_error(e):
      raise
    # Bad input (config, data, plan): one readable line, no traceback.
    print(f"grar: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("grar: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
