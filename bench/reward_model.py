"""Does the learned reward model (`grar rm train`) tell better from worse?

Two pair sets, each split into training and held-out pairs:
  shipped  data/pairs-sample.jsonl: well-formed correct completions over
           malformed or wrong ones (format and correctness mixed);
  tasks    generated chain_sum problems (reasoning-gym): the same
           completion with the reference answer over a wrong one, so only
           correctness separates them.
For each: held-out pairwise accuracy (chosen scored above rejected) before
and after training, with its 95 % Wilson interval, and the held-out loss.

Usage: python bench/reward_model.py [--model gemma3-270m] [--steps 20]
           [--tasks-pairs 64] [--out runs/bench-rm]
Ends with one line of name=value pairs.
"""

import argparse
import json
import os
import pathlib
import random
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=2")

import isolated  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from grar_config.model import ModelSpec  # noqa: E402
from orchestrator import stats  # noqa: E402
from orchestrator.data import tasks as tasks_lib  # noqa: E402
from orchestrator.data.preference_pairs import load_pairs  # noqa: E402
from orchestrator.rundir import metrics  # noqa: E402
from orchestrator.stages import reward_model as rm_stage  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = {"tiny": ModelSpec(), "gemma3-270m": ModelSpec(family="gemma3")}


def _completion(answer: str) -> str:
  return (f"<reasoning>Adding the numbers in order gives {answer}."
          f"</reasoning>\n<answer>{answer}</answer>")


def task_pairs(n: int, seed: int) -> list[dict]:
  """chain_sum problems: the reference answer over one off by 1 to 9."""
  rng = random.Random(seed)
  return [{"prompt": row["prompt"], "chosen": _completion(row["answer"]),
           "rejected": _completion(str(int(row["answer"])
                                       + rng.choice([-1, 1])
                                       * rng.randint(1, 9)))}
          for row in tasks_lib.generate("chain_sum", n, seed)]


def _write(path: pathlib.Path, rows: list[dict]) -> str:
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def train(name: str, spec: ModelSpec, rows: list[dict], held: list[dict],
          args, out: pathlib.Path) -> dict:
  """Trains on rows, evaluates on held; the first and last metrics rows."""
  out.mkdir(parents=True, exist_ok=True)
  cfg = rm_stage.RewardModelConfig(
      data=_write(out / f"{name}-train.jsonl", rows),
      eval_data=_write(out / f"{name}-held.jsonl", held), steps=args.steps,
      batch_size=args.batch_size, learning_rate=args.learning_rate,
      max_tokens=args.max_tokens, eval_every=args.steps)
  devices = np.array(jax.devices()[:1]).reshape(1, 1)
  mesh = jax.sharding.Mesh(devices, ("fsdp", "tp"))
  rm_stage.run_reward_model(cfg, spec, mesh, out / name)
  rows = metrics.read(out / name / "metrics.csv")
  return {"before": rows[0], "after": rows[-1]}


def _split(pairs: list[dict], batch_size: int) -> tuple[list, list]:
  """Held out: a quarter, in whole batches (the stage drops a remainder)."""
  n = max(batch_size, len(pairs) // 4 // batch_size * batch_size)
  return pairs[n:], pairs[:n]


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", choices=sorted(MODELS), default="tiny")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--batch-size", type=int, default=2)
  p.add_argument("--learning-rate", type=float, default=0.003)
  p.add_argument("--max-tokens", type=int, default=384)
  p.add_argument("--tasks-pairs", type=int, default=64)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="runs/bench-rm")
  args = p.parse_args()
  out = pathlib.Path(args.out)
  shipped = [vars(x) for x in load_pairs(ROOT / "data" / "pairs-sample.jsonl")]
  sets = {"shipped": shipped,
          "tasks": task_pairs(args.tasks_pairs, args.seed)}
  summary = {"model": args.model, "steps": args.steps}
  for name, pairs in sets.items():
    rows, held = _split(pairs, args.batch_size)
    result = isolated.run(train, name, MODELS[args.model], rows, held, args,
                          out)
    for when in ("before", "after"):
      acc = result[when]["eval_rewards_accuracy"]
      wins = round(acc * len(held))
      lo, hi = stats.wilson(wins, len(held))
      print(f"{name:8s} {when:6s} held-out pairwise accuracy "
            f"{wins}/{len(held)} = {acc:.3f} [{lo:.3f}, {hi:.3f}]  "
            f"eval loss {result[when]['eval_loss']:.4f}", flush=True)
      summary[f"{name}_{when}_accuracy"] = round(acc, 3)
    summary[f"{name}_train"], summary[f"{name}_held"] = len(rows), len(held)
  print(" ".join(f"{k}={v}" for k, v in summary.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
