"""Rollouts per second with one vs two Ray rollout workers.

Starts a local Ray cluster, creates a pool of one worker and a pool of two
(the tiny random Gemma-3 policy of configs/ray-tiny.yaml), publishes the same
LoRA weights to both, and then alternates: each round times one step's
generation (PROMPTS prompts x G completions) on each pool. Prints the median
rollouts/s of each after warm-up and their ratio, measured side by side.

On a host with fewer free cores than workers x the cores one sampler uses,
the two workers share cores and the ratio says so.

Usage: python bench/ray_rollouts.py [--rounds 8] [--warmup 2] [--prompts 4]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# A throwaway local cluster: no token to generate and store.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import jax  # noqa: E402
import ray  # noqa: E402

from orchestrator import config as config_lib  # noqa: E402
from orchestrator import mesh as mesh_lib  # noqa: E402
from orchestrator.data import dataset  # noqa: E402
from orchestrator.scaleout import rollout_workers as ray_workers  # noqa: E402
from orchestrator.data import templates  # noqa: E402
from judge_server import server as judge_server_lib  # noqa: E402
from policy_worker import models  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--rounds", type=int, default=8)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--prompts", type=int, default=4)
  args = parser.parse_args()
  cfg = config_lib.load(os.path.join(ROOT, "configs", "ray-tiny.yaml"),
                        [f"train.batch_size={args.prompts}",
                         f"data.path={ROOT}/data/reasoning-sample.jsonl"])
  examples = dataset.load_jsonl(
      cfg.data.path, judge_server_lib.load_packs("").keys())
  prompts = [templates.render(ex.prompt) for ex in examples[:args.prompts]]
  G = cfg.rollout.num_generations

  # Before jax starts its threads: the local cluster's processes are forked.
  ray.init(num_cpus=3, include_dashboard=False)
  try:
    mesh, _ = mesh_lib.plan_meshes(jax.devices(), cfg.mesh.policy, None,
                                   cfg.model)
    base, tokenizer = models.build_model(cfg.model, mesh)
    policy = models.apply_lora(base, mesh, rank=cfg.grpo.lora_rank,
                               alpha=cfg.grpo.lora_alpha, seed=cfg.train.seed)
    pools = {n: ray_workers.RolloutPool(cfg, n, tokenizer.pad_id())
             for n in (1, 2)}
    for pool in pools.values():
      pool.publish(0, policy)
    rates = {n: [] for n in pools}
    for r in range(args.warmup + args.rounds):
      for n, pool in pools.items():
        t0 = time.perf_counter()
        rolls, _ = pool.generate(prompts, G, temperature=1.0, top_p=1.0,
                                 seed=r)
        rate = len(rolls.texts) / (time.perf_counter() - t0)
        if r >= args.warmup:
          rates[n].append(rate)
    one, two = (statistics.median(rates[n]) for n in (1, 2))
    print(f"{args.prompts} prompts x {G} completions of "
          f"{cfg.rollout.max_new_tokens} tokens, {args.rounds} rounds "
          f"(medians), {os.cpu_count()} CPU cores on this host")
    print(f"1 worker:  {one:8.1f} rollouts/s")
    print(f"2 workers: {two:8.1f} rollouts/s")
    print(f"ratio 2/1: {two / one:8.2f}x")
  finally:
    ray.shutdown()


if __name__ == "__main__":
  main()
