"""Per-step metrics: metrics.csv, the trackers (TensorBoard, W&B, MLflow),
and a progress line with ETA."""

import csv
import math
import pathlib
import sys
import time

from orchestrator.config import TrackingConfig
from orchestrator.rundir import tracking


class MetricsWriter:
  """Appends one row per step; the first row of a new file fixes the columns,
  a resumed run keeps the columns the file already has. NaN is a metric the
  step does not have: an empty CSV cell, and nothing logged to a tracker.
  The trackers are `tracking`'s (TensorBoard alone by default), and log
  `config` (None: none) when they start a new run."""

  def __init__(self, run_dir: pathlib.Path, csv_name: str, first_step: int,
               total_steps: int, out=sys.stderr,
               tracking_cfg: TrackingConfig = TrackingConfig(),
               config: dict | None = None):
    self._path = run_dir / csv_name
    self._columns: list[str] | None = None
    if self._path.exists() and self._path.stat().st_size:
      with open(self._path, newline="") as f:
        self._columns = next(csv.reader(f))
    self._trackers = tracking.start(tracking_cfg, run_dir, config, out)
    self._first = first_step
    self._total = total_steps
    self._out = out
    self._start = time.monotonic()

  def write(self, row: dict[str, float]) -> None:
    if self._columns is None:
      self._columns = list(row)
      with open(self._path, "w", newline="") as f:
        csv.writer(f).writerow(self._columns)
    with open(self._path, "a", newline="") as f:
      csv.writer(f).writerow([_fmt(row.get(c, "")) for c in self._columns])
    self._trackers.metrics(row)
    self.progress(int(row["step"]), row)

  def close(self) -> None:
    self._trackers.close()

  def progress(self, step: int, row) -> None:
    done = step - self._first + 1
    elapsed = time.monotonic() - self._start
    eta = elapsed / done * (self._total - step)
    width = 20
    filled = int(width * step / self._total)
    bar = "#" * filled + "." * (width - filled)
    level = (f"  level {row['curriculum_level']}"
             if "curriculum_level" in row else "")
    teacher = (f"teacher_kl {row['teacher_kl_mean']:.4f}  "
               if "teacher_kl_mean" in row else "")
    engine = (f"engine |dlogp| {row['engine_logp_mismatch']:.4f}  "
              if "engine_logp_mismatch" in row else "")
    update = ("no group with signal, no update" if row.get("update_skipped")
              else f"loss {row['loss']:.4f}  kl {row['kl']:.4f}")
    print(f"[{bar}] step {step}/{self._total}{level}  reward "
          f"{row['reward_mean']:.3f}  judge {row['judge_mean']:.3f}  "
          f"{update}  {teacher}{engine}{row['time_step']:.1f}s/step  "
          f"eta {eta:.0f}s",
          file=self._out, flush=True)


def read(path: pathlib.Path) -> list[dict[str, float]]:
  """The rows of metrics.csv; an empty cell (no value at that step) is NaN."""
  with open(path, newline="") as f:
    return [{k: float(v) if v != "" else float("nan") for k, v in r.items()}
            for r in csv.DictReader(f)]


def _fmt(v):
  if isinstance(v, float):
    return "" if math.isnan(v) else f"{v:.6g}"
  return v
