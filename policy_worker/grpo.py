"""The GRPO update over tunix parts: masked group advantages, tunix's GRPO
loss, an optax step on the LoRA parameters only."""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tunix.rl import algo_core  # noqa: F401  (registers the "grpo" loss)
from tunix.rl import common
from tunix.rl import function_registry
from tunix.rl.grpo import grpo_learner

from policy_worker.rollout import Rollouts


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


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
  num_generations: int
  beta: float = 0.04
  epsilon: float = 0.2
  learning_rate: float = 1e-3
  max_grad_norm: float = 1.0
  temperature: float = 1.0


class GRPOUpdater:
  """Owns the optimizer of the policy's LoRA parameters."""

  def __init__(self, policy: nnx.Module, reference: nnx.Module,
               mesh: jax.sharding.Mesh, pad_id: int, eos_id: int,
               config: UpdateConfig):
    self.policy = policy
    self.reference = reference
    self._mesh = mesh
    self._pad, self._eos = pad_id, eos_id
    self._algo = grpo_learner.GRPOConfig(
        num_generations=config.num_generations, beta=config.beta,
        epsilon=config.epsilon)
    self._algo.temperature = config.temperature
    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                     optax.adamw(config.learning_rate))
    with jax.set_mesh(mesh):
      self.optimizer = nnx.Optimizer(policy, tx, wrt=nnx.LoRAParam)
    loss_fn = function_registry.get_policy_loss_fn("grpo")
    algo, pad, eos = self._algo, pad_id, eos_id

    @nnx.jit
    def train_step(model, optimizer, example):
      def loss(m):
        return loss_fn(m, example, algo, pad_id=pad, eos_id=eos)
      grad_fn = nnx.value_and_grad(
          loss, argnums=nnx.DiffState(0, nnx.LoRAParam), has_aux=True)
      (value, aux), grads = grad_fn(model)
      optimizer.update(model, grads)
      return value, aux, optax.global_norm(grads)

    self._train_step = train_step

  def reference_logps(self, rollouts: Rollouts) -> jax.Array:
    """[N, T] per-token log-probs of the completions under the reference."""
    with jax.set_mesh(self._mesh):
      return _ref_logps(self.reference, jnp.asarray(rollouts.prompt_tokens),
                        jnp.asarray(rollouts.completion_tokens),
                        self._pad, self._eos)

  def step(self, rollouts: Rollouts, advantages: np.ndarray,
           valid: np.ndarray, ref_logps: jax.Array | None) -> dict[str, float]:
    """One GRPO update; masked rollouts contribute no token to the loss."""
    completions = rollouts.completion_tokens
    mask = (completions != self._pad) & valid[:, None]
    example = common.TrainExample(
        prompt_ids=jnp.asarray(rollouts.prompt_tokens),
        prompt_mask=jnp.asarray(rollouts.prompt_tokens != self._pad),
        completion_ids=jnp.asarray(completions),
        completion_mask=jnp.asarray(mask),
        advantages=jnp.asarray(advantages),
        ref_per_token_logps=ref_logps if self._algo.beta else None,
        old_per_token_logps=None)
    with jax.set_mesh(self._mesh):
      loss, aux, grad_norm = self._train_step(self.policy, self.optimizer,
                                              example)
    return {"loss": float(loss), "kl": float(aux["kl"]),
            "clip_frac": float(aux["pg_clipfrac"]),
            "entropy": float(aux["entropy"]), "grad_norm": float(grad_norm)}


@nnx.jit(static_argnames=("pad_id", "eos_id"))
def _ref_logps(model, prompt_tokens, completion_tokens, pad_id, eos_id):
  graphdef, state = nnx.split(model)
  return common.compute_per_token_logps(
      graphdef, state, prompt_tokens, completion_tokens, pad_id, eos_id)
