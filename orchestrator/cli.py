"""The `grar` command line.

Heavy imports (jax, tunix) happen inside the commands that need them, so
`grar judge score` and `--help` start fast and work without jax.
"""

import argparse
import os
import sys

from judge_server.strict import ConfigError


def _virtual_cpu_devices(count: int) -> None:
  """Lets a CPU-only machine run a multi-device mesh plan.

  The flag only shapes the host (CPU) platform, so it is harmless on a TPU
  or GPU host, and it must be set before jax is imported.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (
        f"{flags} --xla_force_host_platform_device_count={count}".strip())


def _train(args) -> int:
  from orchestrator import config as config_lib
  cfg = config_lib.load(args.config, args.set)
  needed = cfg.mesh.policy.size + (
      cfg.mesh.judge.size if cfg.judge.placement == "in-process" else 0)
  _virtual_cpu_devices(needed)
  from orchestrator import trainer
  result = trainer.train(cfg)
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


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="grar", description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="command", required=True)

  def with_config(sp, required=True):
    sp.add_argument("--config", required=required, help="YAML config file")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. train.steps=3")

  t = sub.add_parser("train", help="GRPO training with the rubric judge")
  with_config(t, required=False)
  t.set_defaults(func=_train)

  judge = sub.add_parser("judge", help="the judge service").add_subparsers(
      dest="judge_command", required=True)
  serve = judge.add_parser("serve", help="run the judge server")
  with_config(serve, required=False)
  serve.set_defaults(func=_judge_serve)
  score = judge.add_parser("score", help="score a JSONL file of rollouts")
  score.add_argument("--target", required=True, help="HOST:PORT")
  score.add_argument("--input", required=True, help="rollouts JSONL")
  score.set_defaults(func=_judge_score)
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
