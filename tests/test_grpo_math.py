"""Group advantages: hand-computed cases, masking of unscorable rollouts."""

import numpy as np
import pytest

from policy_worker.advantages import (
    group_advantages, truncated_importance_weights)


def test_advantages_are_standardised_within_each_group():
  rewards = np.array([1.0, 0.0, 0.5, 0.5,   # group 1
                      0.2, 0.2, 0.2, 0.2])  # group 2: no spread
  adv, valid = group_advantages(rewards, 4)
  # group 1: mean 0.5, population std sqrt(0.125)
  std = np.sqrt(0.125)
  np.testing.assert_allclose(adv[:4], [0.5 / std, -0.5 / std, 0, 0], atol=1e-4)
  np.testing.assert_allclose(adv[4:], 0.0)
  assert valid.all()


def test_nan_rewards_are_masked_not_zero():
  rewards = np.array([1.0, np.nan, 0.0, 0.5])
  adv, valid = group_advantages(rewards, 4)
  assert valid.tolist() == [True, False, True, True]
  assert adv[1] == 0.0
  # The baseline is the mean of the three scored rollouts (0.5), not 0.375.
  std = np.sqrt(((0.5) ** 2 + 0.5 ** 2 + 0) / 3)
  np.testing.assert_allclose(adv[[0, 2, 3]], [0.5 / std, -0.5 / std, 0],
                             atol=1e-4)


def test_group_with_fewer_than_two_scored_members_is_dropped():
  rewards = np.array([np.nan, 0.7, np.nan, np.nan, 0.1, 0.9, 0.5, 0.5])
  adv, valid = group_advantages(rewards, 4)
  assert not valid[:4].any()
  np.testing.assert_array_equal(adv[:4], 0.0)
  assert valid[4:].all()


def test_truncated_importance_weights_on_hand_computed_tokens():
  # Row 0: the engine agrees (weight 1), the trainer finds the token twice
  # as likely (ratio 2, under the cap of 3), then four times (truncated to
  # 3); row 1: the engine is surer (ratio 1/2), then padding.
  trainer = np.log([[0.5, 0.4, 0.8], [0.1, 0.3, 0.3]])
  engine = np.log([[0.5, 0.2, 0.2], [0.2, 0.9, 0.9]])
  mask = np.array([[True, True, True], [True, False, False]])
  weights, row = truncated_importance_weights(trainer, engine, mask, cap=3.0)
  np.testing.assert_allclose(weights, [[1.0, 2.0, 3.0], [0.5, 0.0, 0.0]],
                             rtol=1e-6)
  ln2, ln4 = np.log(2), np.log(4)
  assert row["engine_logp_mismatch"] == pytest.approx(
      (0 + ln2 + ln4 + ln2) / 4)
  assert row["tis_weight_mean"] == pytest.approx((1 + 2 + 3 + 0.5) / 4)
  assert row["tis_truncated_frac"] == pytest.approx(1 / 4)

