"""A watch for reward hacking while training: per step, does the judge
reward length, and does it agree with the exact-answer rule?

Pure functions over one step's rollouts; the trainer puts their values in
its metrics row (metrics.csv, TensorBoard, `grar inspect`).
"""

import numpy as np


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  """The Pearson correlation of two [N] arrays; nan with fewer than two
  points or when either is constant (undefined)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.size < 2:
    return float("nan")
  dx, dy = x - x.mean(), y - y.mean()
  denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
  if denominator == 0:
    return float("nan")
  return float((dx * dy).sum() / denominator)


def agreement(judge: np.ndarray, answer: np.ndarray) -> float:
  """The fraction of rollouts where the judge's verdict (reward >= 0.5)
  matches the answer rule's (reward == 1); judge, answer: [N]; nan when N
  is 0."""
  judge, answer = np.asarray(judge), np.asarray(answer)
  if not judge.size:
    return float("nan")
  return float(np.mean((judge >= 0.5) == (answer == 1)))


def step_metrics(judge: np.ndarray, answer: np.ndarray,
                 lengths: np.ndarray) -> dict[str, float]:
  """judge_length_corr and judge_answer_agreement of one step.

  judge: [N] judge rewards, nan for an unscorable rollout (left out);
  answer: [N] exact-answer rewards; lengths: [N] completion tokens."""
  scored = ~np.isnan(judge)
  return {"judge_length_corr": pearson(judge[scored], lengths[scored]),
          "judge_answer_agreement": agreement(judge[scored], answer[scored])}


class LengthWatch:
  """Counts the steps in a row whose judge_length_corr is above
  `threshold`; `update` returns a warning every `patience` of them."""

  def __init__(self, threshold: float, patience: int):
    self.threshold = threshold
    self.patience = patience
    self.streak = 0

  def update(self, row: dict) -> str | None:
    corr = row["judge_length_corr"]
    # nan (undefined) breaks a streak: nothing was seen rewarding length.
    self.streak = self.streak + 1 if corr > self.threshold else 0
    if not self.streak or self.streak % self.patience:
      return None
    return (f"warning: the judge's reward follows completion length: "
            f"correlation {corr:.2f} at step {row['step']:.0f}, above "
            f"judge.watch.length_corr_warn={self.threshold} for "
            f"{self.streak} steps in a row; the policy may be learning to "
            "pad. Check the judge with `grar judge validate` (correct >= "
            "padded) and read long rollouts with `grar inspect`")
