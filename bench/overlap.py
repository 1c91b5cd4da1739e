"""How much of the judge's time the pipelined loop hides.

Runs the same short training several ways in one process and prints ratios
of median step times (steps after warm-up), measured side by side:

  1. instant judge, staleness 0: the policy-side step time P (rule rewards
     plus a judge that answers at once; the baseline "without an LLM judge");
  2. latency-bound judge (D = P per backend call), staleness 0 (synchronous);
  3. the same judge, staleness 1 (pipelined);
  4. the compute-bound tiny JAX judge on the judge mesh, staleness 0 and 1.

The latency-bound judge is a stand-in for a remote API such as Gemini: it
sleeps D per backend call and does no local compute, so it can overlap the
policy for real on this 2-core machine. The compute-bound case shares the
same CPU cores between the two "meshes" (virtual devices), so it cannot
overlap here; it is reported for what it is.

Usage: python bench/overlap.py [--steps 10] [--warmup 3]
"""

import argparse
import asyncio
import dataclasses
import hashlib
import os
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8")

import numpy as np  # noqa: E402

from judge_server import server as judge_server_lib  # noqa: E402
from judge_server.backends.base import Backend, Judgement  # noqa: E402
from judge_server.config import JudgeConfig  # noqa: E402
from orchestrator import config as config_lib  # noqa: E402
from orchestrator.stages import grpo as trainer  # noqa: E402


class LatencyStandIn(Backend):
  """NOT a judge: a fixed delay per call and a score derived from a hash of
  the prompt, standing in for a remote judge API's latency."""

  name = "latency-stand-in"
  model = "none"
  max_batch = 1024
  # As the remote backends' default (gemini, openai: max_calls_in_flight 2):
  # a step's stragglers, batched after the first call left, do not wait
  # for it. With one call at a time a step took two delays, not one.
  max_calls_in_flight = 2

  def __init__(self, delay_s: float):
    self.delay_s = delay_s

  async def judge(self, prompts):
    await asyncio.sleep(self.delay_s)
    return [Judgement(hashlib.sha256(p.encode()).digest()[0] / 255, 1.0)
            for p in prompts]


def _median_step(cfg, warmup: int) -> tuple[float, dict]:
  rows = trainer.train(cfg).rows[warmup:]
  keys = ("time_step", "time_generate", "time_judge_wait", "time_train",
          "judge_latency_p50_ms")
  return (float(np.median([r["time_step"] for r in rows])),
          {k: float(np.median([r[k] for r in rows])) for k in keys})


def _run_with_stand_in(base, delay_s: float, staleness: int, warmup: int,
                       name: str):
  handle = judge_server_lib.run_in_thread(
      JudgeConfig(max_wait_ms=20.0), LatencyStandIn(delay_s))
  try:
    cfg = config_lib.load(base, [
        "judge.placement=remote", f"judge.target={handle.address}",
        f"train.staleness={staleness}", f"run_name={name}"])
    return _median_step(cfg, warmup)
  finally:
    handle.stop()


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/cpu-tiny.yaml")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=3)
  args = p.parse_args(argv)
  out = tempfile.mkdtemp(prefix="grar-bench-")
  base = config_lib.load(args.config, [f"train.steps={args.steps}",
                                       f"output_dir={out}"])
  base_path = os.path.join(out, "base.yaml")
  import yaml
  with open(base_path, "w") as f:
    yaml.safe_dump(dataclasses.asdict(base), f)

  p_step, p_detail = _run_with_stand_in(base_path, 0.0, 0, args.warmup,
                                        "instant")
  delay = p_step
  s0, s0_detail = _run_with_stand_in(base_path, delay, 0, args.warmup, "sync")
  s1, s1_detail = _run_with_stand_in(base_path, delay, 1, args.warmup, "pipe")
  c0, c0_detail = _median_step(config_lib.load(
      base_path, ["train.staleness=0", "run_name=jax0"]), args.warmup)
  c1, c1_detail = _median_step(config_lib.load(
      base_path, ["train.staleness=1", "run_name=jax1"]), args.warmup)

  print(f"median step times over steps {args.warmup + 1}..{args.steps}:")
  for name, t, d in (("instant judge, staleness 0", p_step, p_detail),
                     (f"latency judge {delay:.2f}s, staleness 0", s0, s0_detail),
                     (f"latency judge {delay:.2f}s, staleness 1", s1, s1_detail),
                     ("tiny JAX judge, staleness 0", c0, c0_detail),
                     ("tiny JAX judge, staleness 1", c1, c1_detail)):
    split = "  ".join(f"{k.removeprefix('time_')}={v:.3g}" for k, v in d.items()
                      if k != "time_step")
    print(f"  {name:<36} {t:7.3f}s   ({split})")
  # The judge's own work per step is what the synchronous loop waits for
  # it: at least one delay, more when a step's prompts need calls one
  # after another.
  judge_work = s0_detail["time_judge_wait"]
  ideal = max(p_step, judge_work)
  print(f"\njudge work per step (the synchronous wait) {judge_work:.3f}s, "
        f"{judge_work / delay:.2f} delays")
  print("ratios (latency-bound judge, D = policy step time):")
  print(f"  pipelined / synchronous step time        {s1 / s0:.3f}")
  print(f"  pipelined / ideal max(policy, judge)     {s1 / ideal:.3f}"
        "   (target <= 1.10)")
  print(f"  synchronous judge / instant judge        {s0 / p_step:.3f}")
  print(f"  pipelined judge / instant judge          {s1 / p_step:.3f}"
        "   (target <= 1.10)")
  print("compute-bound judge on the same 2 cores (cannot overlap here):")
  print(f"  staleness 1 / staleness 0                {c1 / c0:.3f}")
  print(f"pipelined_over_ideal={s1 / ideal:.3f} "
        f"pipelined_over_sync={s1 / s0:.3f} sync_over_instant={s0 / p_step:.3f} "
        f"pipelined_over_instant={s1 / p_step:.3f} "
        f"judge_work_delays={judge_work / delay:.2f} jax_s1_over_s0={c1 / c0:.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
