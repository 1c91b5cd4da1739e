"""A scalar reward model: the policy's Gemma with LoRA and a linear head on
the final hidden state of each sequence's last real token, trained on
preference pairs with the Bradley-Terry loss -log sigmoid(r_chosen -
r_rejected).

The last token (EOS, after [BOS] prompt completion) has attended to the
whole rollout, so it summarises it; a mean over tokens would be mostly the
prompt, which a pair's two rows share. The head's weights are LoRAParams so
that what trains, saves and restores "the adapters" (tunix's PeftTrainer,
policy_worker.checkpoint) takes the head with them. Training rides tunix's
DPO trainer, whose preprocessing lays out a pair as SimPO's does
(simpo.encode_pairs): chosen rows, then rejected rows.
"""

from collections.abc import Callable, Sequence
import json
import pathlib

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
from tunix.sft import utils as sft_utils
from tunix.sft.dpo import dpo_trainer

from grar_config.model import ModelSpec
from policy_worker import checkpoint, models, sft, trainer_rows

# Beside the checkpoint's files: the normalisation (mean, std) and what
# rebuilding the model needs (lora_rank, lora_alpha, max_tokens).
NORMALISATION = "reward_model.json"
AUX = ("rewards/chosen", "rewards/rejected", "rewards/margin",
       "rewards/accuracy")


class RewardModel(nnx.Module):
  """policy: a LoRA Gemma (models.build_policy); width: its embed_dim."""

  def __init__(self, policy: nnx.Module, width: int, seed: int):
    self.policy = policy
    key = jax.random.key(seed)
    # Small and random, not zero: a zero head gives the adapters no
    # gradient at the first step and ties every pair at the first eval.
    self.head = nnx.LoRAParam(
        jax.random.normal(key, (width,), jnp.float32) / np.sqrt(width))

  def __call__(self, tokens: jax.Array, positions: jax.Array,
               attention_mask: jax.Array, last: jax.Array) -> jax.Array:
    """Rewards [B] of rows tokens [B, L] read at index last [B]."""
    self.policy(tokens, positions, None, attention_mask,
                output_hidden_states=True)
    (hidden,) = nnx.pop(self.policy, nnx.Intermediate)["all_hidden_states"]
    at = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    return at.astype(jnp.float32) @ self.head[...]


def pair_loss(rm: RewardModel, train_example: dpo_trainer.TrainExample):
  """The trainer's loss: Bradley-Terry over chosen then rejected rows."""
  example = train_example
  prompt_len = example.input_ids.shape[1] - example.completion_mask.shape[1]
  last = prompt_len + example.completion_mask.sum(-1) - 1
  r = rm(example.input_ids, example.positions, example.attention_mask, last)
  half = r.shape[0] // 2
  chosen, rejected = r[:half], r[half:]
  margin = chosen - rejected
  aux = dict(zip(AUX, (chosen.mean(), rejected.mean(), margin.mean(),
                       (margin > 0).mean())))
  return -jax.nn.log_sigmoid(margin).mean(), aux


class RewardTrainer(dpo_trainer.DPOTrainer):
  """tunix's DPO trainer with the Bradley-Terry loss of a RewardModel."""

  def __init__(self, rm: RewardModel, optimizer,
               training_config: dpo_trainer.DPOTrainingConfig):
    super().__init__(rm, None, optimizer, training_config)
    self.with_loss_fn(pair_loss, has_aux=True)
    self.with_gen_model_input_fn(lambda x: {"train_example": x})
    self._aux_metrics_to_log = {name: np.mean for name in AUX}


def make_trainer(rm: RewardModel, *, learning_rate: float,
                 max_grad_norm: float, eval_every: int,
                 emit: Callable[[int, trainer_rows.Row], None]
                 ) -> RewardTrainer:
  """A trainer of the adapters and head that evaluates before the first step
  and every `eval_every` steps, and hands `emit(step, row)` the columns
  loss, grad_norm, rewards_chosen, rewards_rejected, rewards_margin,
  rewards_accuracy (pairwise accuracy) and their eval_ counterparts."""
  config = dpo_trainer.DPOTrainingConfig(eval_every_n_steps=eval_every)
  trainer = RewardTrainer(rm, sft.lora_optimizer(learning_rate,
                                                 max_grad_norm), config)
  trainer_rows.attach(trainer, emit)
  return trainer


def encode_rollouts(tokenizer, prompts: Sequence[str],
                    completions: Sequence[str], length: int):
  """(tokens, positions, attention mask, last index) of [BOS] prompt
  completion [EOS] rows, right-padded to `length`; ValueError for a longer
  row."""
  rows = [[tokenizer.bos_id(), *tokenizer.encode(p), *tokenizer.encode(c),
           tokenizer.eos_id()] for p, c in zip(prompts, completions)]
  tokens = np.full((len(rows), length), tokenizer.pad_id(), np.int32)
  for i, row in enumerate(rows):
    if len(row) > length:
      raise ValueError(f"rollout {i}: {len(row)} tokens, more than {length}")
    tokens[i, :len(row)] = row
  real = tokens != tokenizer.pad_id()
  return (tokens, sft_utils.build_positions_from_mask(real),
          sft_utils.make_causal_attn_mask(real),
          np.array([len(r) - 1 for r in rows], np.int32))


@nnx.jit
def _rewards(rm, tokens, positions, mask, last):
  return rm(tokens, positions, mask, last)


def rewards(rm: RewardModel, tokenizer, prompts: Sequence[str],
            completions: Sequence[str], batch_size: int,
            length: int) -> np.ndarray:
  """Raw rewards of the rollouts, batch_size at a time, each batch padded to
  batch_size x length so one shape compiles once."""
  out = []
  for start in range(0, len(prompts), batch_size):
    p = list(prompts[start:start + batch_size])
    c = list(completions[start:start + batch_size])
    n = len(p)
    p, c = p + p[:1] * (batch_size - n), c + c[:1] * (batch_size - n)
    out.append(np.asarray(_rewards(
        rm, *encode_rollouts(tokenizer, p, c, length)))[:n])
  return np.concatenate(out) if out else np.zeros(0, np.float32)


def normalise(raw: np.ndarray, mean: float, std: float) -> np.ndarray:
  """Rewards in [0, 1]: sigmoid((r - mean) / std)."""
  return 1 / (1 + np.exp(-(np.asarray(raw, np.float64) - mean) / std))


def build(spec: ModelSpec, mesh: jax.sharding.Mesh, rank: int, alpha: float,
          seed: int):
  """(a fresh RewardModel of `spec` on `mesh`, its tokenizer)."""
  policy, tokenizer = models.build_policy(spec, mesh, rank=rank, alpha=alpha,
                                          seed=seed)
  rm = RewardModel(policy, policy.embedder.input_embedding.shape[-1], seed)
  # Replicated on the mesh, as the adapters are; made on one device.
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  rm.head[...] = jax.device_put(rm.head[...], replicated)
  return rm, tokenizer


def load(directory: pathlib.Path, spec: ModelSpec, mesh: jax.sharding.Mesh):
  """(RewardModel, tokenizer, the NORMALISATION dict) of a checkpoint
  directory `grar rm train` wrote; ValueError when it is not one."""
  directory = pathlib.Path(directory)
  meta = directory / NORMALISATION
  if not meta.is_file():
    raise ValueError(f"{directory}: no {NORMALISATION}; not a checkpoint of "
                     "`grar rm train`")
  norm = json.loads(meta.read_text())
  rm, tokenizer = build(spec, mesh, norm["lora_rank"], norm["lora_alpha"], 0)
  checkpoint.restore_lora(directory, rm)
  return rm, tokenizer, norm
