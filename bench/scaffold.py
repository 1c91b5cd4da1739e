"""Does SFT teach a reasoning scaffold? On the shipped 270M.

Generated chain_sum problems (the demo's difficulty) are written twice as
SFT rows, from the same training rows: free reasoning, and in the scaffold
Plan / Work / Check (`grar data make --scaffold`). Three candidates answer
the same held-out problems greedily:
  base      the base model, prompted with the scaffold;
  free      SFT on the free rows, prompted and scored in the free template
            (the reference: how well SFT teaches the plain format);
  scaffold  SFT on the scaffolded rows, the same steps, prompted and scored
            in the scaffold.
For each: format accuracy (format reward 1 in its own template: both blocks
and, with the scaffold, every step in order), the mean fraction of the
scaffold's steps in order (0 without one), answer accuracy, each rate with
its 95 % Wilson interval, and the mean answer length in tokens.

Usage: python bench/scaffold.py [--sft-steps 30] [--heldout 64]
           [--out runs/bench-scaffold]
Ends with one line of name=value pairs.
"""

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=2")

import isolated  # noqa: E402
import jax  # noqa: E402

from grar_config.mesh import MeshShape  # noqa: E402
from grar_config.model import ModelSpec  # noqa: E402
from judge_server import config as judge_config  # noqa: E402
from orchestrator import config as config_lib  # noqa: E402
from orchestrator import mesh as mesh_lib  # noqa: E402
from orchestrator import rewards  # noqa: E402
from orchestrator.data import tasks  # noqa: E402
from orchestrator.stages import evaluate  # noqa: E402
from orchestrator.stages import sft as sft_stage  # noqa: E402

STEPS = ("Plan", "Work", "Check")
MODEL = ModelSpec(family="gemma3", dtype="float32")
ONE = MeshShape(fsdp=1, tp=1)
# The judge takes no part in these measures: the tiny random one, unchecked.
JUDGE = config_lib.JudgeRunConfig(
    server=judge_config.JudgeConfig(backend=judge_config.BackendConfig(
        kind="jax", model=ModelSpec(family="gemma3-tiny", seed=1),
        max_batch=64)),
    validation=config_lib.JudgeValidationConfig(on_fail="skip"))


def _say(message: str) -> None:
  print(f"scaffold: {message}", file=sys.stderr, flush=True)


def _sft(data: pathlib.Path, out: pathlib.Path, scaffold: tuple, args
         ) -> pathlib.Path:
  mesh, _ = mesh_lib.plan_meshes(jax.devices(), ONE, None, MODEL)
  sft_stage.run_sft(
      sft_stage.SFTConfig(data=str(data / "sft.jsonl"), eval_fraction=0.02,
                          steps=args.sft_steps, batch_size=8,
                          learning_rate=1e-3, lora_rank=8, lora_alpha=16.0,
                          max_tokens=224, seed=args.seed),
      MODEL, mesh, out, prompt=config_lib.PromptConfig(scaffold))
  return out


def _measure(name: str, run: str, data: pathlib.Path, scaffold: tuple,
             out: pathlib.Path, args) -> dict:
  """The candidate's greedy answers to the held-out rows, measured in its
  own template."""
  report = evaluate.evaluate(evaluate.EvalConfig(
      model=MODEL, mesh=config_lib.MeshConfig(policy=ONE, judge=ONE),
      data=config_lib.DataConfig(path=str(data / "heldout.jsonl")),
      prompt=config_lib.PromptConfig(scaffold), judge=JUDGE,
      candidates=(evaluate.Candidate(name, run),), max_prompt_tokens=160,
      max_new_tokens=args.max_new_tokens, batch_size=args.eval_batch,
      output_dir=str(out)))
  rows = [json.loads(line) for line in (out / evaluate.ROWS).open()]
  steps = [rewards.scaffold_steps(
      rewards.extract_reasoning(r["completion"]) or "", STEPS) for r in rows]
  summary = report.summaries[name]
  return {"candidate": name, "format": summary["format_accuracy"],
          "format_ci": summary["format_accuracy_ci"],
          "steps": sum(steps) / len(steps),
          "answer": summary["answer_accuracy"],
          "answer_ci": summary["answer_accuracy_ci"],
          "tokens": summary["answer_tokens_mean"],
          "example": rows[0]["completion"]}


def _rate(value: float, ci: list) -> str:
  return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--train", type=int, default=1000)
  p.add_argument("--heldout", type=int, default=64)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--sft-steps", type=int, default=30)
  p.add_argument("--max-new-tokens", type=int, default=96)
  p.add_argument("--eval-batch", type=int, default=32)
  p.add_argument("--out", default="runs/bench-scaffold")
  args = p.parse_args()
  out = pathlib.Path(args.out)
  if out.exists() and any(out.iterdir()):
    raise SystemExit(f"scaffold: --out {out} is not empty")
  options = ["chain_sum.max_terms=3", "chain_sum.max_digits=2"]
  free_data, steps_data = out / "data-free", out / "data-scaffold"
  tasks.make(["chain_sum"], args.train, args.heldout, args.seed, free_data,
             options)
  tasks.make(["chain_sum"], args.train, args.heldout, args.seed, steps_data,
             options, STEPS)
  results = [isolated.run(_measure, "base", "", steps_data, STEPS,
                          out / "eval-base", args)]
  for name, data, scaffold in (("free", free_data, ()),
                               ("scaffold", steps_data, STEPS)):
    _say(f"SFT on the {name} rows, {args.sft_steps} steps")
    run = isolated.run(_sft, data, out / f"sft-{name}", scaffold, args)
    results.append(isolated.run(_measure, name, str(run), data, scaffold,
                                out / f"eval-{name}", args))
  (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
  print(f"\n{'candidate':>9}  {'format accuracy [95 %]':<24} steps  "
        f"{'answer accuracy [95 %]':<24} tokens")
  for r in results:
    print(f"{r['candidate']:>9}  {_rate(r['format'], r['format_ci']):<24} "
          f"{r['steps']:.3f}  {_rate(r['answer'], r['answer_ci']):<24} "
          f"{r['tokens']:.1f}")
  for r in results:
    print(f"\n{r['candidate']}, first held-out answer:\n{r['example']}")
  by = {r["candidate"]: r for r in results}
  print(f"heldout={args.heldout} sft_steps={args.sft_steps} "
        f"base_format={by['base']['format']:.3f} "
        f"free_format={by['free']['format']:.3f} "
        f"scaffold_format={by['scaffold']['format']:.3f} "
        f"scaffold_steps={by['scaffold']['steps']:.3f} "
        f"free_answer={by['free']['answer']:.3f} "
        f"scaffold_answer={by['scaffold']['answer']:.3f} "
        f"scaffold_over_free_format="
        f"{by['scaffold']['format'] / max(by['free']['format'], 1e-9):.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
