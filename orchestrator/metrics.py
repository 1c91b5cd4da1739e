"""Per-step metrics: one CSV row per step, and a progress line."""

import csv
import pathlib
import sys
import time


class MetricsWriter:
  """Appends rows to metrics.csv; the first row fixes the columns."""

  def __init__(self, path: pathlib.Path, total_steps: int, out=sys.stderr):
    self._path = path
    self._columns: list[str] | None = None
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
    self._progress(row)

  def _progress(self, row) -> None:
    step = int(row["step"])
    elapsed = time.monotonic() - self._start
    eta = elapsed / step * (self._total - step)
    print(f"step {step}/{self._total}  reward {row['reward_mean']:.3f}  "
          f"judge {row['judge_mean']:.3f}  loss {row['loss']:.4f}  "
          f"kl {row['kl']:.4f}  {row['time_step']:.1f}s/step  "
          f"eta {eta:.0f}s", file=self._out, flush=True)


def read(path: pathlib.Path) -> list[dict[str, float]]:
  with open(path, newline="") as f:
    return [{k: float(v) if v != "" else float("nan") for k, v in r.items()}
            for r in csv.DictReader(f)]


def _fmt(v):
  return f"{v:.6g}" if isinstance(v, float) else v
