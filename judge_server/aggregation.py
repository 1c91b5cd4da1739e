"""Turning judge scores into one reward in [0, 1].

Pure functions over plain floats and numpy arrays, so the math is tested on
hand-computed cases independent of any backend.
"""

from typing import Sequence

import numpy as np

from protos.rubric import Rubric


def expected_score(probs: np.ndarray, min_mass: float = 0.0
                   ) -> tuple[float | None, float]:
  """Expected score in [0, 1] from probabilities over answers worth 0..K.

  On the 0-9 scale the answers are the digits; in the binary format they
  are (no, yes), K = 1, so the score is P(yes) / (P(yes) + P(no)).

  Args:
    probs: [K+1] probabilities the judge gave the answers, in value order
      (not renormalised: their sum is the mass the judge put on valid
      answers).
    min_mass: below this mass the judge was not answering as asked and the
      score is None (unscorable) rather than a guess.

  Returns:
    (score or None, mass).
  """
  probs = np.asarray(probs, dtype=np.float64)
  mass = float(probs.sum())
  if not np.isfinite(mass) or mass <= 0 or mass < min_mass:
    return None, mass
  k = len(probs) - 1
  # Clipped because float rounding can put a mean of all-9s a hair above 1.
  score = np.dot(probs / mass, np.arange(k + 1)) / k
  return float(np.clip(score, 0.0, 1.0)), mass


def explicit(rubric: Rubric, scores: Sequence[float]) -> float:
  """Weighted mean of per-criterion scores; satisfied pitfalls subtract.

  reward = clip((sum_pos w_i s_i - sum_neg w_j s_j) / sum_pos w_i, 0, 1)

  Dividing by the positive weights only means a perfect response with no
  pitfall scores 1, and each pitfall met costs its weight's share.
  """
  if len(scores) != len(rubric.criteria):
    raise ValueError(
        f"{len(scores)} scores for {len(rubric.criteria)} criteria")
  gain = loss = total = 0.0
  for c, s in zip(rubric.criteria, scores):
    if not 0.0 <= s <= 1.0:
      raise ValueError(f"criterion score {s} outside [0, 1]")
    if c.polarity == "positive":
      gain += c.weight * s
      total += c.weight
    else:
      loss += c.weight * s
  return float(np.clip((gain - loss) / total, 0.0, 1.0))


def implicit(score: float) -> float:
  """The holistic score is already normalised; this only checks its range."""
  if not 0.0 <= score <= 1.0:
    raise ValueError(f"holistic score {score} outside [0, 1]")
  return float(score)
