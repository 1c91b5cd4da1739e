"""LoRA SFT on tunix's PeftTrainer: next-token loss on completion tokens only.

A sequence is [BOS] prompt completion [EOS], right-padded. tunix's default
PeftTrainer loss is the mean negative log-likelihood of the next tokens that
its `input_mask` marks; the mask passed there marks the completion and EOS
only, so the prompt is context and never a target. Attention and positions
follow the non-pad tokens, as in GRPO's log-probs.
"""

from collections.abc import Callable, Sequence
import functools

from flax import nnx
import numpy as np
import optax
from tunix.sft import peft_trainer
from tunix.sft import utils as sft_utils

from policy_worker import trainer_rows


def encode(tokenizer, prompt: str, completion: str) -> tuple[list[int], int]:
  """([BOS] prompt completion [EOS] as ids, the prompt's length with BOS)."""
  prompt_ids = [tokenizer.bos_id(), *tokenizer.encode(prompt)]
  return ([*prompt_ids, *tokenizer.encode(completion), tokenizer.eos_id()],
          len(prompt_ids))


def batch(encoded: Sequence[tuple[list[int], int]], length: int,
          pad_id: int) -> peft_trainer.TrainingInput:
  """N `encode`d sequences as input_tokens [N, length], right-padded with
  pad_id, and input_mask [N, length]: 1 on completion and EOS tokens (the
  targets), 0 on BOS, prompt and padding."""
  tokens = np.full((len(encoded), length), pad_id, np.int32)
  mask = np.zeros((len(encoded), length), np.int32)
  for i, (ids, prompt_len) in enumerate(encoded):
    if len(ids) > length:
      raise ValueError(f"sequence {i}: {len(ids)} tokens, more than {length}")
    tokens[i, :len(ids)] = ids
    mask[i, prompt_len:len(ids)] = 1
  return peft_trainer.TrainingInput(input_tokens=tokens, input_mask=mask)


def model_input(example: peft_trainer.TrainingInput, pad_id: int) -> dict:
  """The keyword arguments of tunix's default loss for a `batch`."""
  real = example.input_tokens != pad_id
  return {"input_tokens": example.input_tokens,
          "input_mask": example.input_mask,
          "positions": sft_utils.build_positions_from_mask(real),
          "attention_mask": sft_utils.make_causal_attn_mask(real)}


def lora_optimizer(learning_rate: float,
                   max_grad_norm: float) -> optax.GradientTransformation:
  """GRPO's optimizer, so a stage's checkpoint has the state layout GRPO's
  checkpoints have."""
  return optax.chain(optax.clip_by_global_norm(max_grad_norm),
                     optax.adamw(learning_rate))


def make_trainer(model: nnx.Module, *, learning_rate: float,
                 max_grad_norm: float, eval_every: int, pad_id: int,
                 emit: Callable[[int, trainer_rows.Row], None]
                 ) -> peft_trainer.PeftTrainer:
  """A PeftTrainer of `model`'s LoRA parameters that evaluates before the
  first step and every `eval_every` steps, and hands `emit(step, row)` the
  columns loss, perplexity, grad_norm, eval_loss, eval_perplexity.

  It trains on as many batches as its iterator gives; it writes no
  checkpoints itself (policy_worker.checkpoint does).
  """
  config = peft_trainer.TrainingConfig(eval_every_n_steps=eval_every)
  trainer = peft_trainer.PeftTrainer(
      model, lora_optimizer(learning_rate, max_grad_norm), config)
  trainer.with_gen_model_input_fn(
      functools.partial(model_input, pad_id=pad_id))
  trainer_rows.attach(trainer, emit)
  return trainer


def batch_loss(trainer: peft_trainer.PeftTrainer,
               example: peft_trainer.TrainingInput) -> float:
  """The trainer's loss on one batch, without an update: its compiled
  evaluation step."""
  _, eval_step = trainer.jit_train_and_eval_step()
  loss, _ = eval_step(example)
  return float(loss)
