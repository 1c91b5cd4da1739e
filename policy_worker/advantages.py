"""Group-relative advantages: pure numpy, no jax, so the reward code can use
the same standardisation."""

import numpy as np


def group_advantages(rewards: np.ndarray, num_generations: int,
                     eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
  """GRPO advantages, (r - mean) / (std + eps) within each prompt's group.

  rewards: [N] with N = groups x G; NaN marks a rollout that could not be
  rewarded (e.g. the judge could not score it). NaNs are left out of their
  group's mean and std rather than counted as 0, and a group with fewer than
  two valid members teaches nothing and is dropped.

  Returns (advantages [N] with 0 where masked, valid [N] bool).
  """
  r = np.asarray(rewards, np.float64).reshape(-1, num_generations)
  valid = ~np.isnan(r)
  valid &= valid.sum(axis=1, keepdims=True) >= 2
  count = np.maximum(valid.sum(axis=1, keepdims=True), 1)
  filled = np.where(valid, r, 0.0)
  mean = filled.sum(axis=1, keepdims=True) / count
  var = (np.where(valid, r - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count
  adv = np.where(valid, (r - mean) / (np.sqrt(var) + eps), 0.0)
  return adv.reshape(-1).astype(np.float32), valid.reshape(-1)


def teacher_advantages(student_logps: np.ndarray, teacher_logps: np.ndarray,
                       mask: np.ndarray) -> np.ndarray:
  """On-policy distillation's per-token advantages [N, T]: log p_teacher -
  log p_student of each sampled token, 0 where mask [N, T] is False.

  Its negative is the one-sample estimate of the reverse KL, KL(student ||
  teacher), at that token: the student is pushed away from the tokens it
  samples that the teacher finds unlikely, each token on its own (no sum
  over later tokens, so no variance from them), as in Agarwal et al. 2024
  (GKD) and Thinking Machines' "On-Policy Distillation" (2025).
  """
  diff = np.asarray(teacher_logps, np.float32) - np.asarray(student_logps,
                                                           np.float32)
  return np.where(mask, diff, 0.0).astype(np.float32)


def with_teacher(advantages: np.ndarray, valid: np.ndarray,
                 token_advantages: np.ndarray, coef: float, rewards: bool,
                 trainable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The per-token advantages [N, T] of a distillation step and the
  rollouts trained on [N].

  advantages, valid: group_advantages' [N]; token_advantages: [N, T]
  (teacher_advantages, 0 where the teacher did not answer); rewards: keep
  the reward advantages (else the teacher's term alone, on every rollout in
  `trainable` [N]: within the staleness bound and answered by the
  teacher); valid is narrowed to `trainable` either way."""
  if not rewards:
    advantages, valid = np.zeros_like(advantages), np.ones_like(valid)
  return (advantages[:, None] + coef * token_advantages,
          valid & trainable)


def truncated_importance_weights(trainer_logps: np.ndarray,
                                 engine_logps: np.ndarray, mask: np.ndarray,
                                 cap: float) -> tuple[np.ndarray, dict]:
  """Truncated importance sampling (TIS; Yao et al. 2025, "Your efficient RL
  framework secretly brings you off-policy RL training") for rollouts that
  an inference engine (vLLM) sampled from its own copy of the policy.

  The engine's kernels (and its top-p) give log-probs other than the
  trainer's for the same weights, so its samples are slightly off-policy.
  Each token's advantage is weighted by min(p_trainer / p_engine, cap):
  the ratio corrects the sampling distribution, the cap bounds the variance
  a token the engine found unlikely would add.

  trainer_logps, engine_logps, mask: [N, T]. Returns (weights [N, T], 0
  where mask is False; the step's metrics: mean |log p_trainer - log
  p_engine| over the tokens, the mean weight, the fraction truncated).
  """
  diff = (np.asarray(trainer_logps, np.float64)
          - np.asarray(engine_logps, np.float64))
  ratio = np.exp(np.where(mask, diff, 0.0))
  weights = np.where(mask, np.minimum(ratio, cap), 0.0)
  count = max(int(mask.sum()), 1)
  return weights.astype(np.float32), {
      "engine_logp_mismatch": float(np.abs(np.where(mask, diff, 0.0)).sum()
                                    / count),
      "tis_weight_mean": float(weights.sum() / count),
      "tis_truncated_frac": float((mask & (ratio > cap)).sum() / count)}
