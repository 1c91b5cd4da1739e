"""The `grar` command line.

Heavy imports (jax, tunix) happen inside the commands that need them, so
`grar judge score` and `--help` start fast and work without jax.
"""

import argparse
import os
import sys

from judge_server.strict import ConfigError


def _claim_devices(cfg) -> None:
  """Shows this process only the devices its plan uses, before jax loads.

  In-process, the trainer holds both meshes: on a CPU host that needs enough
  virtual devices (the flag only shapes the CPU platform, harmless
  elsewhere). With the judge in its own process, the trainer must leave the
  judge's devices alone: it claims the first mesh.policy.size of them.
  """
  from orchestrator import devices
  if cfg.judge.placement == "subprocess":
    os.environ.update(devices.process_env(
        devices.detect_platform(), 0, cfg.mesh.policy.size,
        devices.TRAINER_TPU_PORT))
    return
  needed = cfg.mesh.policy.size + (
      cfg.mesh.judge.size if cfg.judge.placement == "in-process" else 0)
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (
        f"{flags} --xla_force_host_platform_device_count={needed}".strip())


def _train(args) -> int:
  import pathlib
  from orchestrator import config as config_lib
  from orchestrator import run_dir
  if args.resume:
    if args.config:
      raise ValueError("--resume takes the run's own config.yaml; use --set "
                       "to change fields, not --config")
    config_path = pathlib.Path(args.resume) / run_dir.CONFIG
    if not config_path.exists():
      raise ValueError(f"--resume {args.resume}: not a run directory (no "
                       f"{run_dir.CONFIG})")
  else:
    config_path = args.config
  cfg = config_lib.load(config_path, args.set)
  _claim_devices(cfg)
  from orchestrator import judge_process, trainer
  try:
    if args.resume:
      result = trainer.resume(pathlib.Path(args.resume), cfg)
    else:
      result = trainer.train(cfg)
  except (trainer.TrainError, run_dir.RunDirError,
          judge_process.JudgeProcessError) as e:
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
  lines = ["  ".join(f"{h:>10}" for h, _, _ in cols)]
  for row in rows:
    lines.append("  ".join(f"{fmt.format(row[k]):>10}" for _, k, fmt in cols))
  return "\n".join(lines)


def _judge_serve(args) -> int:
  from judge_server import __main__ as judge_main
  from judge_server import config as judge_config
  return judge_main.serve(judge_config.load(args.config, args.set))


def _judge_score(args) -> int:
  from orchestrator import judge_cli
  return judge_cli.score_file(args.target, args.input)


def _inspect(args) -> int:
  from orchestrator import inspect_run
  return inspect_run.inspect(args.run_dir, sys.stdout, args.samples)


def _models_prepare(args) -> int:
  from policy_worker import prepare
  try:
    print(prepare.prepare_gemma3_270m(args.out))
  except prepare.PrepareError as e:
    print(f"grar: error: {e}", file=sys.stderr)
    return 1
  return 0


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="grar", description=__doc__.splitlines()[0])
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

  ins = sub.add_parser("inspect", help="summarise a run directory and plot it")
  ins.add_argument("run_dir", metavar="RUN_DIR")
  ins.add_argument("--samples", type=int, default=3,
                   help="best and worst rollouts to show")
  ins.set_defaults(func=_inspect)

  judge = sub.add_parser("judge", help="the judge service").add_subparsers(
      dest="judge_command", required=True)
  serve = judge.add_parser("serve", help="run the judge server")
  with_config(serve, required=False)
  serve.set_defaults(func=_judge_serve)
  score = judge.add_parser("score", help="score a JSONL file of rollouts")
  score.add_argument("--target", required=True, help="HOST:PORT")
  score.add_argument("--input", required=True, help="rollouts JSONL")
  score.set_defaults(func=_judge_score)

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


def main(argv=None) -> int:
  args = parser().parse_args(argv)
  try:
    return args.func(args)
  except (ConfigError, ValueError) as e:
    # Bad input (config, data, plan): one readable line, no traceback.
    print(f"grar: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("grar: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
