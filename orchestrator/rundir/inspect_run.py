"""`grar inspect RUN_DIR`: what a run did, from its metrics and journal.

Prints a per-step summary and the best and worst rollouts with their
per-criterion judge scores, and writes PNG plots into RUN_DIR/plots.
"""

import pathlib
from typing import TextIO

import matplotlib
matplotlib.use("Agg")  # files only; no display on a TPU VM or in CI
import matplotlib.pyplot as plt
import numpy as np

from orchestrator.rundir import journal as journal_lib
from orchestrator.rundir import metrics as metrics_lib
from orchestrator.rundir import layout as run_dir_lib

COMPONENTS = ("reward", "format", "answer", "judge")
# Shown when the run logged them (runs before the relevance reward did not).
OPTIONAL_COMPONENTS = ("relevance",)
TIME_SPLIT = ("time_generate", "time_judge_wait", "time_train")


# Columns whose names the table would cut unreadably.
_HEADERS = {"judge_length_corr": "judge~length", "judge_answer_agreement":
            "judge=answer"}


class InspectError(ValueError):
  pass


def _components(rows) -> list[str]:
  return [*COMPONENTS,
          *(c for c in OPTIONAL_COMPONENTS if f"{c}_mean" in rows[0])]


def _table(rows) -> str:
  cols = ["step", *(f"{c}_mean" for c in _components(rows)),
          "unscorable_rate", "judge_length_corr", "judge_answer_agreement",
          "loss", "kl", "staleness", "judge_latency_p50_ms", "time_step"]
  lines = ["  ".join(f"{_HEADERS.get(c, c)[:14]:>14}" for c in cols)]
  for r in rows:
    lines.append("  ".join(f"{r.get(c, float('nan')):>14.4g}" for c in cols))
  return "\n".join(lines)


def _sample(record) -> str:
  criteria = " ".join(f"c{i}={s:.2f}" for i, s in record["judge_criteria"])
  rewards = " ".join(f"{k}={v:.3f}" for k, v in record["rewards"].items())
  return (f"  step {record['step']} {record['rollout_id']}  reward "
          f"{record['reward']:.3f} ({rewards})  {record['judge_status']}"
          f"{'  ' + criteria if criteria else ''}\n"
          f"    prompt: {record['prompt'][:100]!r}\n"
          f"    completion: {record['completion'][:200]!r}")


def _rewards_figure(rows):
  fig, ax = plt.subplots(figsize=(7, 4))
  steps = [r["step"] for r in rows]
  for c in _components(rows):
    ax.plot(steps, [r[f"{c}_mean"] for r in rows], marker="o", label=c)
  ax.set(xlabel="step", ylabel="mean reward", title="Reward components")
  ax.legend()
  return fig


def _save(figure, path: pathlib.Path) -> pathlib.Path:
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path


def plot_rewards(run_dir: pathlib.Path) -> pathlib.Path:
  """Writes RUN_DIR/plots/rewards.png, the mean of each reward component
  per GRPO step from the run's metrics.csv, and returns its path; prints
  nothing (inspect's report without the report)."""
  run_dir = pathlib.Path(run_dir)
  rows = _metrics(run_dir)
  missing = [f"{c}_mean" for c in COMPONENTS if f"{c}_mean" not in rows[0]]
  if missing:
    raise InspectError(f"{run_dir}: {run_dir_lib.METRICS} has no {missing[0]}"
                       "; not a GRPO run")
  (run_dir / "plots").mkdir(exist_ok=True)
  return _save(_rewards_figure(rows), run_dir / "plots" / "rewards.png")


def _metrics(run_dir: pathlib.Path) -> list[dict[str, float]]:
  """The rows of RUN_DIR's metrics.csv; InspectError if it has none."""
  metrics_path = run_dir / run_dir_lib.METRICS
  if not metrics_path.exists():
    raise InspectError(f"{run_dir}: no {run_dir_lib.METRICS}; not a run "
                       "directory, or no step has finished")
  rows = metrics_lib.read(metrics_path)
  if not rows:
    raise InspectError(f"{run_dir}: no step has finished yet")
  return rows


def _plots(rows, records, out: pathlib.Path) -> list[pathlib.Path]:
  out.mkdir(exist_ok=True)
  steps = [r["step"] for r in rows]
  fig = _rewards_figure(rows)
  paths = [out / "rewards.png"]

  latencies = [r["judge_latency_ms"] for r in records
               if r["judge_status"] == "SCORED"]
  fig2, ax2 = plt.subplots(figsize=(7, 4))
  ax2.hist(latencies, bins=30)
  ax2.set(xlabel="judge latency (ms)", ylabel="rollouts",
          title="Judge latency")
  paths.append(out / "judge_latency.png")

  fig3, ax3 = plt.subplots(figsize=(7, 4))
  bottom = np.zeros(len(rows))
  for key in TIME_SPLIT:
    values = np.array([r[key] for r in rows])
    ax3.bar(steps, values, bottom=bottom, label=key.removeprefix("time_"))
    bottom += values
  ax3.set(xlabel="step", ylabel="seconds", title="Time per step")
  ax3.legend()
  paths.append(out / "time_split.png")

  return [_save(figure, path)
          for figure, path in zip((fig, fig2, fig3), paths)]


def inspect(run_dir: pathlib.Path, out: TextIO, samples: int = 3) -> int:
  run_dir = pathlib.Path(run_dir)
  rows = _metrics(run_dir)
  records = list(journal_lib.read(run_dir / run_dir_lib.JOURNAL))
  if not records:
    raise InspectError(f"{run_dir}: no step has finished yet")
  print(f"run {run_dir}: {len(rows)} steps, {len(records)} rollouts, "
        f"{sum(r['judge_status'] != 'SCORED' for r in records)} unscorable",
        file=out)
  print(_table(rows), file=out)
  ranked = sorted((r for r in records if np.isfinite(r["reward"])),
                  key=lambda r: r["reward"])
  print(f"\nbest {samples}:", file=out)
  for r in reversed(ranked[-samples:]):
    print(_sample(r), file=out)
  print(f"\nworst {samples}:", file=out)
  for r in ranked[:samples]:
    print(_sample(r), file=out)
  print("\nplots:", file=out)
  for path in _plots(rows, records, run_dir / "plots"):
    print(f"  {path}", file=out)
  return 0
