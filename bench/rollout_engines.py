"""Rollout engines side by side: grar's vLLM engine (rollout.engine vllm)
against the same vLLM server answering the same requests for the same
adapter without grar around it, and against tunix's sampler (the default
engine) on the same policy; then, with --steps, the demo's GRPO step with
each engine.

The policy is the shipped Gemma-3-270M (float32) with rank-8 LoRA drawn
small and non-zero, so vLLM really applies an adapter. Prompts: the demo's
template over data/reasoning-sample.jsonl, --prompts x --generations
samples of up to --max-new-tokens at temperature 1. vLLM is the CPU build
in .venv-vllm, started as the trainer starts it
(vllm_process.rollout_args), eager unless --compile. One untimed round each (compiles, loads), then --runs
interleaved rounds; completion tokens per second is the median over
rounds of generated tokens / wall time.

--steps N runs `grar train` on the demo's GRPO section (configs/
demo-270m.yaml without its other stages; `make demo-data` first) for N
steps with each engine, one after the other, and compares the median
step and generation times of steps 2..N (step 1 compiles; take N >= 6, as
one slow early step skews a median of two).

  .venv/bin/python bench/rollout_engines.py [--runs 3] [--steps 6]
"""

import argparse
import concurrent.futures
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from grar_config.model import ModelSpec  # noqa: E402
from judge_server import packs as packs_lib  # noqa: E402
from orchestrator.data import dataset, templates  # noqa: E402
from orchestrator import config  # noqa: E402
from orchestrator.rollouts import vllm_engine  # noqa: E402
from orchestrator.rundir import metrics  # noqa: E402
from policy_worker import models, prepare, rollout  # noqa: E402
import random_lora  # noqa: E402

DATA = ROOT / "data/reasoning-sample.jsonl"
DEMO = ROOT / "configs/demo-270m.yaml"
RANK, ALPHA = 8, 16.0


def _policy(model_dir, mesh):
  policy, tok = models.build_policy(
      ModelSpec(family="gemma3", path=str(model_dir)), mesh, rank=RANK,
      alpha=ALPHA, seed=0)
  random_lora.randomise(policy, 0.02)
  return policy, tok


def _alone(client, url: str, adapter: str, encoded, generations: int,
           max_new: int, seed: int) -> int:
  """The same requests as the engine's, straight to vLLM; tokens made."""
  def one(g):
    r = client.post(f"{url}/completions", json={
        "model": adapter, "prompt": encoded[g], "n": generations,
        "max_tokens": max_new, "temperature": 1.0, "top_p": 1.0,
        "seed": seed + g * generations, "logprobs": 0,
        "return_token_ids": True})
    r.raise_for_status()
    return r.json()["usage"]["completion_tokens"]
  with concurrent.futures.ThreadPoolExecutor(len(encoded)) as pool:
    return sum(pool.map(one, range(len(encoded))))


def _throughput(args, model_dir, log_dir) -> dict[str, float]:
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                           ("fsdp", "tp"))
  policy, tok = _policy(model_dir, mesh)
  examples = dataset.load_jsonl(str(DATA), packs_lib.load_packs().keys())
  prompts = [templates.render(ex.prompt, ()) for ex in
             examples[:args.prompts]]
  encoded = [[tok.bos_id(), *tok.encode(p)] for p in prompts]
  max_prompt = max(len(e) for e in encoded)
  tunix = rollout.RolloutGenerator(policy, tok, mesh,
                                   max_prompt_tokens=max_prompt,
                                   max_new_tokens=args.max_new_tokens)
  # The server the trainer would start for a run of these lengths.
  cfg = config.RunConfig(
      model=ModelSpec(family="gemma3", path=str(model_dir)),
      rollout=config.RolloutConfig(
          max_prompt_tokens=max_prompt, max_new_tokens=args.max_new_tokens,
          engine="vllm", vllm=config.VllmEngineConfig(
              extra_args=() if args.compile else ("--enforce-eager",))),
      grpo=config.GRPOConfig(lora_rank=RANK, lora_alpha=ALPHA))
  t0 = time.monotonic()
  source = vllm_engine.opened(cfg, tok, log_dir, print)
  with httpx.Client(timeout=900) as client:
    print(f"vLLM up in {time.monotonic() - t0:.0f} s "
          f"({'compiled' if args.compile else 'eager'})", flush=True)
    try:
      source.publish(0, policy)

      def engine(seed):
        rolls, _ = source.generate(prompts, args.generations,
                                   temperature=1.0, top_p=1.0, seed=seed)
        return int(rolls.completion_lengths.sum())

      def own(seed):
        rolls = tunix.generate(prompts, args.generations, temperature=1.0,
                               top_p=1.0, seed=seed)
        return int(rolls.completion_lengths.sum())

      ways = {"vllm_alone": lambda seed: _alone(
                  client, source.base_url, source.adapter, encoded,
                  args.generations, args.max_new_tokens, seed),
              "grar_vllm": engine, "tunix": own}
      for run in ways.values():
        run(0)  # compiles, warms
      rates = {name: [] for name in ways}
      for r in range(args.runs):  # interleaved: each sees the same machine
        for name, run in ways.items():
          t = time.perf_counter()
          tokens = run(1 + r)
          rates[name].append(tokens / (time.perf_counter() - t))
    finally:
      source.close()
  med = {name: statistics.median(v) for name, v in rates.items()}
  for name, v in rates.items():
    print(f"  {name:>10}: {med[name]:7.1f} tokens/s  "
          f"(runs: {', '.join(f'{x:.1f}' for x in v)})")
  return med


def _step_times(steps: int, out: pathlib.Path) -> dict[str, dict]:
  """Median time_step and time_generate of steps 2..steps per engine."""
  config = yaml.safe_load(DEMO.read_text())
  for stage in ("sft", "simpo", "eval"):
    config.pop(stage, None)
  run_config = out / "demo-grpo.yaml"
  run_config.write_text(yaml.safe_dump(config))
  subprocess.run(["make", "-C", str(ROOT), "demo-data"], check=True)
  found = {}
  for engine in ("tunix", "vllm"):
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "train", "--config",
         str(run_config), "--set", f"train.steps={steps}",
         "--set", "judge.validation.on_fail=skip",
         "--set", f"rollout.engine={engine}",
         "--set", "rollout.vllm.extra_args=[--enforce-eager]",
         "--set", f"output_dir={out}", "--set", f"run_name={engine}"],
        cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
      raise RuntimeError(f"{engine}: exit {proc.returncode} (-9: killed, "
                         f"e.g. out of memory):\n{proc.stderr[-3000:]}")
    rows = metrics.read(out / engine / "metrics.csv")[1:]
    found[engine] = {k: statistics.median(r[k] for r in rows)
                     for k in ("time_step", "time_generate")}
    if engine == "vllm":
      found[engine]["mismatch"] = statistics.median(
          r["engine_logp_mismatch"] for r in rows)
    print(f"  {engine:>6}: step {found[engine]['time_step']:.1f} s, "
          f"generate {found[engine]['time_generate']:.1f} s (median of "
          f"steps 2-{steps}; run {time.monotonic() - t0:.0f} s)", flush=True)
  return found


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--prompts", type=int, default=8)
  p.add_argument("--generations", type=int, default=4)
  p.add_argument("--max-new-tokens", type=int, default=64)
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--compile", action="store_true",
                 help="let vLLM compile (start-up about three times longer)")
  p.add_argument("--steps", type=int, default=0,
                 help="also time N demo GRPO steps with each engine")
  args = p.parse_args(argv)
  model_dir = prepare.prepare_gemma3_270m()
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    print(f"Gemma-3-270M + rank-{RANK} LoRA, {args.prompts} prompts x "
          f"{args.generations}, up to {args.max_new_tokens} new tokens",
          flush=True)
    ratios = {}
    # First, while this process holds no model: a demo trainer (about
    # 14 GB resident at the demo's batch) beside a vLLM server and this
    # process's own policy outgrow a 24 GB machine.
    if args.steps > 1:
      found = _step_times(args.steps, tmp)
      ratios |= {
          "step_vllm_over_tunix": found["vllm"]["time_step"]
          / found["tunix"]["time_step"],
          "generate_vllm_over_tunix": found["vllm"]["time_generate"]
          / found["tunix"]["time_generate"],
          "step_mismatch_vllm": found["vllm"]["mismatch"]}
    med = _throughput(args, model_dir, tmp)
    ratios |= {
        "grar_vllm_over_vllm_alone": med["grar_vllm"] / med["vllm_alone"],
        "tunix_over_grar_vllm": med["tunix"] / med["grar_vllm"],
        "grar_vllm_tokens_per_s": med["grar_vllm"],
        "tunix_tokens_per_s": med["tunix"]}
  print(" ".join(f"{k}={v:.3g}" for k, v in ratios.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
