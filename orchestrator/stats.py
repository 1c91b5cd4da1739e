"""Interval math for held-out measures: pure functions, no I/O."""

import math

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


def newcombe_paired(a: int, b: int, c: int, d: int) -> tuple[float, float]:
  """The 95 % interval (low, high) of the difference of two proportions
  measured on the same n = a + b + c + d pairs, p1 - p2 = (b - c) / n,
  where a pairs are successes of both, b of the first only, c of the
  second only and d of neither.

  Newcombe's method 10 (R. G. Newcombe, "Improved confidence intervals for
  the difference between binomial proportions based on paired data",
  Statistics in Medicine 17:2635-2650, 1998): the Wilson intervals
  [l1, u1] of p1 = (a + b) / n and [l2, u2] of p2 = (a + c) / n, combined
  as the variance of a difference of correlated estimates would be,
    low = p1 - p2 - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
    high = p1 - p2 + sqrt((u1 - p1)^2 - 2 phi (u1 - p1)(p2 - l2) + (p2 - l2)^2)
  with phi the pairs' correlation (ad - bc) / sqrt((a+b)(c+d)(a+c)(b+d)),
  corrected as Newcombe does: a positive ad - bc shrinks by n / 2 (not
  below 0), and phi is 0 where a margin is empty.

  Paired because two models asked the same questions share their hard and
  easy ones: only the b + c discordant pairs carry the difference, and two
  marginal intervals that overlap say nothing about it. Not the Wald
  interval (b - c) / n +- 1.96 se: it collapses to a point at b = c = 0
  and leaves [-1, 1]; Newcombe's stays inside and keeps its coverage down
  to small n."""
  for name, count in zip("abcd", (a, b, c, d)):
    if count < 0:
      raise ValueError(f"{name}: must be >= 0, got {count}")
  n = a + b + c + d
  l1, u1 = wilson(a + b, n)
  l2, u2 = wilson(a + c, n)
  p1, p2 = (a + b) / n, (a + c) / n
  margins = (a + b) * (c + d) * (a + c) * (b + d)
  cross = a * d - b * c
  if cross > 0:
    cross = max(cross - n / 2, 0)
  phi = cross / math.sqrt(margins) if margins else 0.0
  # |phi| <= 1 keeps both radicands >= 0; max() only absorbs rounding.
  below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)
                        + (u2 - p2) ** 2))
  above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2)
                        + (p2 - l2) ** 2))
  return p1 - p2 - below, p1 - p2 + above
