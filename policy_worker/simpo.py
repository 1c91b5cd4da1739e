"""SimPO (Meng et al. 2024) on tunix's DPO trainer, with no reference model.

  L = -log sigmoid(beta * (log pi(y_w|x) / |y_w| - log pi(y_l|x) / |y_l|)
                   - gamma)

The implicit reward is the length-normalised log-likelihood, so the loss
needs only the policy: tunix's DPOTrainer is given no reference model (its
preprocessing then runs no reference forward pass) and SimPO's loss in
place of DPO's. Its tokenised input is prompt [BOS] + prompt, left-padded,
and each response + [EOS], right-padded.
"""

from collections.abc import Callable, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
from tunix.rl import common
from tunix.sft.dpo import dpo_trainer

from policy_worker import sft, trainer_rows

# Per step, means over the batch's pairs; rewards are beta * the mean token
# log-prob of a response.
AUX = ("rewards/chosen", "rewards/rejected", "rewards/margin",
       "rewards/accuracy", "log_probs/chosen", "log_probs/rejected")


def simpo_loss(chosen_logps: jax.Array, chosen_mask: jax.Array,
               rejected_logps: jax.Array, rejected_mask: jax.Array,
               beta: float, gamma: float):
  """Per-pair SimPO loss.

  *_logps: [B, T] per-token log-probs of a response; *_mask: [B, T], 1 on
  the response's tokens (padding may hold anything). Returns (losses [B],
  chosen_rewards [B], rejected_rewards [B]), reward = beta * the mean
  log-prob of the response's tokens.
  """
  def mean_logp(logps, mask):
    return jnp.where(mask > 0, logps, 0).sum(-1) / jnp.maximum(
        mask.sum(-1), 1)

  chosen = beta * mean_logp(chosen_logps, chosen_mask)
  rejected = beta * mean_logp(rejected_logps, rejected_mask)
  return -jax.nn.log_sigmoid(chosen - rejected - gamma), chosen, rejected


def simpo_loss_fn(model: nnx.Module, train_example: dpo_trainer.TrainExample,
                  beta: float, gamma: float):
  """The trainer's loss: one forward pass over chosen then rejected rows."""
  logps = common.get_per_token_logps(
      model, input_tokens=train_example.input_ids,
      positions=train_example.positions,
      attn_mask=train_example.attention_mask,
      logits_to_keep=train_example.logits_to_keep)
  mask = train_example.completion_mask
  half = logps.shape[0] // 2
  losses, chosen, rejected = simpo_loss(logps[:half], mask[:half],
                                        logps[half:], mask[half:], beta, gamma)
  aux = dict(zip(AUX, (chosen.mean(), rejected.mean(),
                       (chosen - rejected).mean(),
                       (chosen > rejected).mean(), chosen.mean() / beta,
                       rejected.mean() / beta)))
  return losses.mean(), aux


class SimPOTrainer(dpo_trainer.DPOTrainer):
  """tunix's DPO trainer with SimPO's loss and no reference model."""

  def __init__(self, model: nnx.Module, optimizer,
               training_config: dpo_trainer.DPOTrainingConfig, gamma: float):
    super().__init__(model, None, optimizer, training_config)
    beta = training_config.beta
    self.with_loss_fn(simpo_loss_fn, has_aux=True)
    self.with_gen_model_input_fn(lambda x: {
        "train_example": x, "beta": beta, "gamma": gamma})
    self._aux_metrics_to_log = {name: np.mean for name in AUX}


def _pad(rows: Sequence[list[int]], length: int, pad_id: int,
         left: bool) -> tuple[np.ndarray, np.ndarray]:
  ids = np.full((len(rows), length), pad_id, np.int32)
  for i, row in enumerate(rows):
    if len(row) > length:
      raise ValueError(f"sequence {i}: {len(row)} tokens, more than {length}")
    if left:
      ids[i, length - len(row):] = row
    else:
      ids[i, :len(row)] = row
  return ids, (ids != pad_id).astype(np.int32)


def encode_pairs(tokenizer, prompts: Sequence[str], chosen: Sequence[str],
                 rejected: Sequence[str], prompt_length: int,
                 response_length: int) -> dpo_trainer.TrainingInput:
  """N pairs as tunix's DPO input: prompt_ids [N, prompt_length] left-padded,
  chosen_ids / rejected_ids [N, response_length] right-padded, and masks."""
  pad = tokenizer.pad_id()
  prompt_ids, prompt_mask = _pad(
      [[tokenizer.bos_id(), *tokenizer.encode(p)] for p in prompts],
      prompt_length, pad, left=True)
  responses = [_pad([[*tokenizer.encode(r), tokenizer.eos_id()] for r in rs],
                    response_length, pad, left=False)
               for rs in (chosen, rejected)]
  (chosen_ids, chosen_mask), (rejected_ids, rejected_mask) = responses
  return dpo_trainer.TrainingInput(
      prompt_ids=prompt_ids, prompt_mask=prompt_mask, chosen_ids=chosen_ids,
      chosen_mask=chosen_mask, rejected_ids=rejected_ids,
      rejected_mask=rejected_mask)


def make_trainer(model: nnx.Module, *, beta: float, gamma: float,
                 learning_rate: float, max_grad_norm: float, eval_every: int,
                 emit: Callable[[int, trainer_rows.Row], None]
                 ) -> SimPOTrainer:
  """A SimPO trainer of `model`'s LoRA parameters that evaluates before the
  first step and every `eval_every` steps, and hands `emit(step, row)` the
  columns loss, grad_norm, rewards_chosen, rewards_rejected, rewards_margin,
  rewards_accuracy, log_probs_chosen, log_probs_rejected and their eval_
  counterparts."""
  config = dpo_trainer.DPOTrainingConfig(
      eval_every_n_steps=eval_every, algorithm="simpo", beta=beta)
  trainer = SimPOTrainer(model, sft.lora_optimizer(learning_rate,
                                                   max_grad_norm),
                         config, gamma)
  trainer_rows.attach(trainer, emit)
  return trainer
