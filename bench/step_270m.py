"""Where a GRPO step's time goes on the shipped 270M, and how far each phase
is from what this machine allows.

The demo's step shape (4 prompts x 4 completions of up to 40 tokens, the
judge's binary few-shot implicit prompt per rollout), phase by phase with
the trainer's own parts (tunix sampler, GRPOUpdater, the jax judge
backend), each timed after a warm-up call (compiled) as the median of
--runs:
  generate   prefill and decode of the 16 rollouts
  reference  the reference's per-token log-probs
  old_logps  the behaviour policy's (staleness 1 records them)
  update     the GRPO loss, its gradient to the LoRA, the optimizer step
  judge      the judge's forward over every judge prompt (last logits only)
Each phase's limit is max(FLOPs / matmul peak, bytes / memory bandwidth),
with the peak (a float32 jnp.dot of --matmul-size squares) and bandwidth (a
reduction over 512 MiB) measured here in the same run. FLOPs count only the
work the step needs (2 per multiply-add: projections, attention scores and
values, the logits over the vocabulary): each rollout's own prompt and
completion tokens, logits at completion positions only, for reference,
old_logps and update; each prompt's own length in prefill and every decode
step for generate; the packed rows for the judge. Padding, and logits
nobody reads, count against the phase. Bytes count the weights read once
per pass (once per decode step when generating) and nothing else, so the
limits are lower bounds and a ratio is "how many times the machine's best".
The step's total is printed against the sum of the limits.

Usage: python bench/step_270m.py [--runs 3] [--size SIZE --dtype bfloat16]
--size 1b (or 4b, 12b) measures a random-weight Gemma-3 of that shape
(family gemma3-random) instead of the shipped 270M, for accelerator hosts.
Ends with one line of name=value pairs.
"""

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=2")

from flax import nnx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from grar_config.model import ModelSpec  # noqa: E402
from judge_server import packs as packs_lib  # noqa: E402
from judge_server import prompts as judge_prompts  # noqa: E402
from judge_server.backends import jax_local  # noqa: E402
from judge_server.config import BackendConfig, CriteriaConfig  # noqa: E402
from orchestrator.data import tasks, templates  # noqa: E402
from orchestrator.data.dataset import Example  # noqa: E402
from policy_worker import grpo, models, prepare, rollout  # noqa: E402

PROMPTS, G, NEW_TOKENS = 4, 4, 40


def _median_s(fn, runs: int) -> float:
  fn(0)  # compiles
  times = []
  for r in range(1, runs + 1):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(r))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def machine(device, size: int, runs: int) -> tuple[float, float]:
  """(matmul FLOP/s, memory bytes/s) of `device`, medians of `runs`."""
  a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
  dot = jax.jit(lambda x, r: (x + r) @ x)
  flops = 2 * size ** 3 / _median_s(lambda r: dot(a, r), runs)
  big = jax.device_put(jnp.ones((512 << 20) // 4, jnp.float32), device)
  total = jax.jit(lambda x, r: jnp.sum(x * r))
  return flops, big.nbytes / _median_s(lambda r: total(big, r), runs)


@dataclasses.dataclass(frozen=True)
class Shape:
  """The matmul sizes of one model: weights outside the embedding, the
  embedding (also the logit projection), attention width per layer."""
  body: int
  embedding: int
  layers: int
  attention: int  # heads x head_dim
  window: int  # the local layers' sliding window
  param_bytes: int

  def _attended(self, keys: np.ndarray) -> float:
    """Keys attended by queries that each see `keys` positions: at most
    the window on local layers (5 of 6), all on global ones."""
    return float(5 * np.minimum(keys, self.window).sum() + keys.sum()) / 6

  def forward_flops(self, lengths, logit_rows: int) -> float:
    """FLOPs of one causal forward over sequences of `lengths` tokens each
    (run in full), logits computed for `logit_rows` positions."""
    flops = sum(2 * self.body * n + 4 * self.attention * self.layers
                * self._attended(np.arange(1, n + 1)) for n in lengths)
    return flops + 2 * self.embedding * logit_rows

  def decode_flops(self, rows: int, prompt_len: int, steps: int) -> float:
    """FLOPs of `steps` decode steps of `rows` sequences after a prompt of
    prompt_len: one new token each, against the cache, with its logits."""
    keys = prompt_len + 1 + np.arange(steps)
    return rows * (steps * 2 * (self.body + self.embedding)
                   + 4 * self.attention * self.layers * self._attended(keys))


def _shape(model, spec: ModelSpec) -> Shape:
  # The base weights only: the phases' FLOPs and bytes are the base's.
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))))
  dims = spec.dims()
  embedding = dims.vocab_size * dims.embed_dim
  return Shape(body=params - embedding, embedding=embedding,
               layers=dims.num_layers,
               attention=dims.num_heads * dims.head_dim,
               window=model.config.sliding_window_size,
               param_bytes=params * jnp.dtype(spec.dtype).itemsize)


def _examples() -> list[Example]:
  rows = tasks.generate("chain_sum", PROMPTS, 0, "train",
                        {"max_terms": 3, "max_digits": 2})
  return [Example(id=r["id"], domain=r["domain"], prompt=r["prompt"],
                  answer=r["answer"], rubric=None, rubric_id=r["rubric_id"],
                  task=r["task"], metadata=r["metadata"]) for r in rows]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--matmul-size", type=int, default=2048)
  p.add_argument("--size", default="")
  p.add_argument("--dtype", default="float32")
  args = p.parse_args(argv)
  shipped = str(prepare.prepare_gemma3_270m())
  spec = (ModelSpec(family="gemma3-random", size=args.size, dtype=args.dtype)
          if args.size else ModelSpec(family="gemma3", dtype=args.dtype,
                                      path=shipped))
  devices = jax.devices()
  policy_mesh, judge_mesh = (
      jax.sharding.Mesh(np.array([d]).reshape(1, 1), ("fsdp", "tp"))
      for d in (devices[0], devices[-1]))
  peak, bandwidth = machine(devices[0], args.matmul_size, args.runs)
  print(f"{spec.name}, {args.dtype}, on {devices[0].platform}: matmul "
        f"{peak / 1e9:.1f} GFLOP/s, memory {bandwidth / 1e9:.1f} GB/s",
        flush=True)

  policy, tok = models.build_policy(spec, policy_mesh, rank=8, alpha=16.0,
                                    seed=0)
  shape = _shape(policy, spec)
  examples = _examples()
  prompts = [templates.render(ex.prompt) for ex in examples]
  # As the trainer pads them: to the longest prompt, not max_prompt_tokens.
  width = max(rollout.prompt_length(tok, p) for p in prompts)
  generator = rollout.RolloutGenerator(
      policy, tok, policy_mesh, max_prompt_tokens=width,
      max_new_tokens=NEW_TOKENS)
  updater = grpo.GRPOUpdater(policy, policy_mesh, tok.pad_id(),
                             grpo.UpdateConfig(num_generations=G),
                             prompt_width=width)
  rolls = generator.generate(prompts, G, temperature=1.0, top_p=1.0, seed=0)
  backend = jax_local.build(BackendConfig(
      model=spec, max_batch=16,
      criteria=CriteriaConfig(format="binary", few_shot=True)), judge_mesh)
  packs = packs_lib.load_packs()
  judge_texts = []
  for i, text in enumerate(rolls.texts):
    ex = examples[i // G]
    rubric = packs[ex.rubric_id]
    judge_texts.append(judge_prompts.implicit_prompt(
        ex.prompt, text, ex.answer, rubric, backend.answer,
        judge_prompts.implicit_examples(rubric)))

  N, T = rolls.completion_tokens.shape
  lengths = (rolls.prompt_tokens != tok.pad_id()).sum(1) + T
  advantages = np.linspace(-1, 1, N)
  valid = np.ones(N, bool)
  ref = updater.reference_logps(rolls)
  before = dataclasses.replace(backend.tokens)
  phases = {
      "generate": lambda r: generator.generate(
          prompts, G, temperature=1.0, top_p=1.0, seed=r).completion_tokens,
      "reference": lambda r: updater.reference_logps(rolls),
      "old_logps": lambda r: updater.policy_logps(rolls),
      "update": lambda r: updater.step(rolls, advantages, valid, ref,
                                       None)["loss"],
      "judge": lambda r: asyncio.run(backend.judge(judge_texts)),
  }
  times = {name: _median_s(fn, args.runs) for name, fn in phases.items()}
  # Tokens of the packed rows and of the padded batches the device ran,
  # per call; one batch per call (16 prompts, max_batch 16).
  calls = args.runs + 1
  judge_rows = (backend.tokens.rows - before.rows) / calls
  judge_padded = (backend.tokens.padded - before.padded) / calls

  prompt_len = int(rolls.prompt_tokens.shape[1])
  own = (rolls.prompt_tokens != tok.pad_id()).sum(1)
  steps = int(rolls.completion_lengths.max())
  forward = shape.forward_flops(lengths, N * T)
  # Prefill is one pass over each prompt's own tokens; every decode step
  # reads the weights once for N new tokens.
  work = {
      "generate": (shape.forward_flops(own, N)
                   + shape.decode_flops(N, int(own.max()), steps),
                   (steps + 1) * shape.param_bytes),
      "reference": (forward, shape.param_bytes),
      "old_logps": (forward, shape.param_bytes),
      # The loss's own forward, and the backward to the activations (the
      # base weights are frozen, so no weight gradients): 2 forwards.
      "update": (2 * forward, 2 * shape.param_bytes),
      # Logits at each prompt's last token only; attention left out (the
      # rows are packed), so this limit is lower still.
      "judge": (2 * shape.body * judge_padded
                + 2 * shape.embedding * len(judge_texts),
                shape.param_bytes),
  }
  print(f"\n{'phase':>10} {'median s':>9} {'GFLOP':>8} {'GB read':>8} "
        f"{'limit s':>8} {'x limit':>8}")
  ratios = {}
  for name, seconds in times.items():
    flops, nbytes = work[name]
    limit = max(flops / peak, nbytes / bandwidth)
    ratios[name] = seconds / limit
    print(f"{name:>10} {seconds:9.3f} {flops / 1e9:8.1f} {nbytes / 1e9:8.2f} "
          f"{limit:8.3f} {ratios[name]:8.1f}")
  total = sum(times.values())
  limits = sum(times[k] / ratios[k] for k in times)
  print(f"\n{N} rollouts, prompts {prompt_len} tokens padded ({own.min()}-"
        f"{own.max()} their own), {steps} decode steps; judge "
        f"{len(judge_texts)} prompts in rows of {judge_rows:.0f} tokens, "
        f"{judge_padded:.0f} padded, per call; phases sum to {total:.1f} s, "
        f"{total / limits:.2f}x the sum of their limits ({limits:.2f} s)")
  print(" ".join([f"{k}_x_limit={v:.3g}" for k, v in ratios.items()]
                 + [f"step_s={total:.3g}", f"step_x_limit={total / limits:.3g}"]
                 + [f"{k}_share={times[k] / total:.3f}" for k in times]
                 + [f"matmul_gflops={peak / 1e9:.3g}",
                    f"bandwidth_gbs={bandwidth / 1e9:.3g}"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
