"""Interval math for held-out accuracies: pure functions, no I/O."""

import math

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
  """The Wilson score interval (low, high) for a proportion successes / n;
  95 % with the default z.

  Wilson rather than the normal approximation p +- z sqrt(p(1-p)/n): that one
  leaves [0, 1] near the ends and collapses to the single point p at 0/n and
  n/n (as if 8 right out of 8 proved a model never errs), while Wilson stays
  inside [0, 1] and still gives 0/n and n/n an interval of width ~z^2/n.
  """
  if n < 1:
    raise ValueError(f"n: must be >= 1, got {n}")
  if not 0 <= successes <= n:
    raise ValueError(f"successes: must be in [0, {n}], got {successes}")
  p = successes / n
  z2 = z * z
  denominator = 1 + z2 / n
  centre = (p + z2 / (2 * n)) / denominator
  half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
  # Clamped against rounding: low <= p <= high and both inside [0, 1] hold
  # in exact arithmetic (at 0/n low is exactly 0, at n/n high is exactly 1),
  # and error bars drawn from them must not come out negative.
  return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))
