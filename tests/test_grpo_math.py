"""Group advantages: hand-computed cases, masking of unscorable rollouts."""

import numpy as np

from policy_worker.advantages import group_advantages


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
