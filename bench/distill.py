"""`grar distill` throughput and acceptance: a vLLM teacher writes SFT rows
for generated reasoning-gym tasks (orchestrator/data/tasks.py), filtered by
format and the task's own verifier.

Prints the run's summary (traces/s, acceptance rate, rejects by reason) and
ends with one line of name=value pairs.

  .venv/bin/python bench/distill.py                  # starts vLLM itself
  .venv/bin/python bench/distill.py --model-dir DIR   # vLLM serving DIR
  .venv/bin/python bench/distill.py --base-url http://h:8000/v1 --model NAME

DIR is an HF-format model directory, e.g. what `grar export RUN_DIR --out
DIR` writes for an SFT run: the base 270M writes no reasoning format, a
teacher that has learned it does.
"""

import argparse
import json
import pathlib
import sys
import tempfile

from orchestrator.data import tasks
from orchestrator.stages import distill
from policy_worker import prepare

ROOT = pathlib.Path(__file__).resolve().parent.parent
# vLLM is started the way the tests start it.
sys.path.insert(0, str(ROOT / "tests"))
import vllm_server  # noqa: E402


def _bench(args, base_url: str, model: str, workdir: pathlib.Path) -> None:
  data = workdir / "rows.jsonl"
  rows = tasks.generate(args.task, args.rows, args.seed, options=(
      tasks.parse_options(args.option, [args.task])[args.task]))
  data.write_text("".join(json.dumps(row) + "\n" for row in rows))
  teacher = {"openai": {"base_url": base_url, "model": model,
                        "max_concurrency": args.concurrency},
             "max_tokens": args.max_tokens, "temperature": args.temperature}
  cfg = distill.load(None, [
      f"data={data}", f"out={workdir / 'sft.jsonl'}",
      f"teachers.teacher={json.dumps(teacher)}",
      f"attempts={args.attempts}", f"concurrency={args.concurrency}",
      f"seed={args.seed}"])
  summary = distill.run(cfg)
  print(json.dumps(summary, indent=2))
  print(distill.summary_text(summary))
  rejects = " ".join(f"rejected_{k}={v}"
                     for k, v in summary["rejected_by_reason"].items())
  print(f"task={args.task} rows={summary['rows']} attempts={args.attempts} "
        f"max_tokens={args.max_tokens} concurrency={args.concurrency} "
        f"traces={summary['traces']} elapsed_s={summary['elapsed_s']:.1f} "
        f"traces_per_s={summary['traces_per_s']:.2f} "
        f"kept={summary['kept']} "
        f"acceptance_rate={summary['acceptance_rate']:.3f} {rejects}".rstrip())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  vllm_server.add_endpoint_args(parser)
  parser.add_argument("--model-dir", help="the HF-format model vLLM serves "
                      "(default: the prepared Gemma-3-270M)")
  parser.add_argument("--task", default="chain_sum")
  parser.add_argument("--option", action="append", default=[],
                      metavar="NAME.KEY=VALUE", help="a generator option "
                      "(repeatable), e.g. chain_sum.max_terms=3")
  parser.add_argument("--rows", type=int, default=32)
  parser.add_argument("--attempts", type=int, default=2)
  parser.add_argument("--max-tokens", type=int, default=128)
  parser.add_argument("--temperature", type=float, default=0.7)
  parser.add_argument("--concurrency", type=int, default=16)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    workdir = pathlib.Path(tmp)
    with vllm_server.endpoint(
        args, lambda: args.model_dir or prepare.prepare_gemma3_270m(),
        workdir / "vllm.log") as (url, model):
      _bench(args, url, model, workdir)


if __name__ == "__main__":
  main()
