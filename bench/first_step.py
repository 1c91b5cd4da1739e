"""How much of a new run's first GRPO step is compiling, and how much of it
jax's persistent compilation cache (orchestrator/devices.py) gives back.

Runs the demo's GRPO (configs/demo-270m.yaml: the shipped Gemma-3-270M,
format + answer + judge rewards, the same 270M judging in-process on the
judge mesh, its validation probes first) twice with `grar train`, both with
one fresh, empty compile cache (GRAR_COMPILE_CACHE=TMP/jax-compile; the
prepared model stays in $GRAR_CACHE). The first run fills the cache; the
second should find every program there. GRPO starts from the base model's
fresh LoRA, not from SFT adapters: the demo pipeline's SFT stage, which
`grar train` has no part of, is left out (the same programs compile either
way). The demo data must exist (`make demo` makes it, runs/demo-data).

With train.staleness s the first step generates s + 1 batches before its
update, a middle step one (the last none when s >= 1); so the steady step
is the median of the middle steps (2 .. steps-1) of the first run.
Reads each run's metrics.csv (time_step) and prints run 1's and run 2's
first step, the steady step, the cache's size and how many entries run 2
added, then one line of name=value pairs, second_first_over_steady among
them (the aim: <= 1.5).

  .venv/bin/python bench/first_step.py [--steps 4] [--keep DIR] \
      [--set train.staleness=0 ...]
"""

import argparse
import csv
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "demo-270m.yaml"
# The pipeline's own sections: `grar train` takes the rest as it is.
_PIPELINE_ONLY = ("sft", "simpo", "eval")
# Variables that would put the compile cache elsewhere or turn it off.
_CACHE_VARS = ("GRAR_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR",
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
               "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
               "JAX_ENABLE_COMPILATION_CACHE")


def _entries(directory: pathlib.Path) -> list[pathlib.Path]:
  return (sorted(directory.glob("*-cache")) if directory.is_dir() else [])


def _train(config: pathlib.Path, out: pathlib.Path, name: str, steps: int,
           cache: pathlib.Path,
           overrides: list[str]) -> tuple[list[dict], float]:
  env = {k: v for k, v in os.environ.items() if k not in _CACHE_VARS}
  env["GRAR_COMPILE_CACHE"] = str(cache)
  command = [sys.executable, "-m", "orchestrator.cli", "train", "--config",
             str(config), "--set", f"train.steps={steps}",
             "--set", f"output_dir={out}", "--set", f"run_name={name}"]
  for override in overrides:
    command += ["--set", override]
  print(f"[{name}] {' '.join(command[2:])}", flush=True)
  began = time.monotonic()
  proc = subprocess.run(command, cwd=ROOT, env=env, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  wall = time.monotonic() - began
  (out / f"{name}.log").write_text(proc.stdout)
  if proc.returncode:
    sys.exit(f"[{name}] grar train failed ({proc.returncode}):\n"
             + proc.stdout[-4000:])
  with open(out / name / "metrics.csv") as f:
    rows = [{k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)]
  for row in rows:
    print(f"[{name}] step {row['step']:.0f}: {row['time_step']:.1f} s "
          f"(generate {row['time_generate']:.1f}, judge wait "
          f"{row['time_judge_wait']:.1f}, train {row['time_train']:.1f})",
          flush=True)
  print(f"[{name}] wall {wall:.0f} s, {len(_entries(cache))} cache entries",
        flush=True)
  return rows, wall


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--steps", type=int, default=4,
                  help="GRPO steps per run (at least 3: first, middle, last)")
  ap.add_argument("--keep", default="",
                  help="a directory for the runs and the cache, kept "
                       "(default: a temporary one, deleted)")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="a config override for both runs, as `grar train "
                       "--set` takes it (repeatable)")
  args = ap.parse_args()
  if args.steps < 3:
    ap.error("--steps: at least 3, for a middle step")
  config = yaml.safe_load(CONFIG.read_text())
  for name in _PIPELINE_ONLY:
    config.pop(name, None)
  if not (ROOT / config["data"]["path"]).exists():
    sys.exit(f"no {config['data']['path']}: `make demo` makes the demo data")

  out = (pathlib.Path(args.keep).resolve() if args.keep
         else pathlib.Path(tempfile.mkdtemp(prefix="grar-first-step-")))
  out.mkdir(parents=True, exist_ok=True)
  cache = out / "jax-compile"
  shutil.rmtree(cache, ignore_errors=True)
  try:
    run_config = out / "demo-grpo.yaml"
    run_config.write_text(yaml.safe_dump(config, sort_keys=False))
    first, wall1 = _train(run_config, out, "run1", args.steps, cache,
                          args.set)
    after_first = {p.name for p in _entries(cache)}
    size_mb = sum(p.stat().st_size for p in _entries(cache)) / 2**20
    second, wall2 = _train(run_config, out, "run2", args.steps, cache,
                           args.set)
    added = len({p.name for p in _entries(cache)} - after_first)
  finally:
    if not args.keep:
      shutil.rmtree(out, ignore_errors=True)

  middle = lambda rows: [r["time_step"] for r in rows[1:-1]]
  steady = statistics.median(middle(first))
  steady2 = statistics.median(middle(second))
  r1, r2 = first[0]["time_step"], second[0]["time_step"]
  print(f"\nrun 1 step 1 (empty cache):  {r1:7.1f} s")
  print(f"run 2 step 1 (filled cache): {r2:7.1f} s")
  print(f"steady step (run 1, steps 2..{args.steps - 1}): {steady:7.1f} s "
        f"(run 2: {steady2:.1f} s)")
  print(f"compile cache: {len(after_first)} entries, {size_mb:.1f} MiB after "
        f"run 1; run 2 added {added}")
  print(f"run1_first_s={r1:.1f} run2_first_s={r2:.1f} steady_s={steady:.1f} "
        f"run2_steady_s={steady2:.1f} first_over_steady={r1 / steady:.2f} "
        f"second_first_over_steady={r2 / steady:.2f} "
        f"run1_wall_s={wall1:.0f} run2_wall_s={wall2:.0f} "
        f"cache_entries={len(after_first)} cache_mib={size_mb:.1f} "
        f"run2_new_entries={added}")


if __name__ == "__main__":
  main()
