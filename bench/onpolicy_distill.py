"""On-policy distillation end to end, with the commands a user runs: a
teacher SFT'd from the base (`grar sft`) and merged (`grar export`), a
student (the same base, fresh LoRA) trained toward it with
configs/onpolicy-distill-tiny.yaml (`distill.rewards: false`: the teacher's
per-token advantage alone), then `grar eval` of the base and the student,
each sampling --samples completions per held-out question, with their KL
to the teacher (mean over tokens of log p_candidate - log p_teacher) and
its 95 % interval.

--model gemma3-270m (the default) uses the shipped 270M and the demo's
generated chain_sum data (runs/demo-data, made by `make demo`), the demo's
SFT and rollout settings, one device per mesh; --model tiny the tiny random
Gemma-3 on the shipped sample data. Prints the training run's teacher_kl
per step and the eval table, then name=value pairs.

  .venv/bin/python bench/onpolicy_distill.py [--model tiny] [--steps 8]
"""

import argparse
import csv
import json
import pathlib
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
GRAR = [sys.executable, "-m", "orchestrator.cli"]
ONE_DEVICE = "{policy: {fsdp: 1, tp: 1}, judge: {fsdp: 1, tp: 1}}"


def _grar(*args) -> str:
  """Runs `grar ARGS`; its progress goes to our stderr, its stdout back."""
  done = subprocess.run([*GRAR, *args], cwd=ROOT, stdout=subprocess.PIPE,
                        text=True)
  if done.returncode:
    sys.exit(f"grar {args[0]} failed ({done.returncode}): "
             f"{done.stdout[-2000:]}")
  return done.stdout


def _sets(pairs: dict) -> list[str]:
  return [a for k, v in pairs.items() for a in ("--set", f"{k}={v}")]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", choices=("gemma3-270m", "tiny"),
                 default="gemma3-270m")
  p.add_argument("--steps", type=int, default=8)
  p.add_argument("--samples", type=int, default=4)
  p.add_argument("--heldout", type=int, default=32,
                 help="held-out questions (270M: the first of "
                 "runs/demo-data/heldout.jsonl)")
  p.add_argument("--keep", default="", help="a directory for the runs")
  args = p.parse_args(argv)
  out = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="opd-"))
  out.mkdir(parents=True, exist_ok=True)
  if args.model == "tiny":
    model, sft_cfg = "{family: gemma3-tiny, seed: 0}", "configs/sft-tiny.yaml"
    sft = {"sft.steps": 30, "sft.learning_rate": 0.01}
    train, evals = {}, {"data.path": "data/heldout-sample.jsonl"}
  else:
    demo = yaml.safe_load((ROOT / "configs/demo-270m.yaml").read_text())
    if not (ROOT / demo["data"]["path"]).exists():
      sys.exit(f"{demo['data']['path']}: missing; `make demo` makes it")
    model = "{family: gemma3, dtype: float32}"
    (out / "sft.yaml").write_text(yaml.safe_dump(
        {"model": demo["model"], "mesh": demo["mesh"]["policy"],
         "sft": demo["sft"] | {"eval_every": demo["sft"]["steps"]}}))
    sft_cfg, sft = str(out / "sft.yaml"), {}
    heldout = out / "heldout.jsonl"
    lines = (ROOT / demo["eval"]["data"]).read_text().splitlines()
    heldout.write_text("\n".join(lines[:args.heldout]) + "\n")
    rollout = demo["rollout"]
    train = {"model": model, "mesh": ONE_DEVICE,
             "data.path": demo["data"]["path"],
             "rollout.max_prompt_tokens": rollout["max_prompt_tokens"],
             "rollout.max_new_tokens": rollout["max_new_tokens"],
             "grpo.lora_rank": demo["grpo"]["lora_rank"],
             "grpo.lora_alpha": demo["grpo"]["lora_alpha"],
             "grpo.learning_rate": 0.001, "judge.aggregation": "implicit",
             "judge.server.backend.max_batch": 16, "train.batch_size": 4}
    evals = {"model": model, "mesh": ONE_DEVICE, "data.path": heldout,
             "judge.aggregation": "implicit",
             "max_new_tokens": rollout["max_new_tokens"],
             "max_prompt_tokens": rollout["max_prompt_tokens"],
             "batch_size": 16}
  _grar("sft", "--config", sft_cfg, *_sets(
      {"output_dir": out, "run_name": "teacher-sft", **sft}))
  _grar("export", str(out / "teacher-sft"), "--out", str(out / "teacher"))
  family = "gemma3, dtype: float32" if args.model != "tiny" else "gemma3"
  teacher = f"{{family: {family}, path: {out / 'teacher'}}}"
  print(_grar("train", "--config", "configs/onpolicy-distill-tiny.yaml",
              *_sets({**train, "judge.server.backend.model": teacher,
                      "train.steps": args.steps, "output_dir": out,
                      "run_name": "student"})))
  with open(out / "student" / "metrics.csv", newline="") as f:
    kl = [float(r["teacher_kl_mean"]) for r in csv.DictReader(f)]
  print(_grar("eval", "--config", "configs/eval-tiny.yaml", *_sets({
      **evals, "judge.server.backend.model": teacher,
      "judge.validation.on_fail": "skip",
      "candidates": f"[{{name: base}}, {{name: student, run: "
                    f"{out / 'student'}}}]",
      "teacher_samples": args.samples, "output_dir": out / "eval"})))
  summary = json.loads((out / "eval" / "summary.json").read_text())
  base, student = summary["base"], summary["student"]
  pairs = {"train_teacher_kl_first": kl[0], "train_teacher_kl_last": kl[-1],
           "heldout_teacher_kl_base": base["teacher_kl"],
           "heldout_teacher_kl_student": student["teacher_kl"],
           "student_over_base": student["teacher_kl"] / base["teacher_kl"],
           "intervals_apart": float(student["teacher_kl_ci"][1]
                                    < base["teacher_kl_ci"][0])}
  print(f"runs in {out}")
  print(" ".join(f"{k}={v:.4g}" for k, v in pairs.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
