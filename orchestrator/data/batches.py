"""Which examples a step trains on: a pure function of (seed, step), so a
resumed run, and every stage, sees the data a fresh run would."""

import numpy as np


def batch_for_step(num_examples: int, batch_size: int, seed: int,
                   step: int) -> list[int]:
  """Example indices of `step` (1-based): epochs are seeded permutations,
  each cut into whole batches, so step k's batch never depends on history."""
  per_epoch = num_examples // batch_size
  epoch, slot = divmod(step - 1, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  return order[slot * batch_size:(slot + 1) * batch_size].tolist()
