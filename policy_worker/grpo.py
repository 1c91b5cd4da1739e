"""The GRPO update: grar's GRPO loss over completion-only log-probs, an optax
step on the LoRA parameters only, unscorable and signal-free rollouts masked
out of the loss.

The loss is tunix's GRPO loss (clipped ratio, token-level KL to the
reference, tunix's loss aggregation, entropy logged) computed from
`logps.completion_logps`: tunix 0.1.7's loss asks its per-token log-prob
function for the full [N, P + T, V] logits (it logs their entropy), which
is what this update exists to avoid, so it cannot be wrapped; the pieces
that are pure functions of log-probs (KL estimators, aggregation) are
tunix's.
"""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tunix.rl import common

from policy_worker import logps as logps_lib
from policy_worker.rollout import Rollouts


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
  num_generations: int
  beta: float = 0.04
  epsilon: float = 0.2
  learning_rate: float = 1e-3
  max_grad_norm: float = 1.0
  temperature: float = 1.0
  kl_estimator: str = "low_var_kl"  # tunix's kl_loss_mode
  # tunix's loss_agg_mode: sequence-mean-token-mean (GRPO's), token-mean
  # (DAPO's) or sequence-mean-token-scale (Dr. GRPO's, no length bias).
  loss_aggregation: str = "sequence-mean-token-mean"
  logps_chunk: int = logps_lib.DEFAULT_CHUNK


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LossBatch:
  """One update's inputs. prompt_tokens [N, P], completion_tokens [N, T];
  mask [N, T] the tokens trained on; advantages [N] or [N, T]; ref_logps,
  old_logps [N, T] or None: no reference means the policy is the
  reference (its own log-probs, gradient stopped, stand in: the KL and its
  gradient are exactly 0), no old log-probs that the batch is on-policy."""
  prompt_tokens: jax.Array
  completion_tokens: jax.Array
  mask: jax.Array
  advantages: jax.Array
  ref_logps: jax.Array | None
  old_logps: jax.Array | None


def grpo_loss(model: nnx.Module, batch: LossBatch, config: UpdateConfig,
              pad_id: int) -> tuple[jax.Array, dict]:
  """(loss, aux with kl, pg_clipfrac, entropy): the clipped surrogate
  -min(r A, clip(r, 1 - eps, 1 + eps) A) per token, r = p / p_old, plus
  beta x the KL estimator to the reference, aggregated over `mask`."""
  logps, entropy = logps_lib.completion_logps(
      model, batch.prompt_tokens, batch.completion_tokens, pad_id,
      config.temperature, config.logps_chunk, with_entropy=True)
  mask = batch.mask.astype(jnp.float32)
  same = jax.lax.stop_gradient(logps)
  old = same if batch.old_logps is None else batch.old_logps
  log_ratio = jnp.clip(logps - old, -20.0, 20.0)
  ratio = jnp.exp(log_ratio)
  adv = batch.advantages
  adv = adv if adv.ndim == 2 else adv[:, None]
  unclipped = -adv * ratio
  clipped = -adv * jnp.clip(ratio, 1 - config.epsilon, 1 + config.epsilon)
  per_token = jnp.maximum(unclipped, clipped)
  loss = common.aggregate_loss(per_token, mask, config.loss_aggregation)
  ref = same if batch.ref_logps is None else batch.ref_logps
  kl = common.compute_kl_divergence(logps, ref, config.kl_estimator)
  if config.beta:
    loss = loss + config.beta * common.aggregate_loss(
        kl, mask, config.loss_aggregation)
  tokens = jnp.maximum(mask.sum(), 1.0)
  aux = {"kl": (kl * mask).sum() / tokens,
         "pg_clipfrac": ((clipped > unclipped) * mask).sum() / tokens,
         "entropy": common.aggregate_loss(jax.lax.stop_gradient(entropy),
                                          mask, config.loss_aggregation)}
  return loss, aux


class GRPOUpdater:
  """Owns the optimizer of the policy's LoRA parameters.

  The KL reference is the policy with its LoRA parameters as they were at
  construction (`reference_lora`, by default the policy's own then: zero
  adapters on a fresh run, the warm start's with grpo.init_from): the base
  weights are the policy's, not a second copy of them.
  """

  def __init__(self, policy: nnx.Module, mesh: jax.sharding.Mesh,
               pad_id: int, config: UpdateConfig,
               reference_lora: nnx.State | None = None,
               prompt_width: int | None = None):
    """prompt_width: the run's longest prompt: every pass cuts the
    rollouts' left padding to it, since another engine (vLLM, Ray
    workers) pads to max_prompt_tokens; None keeps them as they come."""
    self.policy = policy
    self._width = prompt_width
    self.config = config
    # A copy: the policy's own arrays are replaced at every update.
    self._reference_lora = jax.tree.map(
        jnp.copy, nnx.state(policy, nnx.LoRAParam)
        if reference_lora is None else reference_lora)
    self._mesh = mesh
    self._pad = pad_id
    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                     optax.adamw(config.learning_rate))
    with jax.set_mesh(mesh):
      self.optimizer = nnx.Optimizer(policy, tx, wrt=nnx.LoRAParam)

    @nnx.jit
    def train_step(model, optimizer, batch):
      def loss(m):
        return grpo_loss(m, batch, config, pad_id)
      grad_fn = nnx.value_and_grad(
          loss, argnums=nnx.DiffState(0, nnx.LoRAParam), has_aux=True)
      (value, aux), grads = grad_fn(model)
      optimizer.update(model, grads)
      return value, aux, optax.tree.norm(grads)

    self._train_step = train_step

  def at_reference(self) -> bool:
    """Whether the policy's LoRA parameters are the reference's, bit for
    bit (a fresh run, or one whose every batch so far carried no signal)."""
    with jax.set_mesh(self._mesh):
      return bool(_same(nnx.state(self.policy, nnx.LoRAParam),
                        self._reference_lora))

  def reference_logps(self, rollouts: Rollouts) -> jax.Array:
    """[N, T] per-token log-probs of the completions under the reference."""
    return self._logps(rollouts, self._reference_lora)

  def policy_logps(self, rollouts: Rollouts) -> jax.Array:
    """[N, T] log-probs under the current policy: recorded at generation time,
    they are the behaviour policy's, which keeps the update correct when the
    batch is trained on after the policy has moved on."""
    return self._logps(rollouts, nnx.state(self.policy, nnx.LoRAParam))

  def _logps(self, rollouts: Rollouts, lora: nnx.State) -> jax.Array:
    with jax.set_mesh(self._mesh):
      return token_logps(self.policy, lora,
                         *_trimmed(rollouts, self._width, self._pad),
                         self._pad, self.config.temperature,
                         self.config.logps_chunk)

  def step(self, rollouts: Rollouts, advantages: np.ndarray,
           valid: np.ndarray, ref_logps: jax.Array | None,
           old_logps: jax.Array | None) -> dict[str, float]:
    """One GRPO update on the rollouts whose group carries signal.

    advantages: [N] or [N, T]; valid [N]: rollouts that may be trained on.
    A group carries signal when some valid member has a non-zero
    advantage; the others are masked out of the loss (KL included), so
    they neither dilute nor perturb it. With no such group no optimizer
    step is made (`update_skipped` 1): Adam would scale whatever gradient
    is left, float noise included, to a step of about the learning rate.
    ref_logps: the reference's, None when the policy was the reference as
    it generated (then its old_logps, or its own, stand in); old_logps: the
    behaviour policy's, None when the batch was generated by the current
    policy (the ratio is then exactly 1).
    """
    carries = signal_rollouts(advantages, valid, self.config.num_generations)
    signal = {"update_skipped": float(not carries.any()),
              "signal_groups": float(carries.reshape(
                  -1, self.config.num_generations).any(1).sum())}
    if not carries.any():
      return {"loss": 0.0, "kl": float("nan"), "clip_frac": 0.0,
              "entropy": float("nan"), "grad_norm": 0.0, **signal}
    if not self.config.beta or self.at_reference():
      # No KL term, or KL(policy || reference) is 0: the loss's own
      # log-probs stand in, so its value and gradient are exactly 0, not
      # another program's noise.
      ref_logps = None
    elif ref_logps is None:
      ref_logps = old_logps
      if ref_logps is None:
        raise ValueError("the policy has left the reference: the batch "
                         "needs its reference or behaviour log-probs")
    prompts, completions = _trimmed(rollouts, self._width, self._pad)
    batch = LossBatch(
        prompts, completions,
        jnp.asarray((rollouts.completion_tokens != self._pad)
                    & carries[:, None]),
        jnp.asarray(advantages, jnp.float32), ref_logps, old_logps)
    with jax.set_mesh(self._mesh):
      loss, aux, grad_norm = self._train_step(self.policy, self.optimizer,
                                              batch)
    return {"loss": float(loss), "kl": float(aux["kl"]),
            "clip_frac": float(aux["pg_clipfrac"]),
            "entropy": float(aux["entropy"]), "grad_norm": float(grad_norm),
            **signal}


def signal_rollouts(advantages: np.ndarray, valid: np.ndarray,
                    num_generations: int) -> np.ndarray:
  """[N] bool: the valid rollouts of the groups in which some valid
  member's advantage (or, for [N, T] advantages, some token's) is not 0."""
  adv = np.abs(np.asarray(advantages)).reshape(len(valid), -1).max(1)
  moving = (valid & (adv > 0)).reshape(-1, num_generations).any(1)
  return valid & np.repeat(moving, num_generations)


def completion_logps(model: nnx.Module, rollouts: Rollouts,
                     mesh: jax.sharding.Mesh, pad_id: int,
                     temperature: float = 1.0) -> np.ndarray:
  """[N, T] log-probs of the rollouts' completions under `model` as it is
  (its own LoRA); those past a completion's end are of its padding, for
  the caller to mask."""
  with jax.set_mesh(mesh):
    return np.asarray(token_logps(
        model, nnx.state(model, nnx.LoRAParam),
        *_trimmed(rollouts, None, pad_id),
        pad_id, temperature, logps_lib.DEFAULT_CHUNK))


def _trimmed(rollouts: Rollouts, width: int | None, pad_id: int
             ) -> tuple[jax.Array, jax.Array]:
  """(prompt_tokens cut to their last `width` columns, all of it with
  None; completion_tokens), on device. The same numbers: positions and
  the attention mask ignore left padding."""
  prompts = np.asarray(rollouts.prompt_tokens)
  if width and width < prompts.shape[1]:
    if (prompts[:, :-width] != pad_id).any():
      raise ValueError(f"a prompt is longer than prompt_width={width}")
    prompts = prompts[:, -width:]
  return jnp.asarray(prompts), jnp.asarray(rollouts.completion_tokens)


@nnx.jit(static_argnames=("pad_id", "temperature", "chunk"))
def token_logps(model, lora, prompt_tokens, completion_tokens, pad_id,
                temperature, chunk):
  """model's completion log-probs with `lora` (an nnx.State of its LoRA
  parameters) in place of its own: one program for the reference and the
  behaviour policy. The same temperature as the loss applies, so ratios
  and KL compare like with like."""
  graphdef, state = nnx.split(model)
  model = nnx.merge(graphdef, nnx.merge_state(state, lora))
  return logps_lib.completion_logps(model, prompt_tokens, completion_tokens,
                                    pad_id, temperature, chunk)


@jax.jit
def _same(a, b) -> jax.Array:
  return jnp.all(jnp.array(
      [jnp.array_equal(x, y) for x, y in zip(jax.tree.leaves(a),
                                             jax.tree.leaves(b))]))
