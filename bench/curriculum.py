"""Does a curriculum help GRPO? The same steps with and without one.

Three levels of generated chain_sum problems, easiest first:
  0: 2 terms of 1-2 digits;  1: 3 terms of 1 digit;  2: 3 terms of 1-2
  digits
(level 2 is the demo's difficulty, and the target: the held-out rows are
level 2). From one SFT warm start on level 2's worked traces, two arms
train the same number of GRPO steps, rewarded by format and answer:
  flat        every batch from level 2;
  curriculum  data.path level 0, curriculum.levels [1, 2], advanced when
              the answer rate of a level's last min_steps steps reaches
              the threshold.
Each arm reports its mean reward and answer rate over the steps, the level
it ended at, and its greedy held-out accuracy on level 2 (95 % interval).

--model 270m (default) is the claim; --model tiny (the random byte-level
Gemma) only proves the plumbing: it answers nothing right, so its
curriculum never moves unless --threshold 0.

Usage: python bench/curriculum.py [--model 270m] [--steps 12]
           [--threshold 0.5] [--min-steps 2] [--out runs/bench-curriculum]
Ends with one line of name=value pairs.
"""

import argparse
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=2")

import isolated  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from grar_config import strict  # noqa: E402
from grar_config.mesh import MeshShape  # noqa: E402
from grar_config.model import ModelSpec  # noqa: E402
from orchestrator import config as config_lib  # noqa: E402
from orchestrator import mesh as mesh_lib  # noqa: E402
from orchestrator.data import tasks  # noqa: E402
from orchestrator.rundir import layout as run_dir  # noqa: E402
from orchestrator.rundir import metrics  # noqa: E402
from orchestrator.stages import evaluate  # noqa: E402
from orchestrator.stages import grpo as trainer  # noqa: E402
from orchestrator.stages import sft as sft_stage  # noqa: E402

LEVELS = (("chain_sum.max_terms=2", "chain_sum.max_digits=2"),
          ("chain_sum.max_terms=3", "chain_sum.max_digits=1"),
          ("chain_sum.max_terms=3", "chain_sum.max_digits=2"))
MODELS = {"270m": {"family": "gemma3", "dtype": "float32"},
          "tiny": {"family": "gemma3-tiny"}}
# Prompt and SFT sequence budgets, in tokens: the tiny model's are bytes.
BUDGETS = {"270m": (128, 160), "tiny": (512, 640)}
ONE = {"fsdp": 1, "tp": 1}
# Rewards are rules only; the judge is the tiny random one at weight 0,
# unchecked: the curriculum is what is measured, not the judge.
JUDGE = {"placement": "in-process", "validation": {"on_fail": "skip"},
         "server": {"backend": {"kind": "jax", "max_batch": 64,
                                "model": {"family": "gemma3-tiny",
                                          "seed": 1}}}}
LORA = {"lora_rank": 8, "lora_alpha": 16.0}


def _say(message: str) -> None:
  print(f"curriculum: {message}", file=sys.stderr, flush=True)


def _run_config(args, out: pathlib.Path, name: str, init: pathlib.Path,
                paths: list[pathlib.Path]) -> config_lib.RunConfig:
  levels = [str(p / "train.jsonl") for p in paths]
  return strict.from_dict(config_lib.RunConfig, {
      "model": MODELS[args.model], "mesh": {"policy": ONE, "judge": ONE},
      "data": {"path": levels[0]},
      "curriculum": {"levels": levels[1:], "component": "answer",
                     "threshold": args.threshold,
                     "min_steps": args.min_steps},
      "rollout": {"num_generations": args.group, "max_prompt_tokens": BUDGETS[args.model][0],
                  "max_new_tokens": args.max_new_tokens,
                  "temperature": args.temperature},
      "grpo": {"beta": 0.0, "learning_rate": args.grpo_lr,
               "init_from": str(init), **LORA},
      "rewards": {"weights": {"format": 0.2, "answer": 0.8, "judge": 0.0}},
      "judge": JUDGE,
      "train": {"steps": args.steps, "batch_size": args.prompts,
                "staleness": 1},
      "output_dir": str(out), "run_name": name})


def _heldout(args, run: pathlib.Path, data: pathlib.Path,
             out: pathlib.Path) -> dict:
  report = evaluate.evaluate(strict.from_dict(evaluate.EvalConfig, {
      "model": MODELS[args.model], "mesh": {"policy": ONE, "judge": ONE},
      "data": {"path": str(data / "heldout.jsonl")}, "judge": JUDGE,
      "candidates": [{"name": "c", "run": str(run)}],
      "max_prompt_tokens": BUDGETS[args.model][0],
      "max_new_tokens": args.max_new_tokens,
      "batch_size": args.eval_batch, "output_dir": str(out)}))
  summary = report.summaries["c"]
  return {"accuracy": summary["answer_accuracy"],
          "ci": summary["answer_accuracy_ci"]}


def _arm(args, out: pathlib.Path, name: str, init: pathlib.Path,
         paths: list[pathlib.Path]) -> dict:
  _say(f"{name}: {args.steps} GRPO steps over {len(paths)} level(s)")
  run = isolated.run(trainer.train,
                     _run_config(args, out, name, init, paths)).run_dir
  rows = metrics.read(run / run_dir.METRICS)
  levels = [r.get("curriculum_level", len(LEVELS) - 1) for r in rows]
  return {"arm": name, "reward": float(np.mean([r["reward_mean"]
                                                for r in rows])),
          "answer": float(np.mean([r["answer_mean"] for r in rows])),
          "levels": [int(level) for level in levels],
          **isolated.run(_heldout, args, run, paths[-1],
                         out / f"eval-{name}")}


def _warm(args, data: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
  spec = ModelSpec(**MODELS[args.model])
  mesh, _ = mesh_lib.plan_meshes(jax.devices(), MeshShape(**ONE), None, spec)
  return sft_stage.run_sft(
      sft_stage.SFTConfig(data=str(data / "sft.jsonl"), eval_fraction=0.02,
                          steps=args.warm_steps, batch_size=8,
                          learning_rate=1e-3,
                          max_tokens=BUDGETS[args.model][1], seed=args.seed,
                          **LORA), spec, mesh, out)


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", choices=sorted(MODELS), default="270m")
  p.add_argument("--steps", type=int, default=12)
  p.add_argument("--threshold", type=float, default=0.5)
  p.add_argument("--min-steps", type=int, default=2)
  p.add_argument("--warm-steps", type=int, default=30)
  p.add_argument("--train", type=int, default=400, help="rows per level")
  p.add_argument("--heldout", type=int, default=96)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--prompts", type=int, default=2)
  p.add_argument("--group", type=int, default=8)
  p.add_argument("--temperature", type=float, default=0.7)
  p.add_argument("--grpo-lr", type=float, default=3e-4)
  p.add_argument("--max-new-tokens", type=int, default=40)
  p.add_argument("--eval-batch", type=int, default=32)
  p.add_argument("--out", default="runs/bench-curriculum")
  args = p.parse_args()
  out = pathlib.Path(args.out)
  if out.exists() and any(out.iterdir()):
    raise SystemExit(f"curriculum: --out {out} is not empty")
  paths = [out / f"level{i}" for i in range(len(LEVELS))]
  for i, (path, options) in enumerate(zip(paths, LEVELS)):
    # Held-out rows of the target level only.
    tasks.make(["chain_sum"], args.train,
               args.heldout if i == len(LEVELS) - 1 else 0, args.seed, path,
               options)
  _say(f"SFT warm start on level {len(LEVELS) - 1}, {args.warm_steps} steps")
  init = isolated.run(_warm, args, paths[-1], out / "warm")
  arms = [_arm(args, out, "flat", init, paths[-1:]),
          _arm(args, out, "curriculum", init, paths)]
  print(f"\n{'arm':>10}  reward  answer  held-out accuracy [95 %]  levels")
  for a in arms:
    print(f"{a['arm']:>10}  {a['reward']:.3f}   {a['answer']:.3f}   "
          f"{a['accuracy']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]"
          f"          {''.join(map(str, a['levels']))}")
  flat, cur = arms
  print(f"model={args.model} steps={args.steps} heldout={args.heldout} "
        f"flat_reward={flat['reward']:.3f} curriculum_reward={cur['reward']:.3f} "
        f"flat_heldout={flat['accuracy']:.3f} "
        f"curriculum_heldout={cur['accuracy']:.3f} "
        f"heldout_diff={cur['accuracy'] - flat['accuracy']:+.3f} "
        f"final_level={cur['levels'][-1]}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
