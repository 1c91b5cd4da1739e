"""Where a GRPO step's rollouts come from, behind one small interface: the
policy's own sampler in this process, or Ray rollout workers
(orchestrator/scaleout/rollout_workers.py). The loop only publishes weights
and asks for rollouts; it does not know which source it has."""

import abc

import numpy as np

from policy_worker import rollout


class RolloutSource(abc.ABC):

  @abc.abstractmethod
  def publish(self, version: int, policy) -> None:
    """The policy's weights after `version` updates; later rollouts are
    generated from them (or, for workers that lag, from older ones, which
    the versions returned by generate say)."""

  @abc.abstractmethod
  def generate(self, prompts: list[str], num_generations: int, *,
               temperature: float, top_p: float, seed: int
               ) -> tuple[rollout.Rollouts, np.ndarray]:
    """num_generations rollouts per prompt (grouped as rollout.Rollouts
    says) and, per rollout, the policy version that generated it."""

  def close(self) -> None:
    """Frees what the source holds beyond this process."""


class LocalSampler(RolloutSource):
  """The policy's sampler on the policy mesh: always the latest weights."""

  def __init__(self, generator: rollout.RolloutGenerator):
    self._generator = generator
    self._version = 0

  def publish(self, version: int, policy) -> None:
    self._generator.sync(policy)
    self._version = version

  def generate(self, prompts, num_generations, *, temperature, top_p, seed):
    rolls = self._generator.generate(prompts, num_generations,
                                     temperature=temperature, top_p=top_p,
                                     seed=seed)
    return rolls, np.full(len(rolls.texts), self._version)
