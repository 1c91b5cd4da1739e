"""The paired difference of two answer accuracies on the same problems:
Newcombe's interval (orchestrator.stats.newcombe_paired) against a
published value, hand-worked tables and its edge cases, and a paired
bootstrap as an independent cross-check."""

import numpy as np
import pytest

from orchestrator import stats

# Hand-worked, from the definitions in newcombe_paired's docstring and the
# Wilson bounds of tests/test_eval.py (z^2 = 3.841459):
#   Wilson(5, 10) = 0.5 -+ 1.959964 / 1.384146 * sqrt(0.025 + 0.009604)
#                 = 0.5 -+ 0.263407 = (0.236593, 0.763407)
#   Wilson(7, 10) = (0.396778, 0.892209), Wilson(3, 10) its mirror
#                 (0.107791, 0.603222)
#   Wilson(0, 10) = (0, 0.277533), Wilson(1, 1) = (0.206549, 1), Wilson(0, 1)
#                 = (0, 3.841459 / 4.841459) = (0, 0.793451)
CASES = [
    # All pairs concordant, a=5 d=5: p1 = p2 = 0.5, ad - bc = 25 > 0 shrinks
    # by n/2 to 20, phi = 20 / sqrt(5^4) = 0.8; each side is
    # sqrt(w^2 - 2 * 0.8 * w^2 + w^2) = w sqrt(0.4) with w = 0.263407:
    # +- 0.166593. Not a point: agreeing on 10 problems is weak evidence.
    ((5, 0, 0, 5), 0.0, (-0.166593, 0.166593)),
    # Disagreeing on every pair, b=5 c=5: phi = -25 / 25 = -1; each side is
    # sqrt(w^2 + 2 w^2 + w^2) = 2w: +- 0.526814, the widest any pairing
    # makes these margins (two independent samples: w sqrt(2)).
    ((0, 5, 5, 0), 0.0, (-0.526814, 0.526814)),
    # c = 0: a=3 b=4 d=3, p1 = 0.7, p2 = 0.3, difference 0.4. ad - bc = 9
    # shrinks to 4, phi = 4 / sqrt(7 * 3 * 3 * 7) = 4/21.
    # low: p1 - l1 = 0.303222 = u2 - p2, so sqrt(2 * 0.303222^2 * 17/21)
    #      = sqrt(0.148861) = 0.385825 below 0.4: 0.014175;
    # high: u1 - p1 = 0.192209 = p2 - l2, sqrt(2 * 0.192209^2 * 17/21)
    #      = 0.244570 above: 0.644570.
    ((3, 4, 0, 3), 0.4, (0.014175, 0.644570)),
    # b = 0 and the first never right: a=0 c=3 d=7, p1 = 0, p2 = 0.3,
    # difference -0.3; a margin is 0, so phi = 0.
    # low: sqrt(0^2 + (0.603222 - 0.3)^2) = 0.303222: -0.603222;
    # high: sqrt(0.277533^2 + (0.3 - 0.107791)^2) = sqrt(0.113969)
    #      = 0.337593: 0.037593.
    ((0, 0, 3, 7), -0.3, (-0.603222, 0.037593)),
    # n = 1, only the first right: p1 = 1, p2 = 0, phi = 0.
    # low: 1 - sqrt((1 - 0.206549)^2 + 0.793451^2) = 1 - 1.122109
    #      = -0.122109; high: 1 + sqrt(0 + 0) = 1.
    ((0, 1, 0, 0), 1.0, (-0.122109, 1.0)),
    # n = 1, both right: p1 = p2 = 1, phi = 0: -+ (1 - 0.206549).
    ((1, 0, 0, 0), 0.0, (-0.793451, 0.793451)),
]


@pytest.mark.parametrize("table,difference,want", CASES)
def test_newcombe_on_hand_worked_tables(table, difference, want):
  a, b, c, d = table
  assert (b - c) / sum(table) == pytest.approx(difference)
  assert stats.newcombe_paired(*table) == pytest.approx(want, abs=1e-6)


def test_newcombe_reproduces_the_published_example():
  # Fagerland, Lydersen and Laake, Statistical Analysis of Contingency
  # Tables (2017), chapter 8: complete response before and after
  # consolidation therapy (Cavo et al. 2012), 59 both, 6 before only, 16
  # after only, 80 neither; Newcombe's square-and-add interval of the
  # difference -0.0621 is (-0.1186, -0.0046) (also the R package
  # contingencytables' own test).
  low, high = stats.newcombe_paired(59, 6, 16, 80)
  assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)


@pytest.mark.parametrize("table", [(5, 0, 0, 5), (3, 4, 0, 3), (0, 0, 3, 7),
                                   (59, 6, 16, 80), (0, 0, 0, 1), (2, 9, 1, 0)])
def test_newcombe_is_inside_and_mirrors(table):
  a, b, c, d = table
  low, high = stats.newcombe_paired(*table)
  assert -1 <= low <= (b - c) / sum(table) <= high <= 1
  # Swapping the two candidates swaps b and c and mirrors the interval.
  assert stats.newcombe_paired(a, c, b, d) == pytest.approx((-high, -low))


def test_newcombe_agrees_with_a_paired_bootstrap():
  # 500 problems, the first right on 40 %, the second on the same ones plus
  # 8 % more, with some noise both ways: a table like an eval's.
  rng = np.random.default_rng(0)
  first = rng.random(500) < 0.4
  second = (first | (rng.random(500) < 0.08)) & (rng.random(500) > 0.03)
  a, b = int(np.sum(first & second)), int(np.sum(first & ~second))
  c, d = int(np.sum(~first & second)), int(np.sum(~first & ~second))
  # Resampling problems (the pairs together), 20000 times: the percentile
  # interval of the difference.
  picks = rng.integers(0, 500, size=(20000, 500))
  diffs = first[picks].mean(axis=1) - second[picks].mean(axis=1)
  boot = np.percentile(diffs, [2.5, 97.5])
  assert (b - c) / 500 == pytest.approx(first.mean() - second.mean())
  assert stats.newcombe_paired(a, b, c, d) == pytest.approx(boot, abs=0.005)


def test_newcombe_refuses_impossible_tables():
  with pytest.raises(ValueError, match="n: must be >= 1"):
    stats.newcombe_paired(0, 0, 0, 0)
  with pytest.raises(ValueError, match="c: must be >= 0, got -1"):
    stats.newcombe_paired(3, 2, -1, 4)
