"""How far one GRPO step moves the policy, by learning rate, on the 270M.

Adam's first steps move every LoRA parameter by about the learning rate
whatever the gradient's size, so the learning rate alone sets how far the
first update takes the policy from its warm start. From the given LoRA
checkpoint (an SFT stage's), 2 demo-like sums x 8 samples at temperature
0.7, advantages +-1, one update at each --lr from the same adapters; printed:
the largest change of log p of the policy's own samples, their mean log p
before and after, and the k3 KL to the warm start.

Usage: python bench/grpo_lr_step.py RUN/sft/checkpoints/step_N [--lr 3e-4
           --lr 3e-5 --lr 1e-5] [--rank 8 --alpha 16]
Ends with one line of name=value pairs.
"""

import argparse
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from flax import nnx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from grar_config.model import ModelSpec  # noqa: E402
from orchestrator.data import templates  # noqa: E402
from policy_worker import grpo, models, prepare, rollout  # noqa: E402

PROMPTS = ("What is 12 + 45 + 7?", "Compute 33 + 9.")
G = 8


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("lora", type=pathlib.Path)
  p.add_argument("--lr", type=float, action="append")
  p.add_argument("--rank", type=int, default=8)
  p.add_argument("--alpha", type=float, default=16.0)
  args = p.parse_args()
  rates = args.lr or [3e-4, 3e-5, 1e-5]
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                           ("fsdp", "tp"))
  spec = ModelSpec(family="gemma3", dtype="float32",
                   path=str(prepare.prepare_gemma3_270m()))
  policy, tok = models.build_policy(spec, mesh, rank=args.rank,
                                    alpha=args.alpha, seed=0,
                                    init_lora=args.lora)
  start = jax.tree.map(jnp.copy, models.lora_state(policy))
  rolls = rollout.RolloutGenerator(
      policy, tok, mesh, max_prompt_tokens=64, max_new_tokens=40).generate(
          [templates.render(q) for q in PROMPTS], G, temperature=0.7,
          top_p=1.0, seed=0)
  advantages = np.tile(np.array([1, -1, 0.5, -0.5, 1, 1, -1, -1],
                                np.float32), len(PROMPTS))
  mask = rolls.completion_tokens != tok.pad_id()
  pairs = []
  print(f"{'lr':>8} {'max |dlogp|':>12} {'mean logp before':>17} "
        f"{'after':>7} {'k3 KL':>10}")
  for lr in rates:
    nnx.update(policy, jax.tree.map(jnp.copy, start))
    updater = grpo.GRPOUpdater(policy, mesh, tok.pad_id(), grpo.UpdateConfig(
        num_generations=G, temperature=0.7, learning_rate=lr))
    updater.step(rolls, advantages, np.ones(len(advantages), bool), None,
                 None)
    after = np.asarray(updater.policy_logps(rolls))
    before = np.asarray(updater.reference_logps(rolls))
    d = before - after
    k3 = float(((np.exp(d) - d - 1) * mask).sum() / mask.sum())
    moved = float(np.abs(d)[mask].max())
    print(f"{lr:8.0e} {moved:12.3f} {before[mask].mean():17.3f} "
          f"{after[mask].mean():7.3f} {k3:10.4g}", flush=True)
    pairs += [f"max_dlogp_{lr:g}={moved:.3g}", f"kl_{lr:g}={k3:.3g}"]
  print(" ".join(pairs))
  return 0


if __name__ == "__main__":
  sys.exit(main())
