"""Interval math for held-out measures: pure functions, no I/O."""

import numpy as np

from judge_server import validation


def wilson(successes: int, n: int) -> tuple[float, float]:
  """The 95 % Wilson score interval (low, high) of successes / n right
  answers (judge_server.validation.wilson), refusing counts that cannot
  be: an eval always has rows, and more hits than rows is a bug."""
  if n < 1:
    raise ValueError(f"n: must be >= 1, got {n}")
  if not 0 <= successes <= n:
    raise ValueError(f"successes: must be in [0, {n}], got {successes}")
  return validation.wilson(successes, n)


def mean_interval(values) -> tuple[float, float, float]:
  """(mean, low, high): the 95 % normal interval of the mean of `values`,
  mean +- 1.96 standard errors (no width from a single value)."""
  x = np.asarray(values, np.float64)
  if not x.size:
    raise ValueError("values: must not be empty")
  half = 1.96 * x.std(ddof=1) / np.sqrt(x.size) if x.size > 1 else 0.0
  return float(x.mean()), float(x.mean() - half), float(x.mean() + half)
