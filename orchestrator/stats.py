"""Interval math for held-out accuracies: pure functions, no I/O."""

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
