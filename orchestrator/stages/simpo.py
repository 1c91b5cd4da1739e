"""`grar simpo`: SimPO on preference pairs, to lock in the reasoning format
after SFT without a reference model (policy_worker/simpo.py).

Pairs come from a file (orchestrator/data/preference_pairs.py); the prompt the
model sees is the reasoning prompt GRPO samples with. The stage directory
holds config.yaml, metrics.csv (loss, the chosen-minus-rejected reward
margin and preference accuracy per step, their eval_ counterparts on
held-out pairs), tensorboard/ and checkpoints/step_N in GRPO's LoRA
checkpoint layout.
"""

import pathlib

import jax

from grar_config import strict
from grar_config.model import ModelSpec
from orchestrator.config import PromptConfig
from orchestrator.data import templates
from orchestrator.data.preference_pairs import load_pairs
from orchestrator.stages import runner
from policy_worker import simpo

_METRICS = ("rewards_chosen", "rewards_rejected", "rewards_margin",
            "rewards_accuracy", "log_probs_chosen", "log_probs_rejected")
COLUMNS = ("loss", "grad_norm", *_METRICS, "eval_loss",
           *(f"eval_{m}" for m in _METRICS))


@strict.config
class SimPOConfig(runner.StageConfig):
  """SimPO; see runner.StageConfig for the shared fields. beta scales
  the length-normalised log-likelihood (the implicit reward); gamma is the
  target margin between chosen and rejected rewards (Meng et al. use beta
  2-2.5 and gamma/beta about 0.5)."""
  data: str = "data/pairs-sample.jsonl"
  beta: float = 2.0
  gamma: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    if self.beta <= 0:
      raise ValueError(f"beta: must be > 0, got {self.beta}")
    if self.gamma < 0:
      raise ValueError(f"gamma: must be >= 0, got {self.gamma}")


def _encode(tokenizer, cfg: SimPOConfig, pairs, where, scaffold):
  return encode_pairs(tokenizer, [templates.render(p.prompt, scaffold)
                                  for p in pairs], pairs, cfg.max_tokens,
                      where)


def encode_pairs(tokenizer, prompts, pairs, max_tokens: int, where):
  """((prompt text, pair), token lengths) of each pair under its prompt
  text, for `collate`; a pair over max_tokens is an error naming `where`."""
  def tokens(item):
    # (prompt with BOS, chosen with EOS, rejected with EOS)
    prompt, pair = item
    return (1 + len(tokenizer.encode(prompt)),
            1 + len(tokenizer.encode(pair.chosen)),
            1 + len(tokenizer.encode(pair.rejected)))
  items = list(zip(prompts, pairs))
  lengths = runner.encode_all(items, tokens, lambda n: n[0] + max(n[1:]),
                              max_tokens, where)
  return list(zip(items, lengths))


def collate(tokenizer, items):
  # One prompt and one response length for every batch: one compiled step.
  prompt_len = max(n[0] for _, n in items)
  response_len = max(max(n[1:]) for _, n in items)

  def one(batch):
    pairs = [pair for (_, pair), _ in batch]
    return simpo.encode_pairs(
        tokenizer, [prompt for (prompt, _), _ in batch],
        [p.chosen for p in pairs], [p.rejected for p in pairs], prompt_len,
        response_len)
  return one


def _trainer(model, cfg: SimPOConfig, tokenizer, emit):
  return simpo.make_trainer(
      model, beta=cfg.beta, gamma=cfg.gamma, learning_rate=cfg.learning_rate,
      max_grad_norm=cfg.max_grad_norm, eval_every=cfg.eval_interval,
      emit=emit)


OBJECTIVE = runner.Objective(
    "simpo", COLUMNS, ("loss", "rewards_margin", "rewards_accuracy",
                       "eval_loss"), load_pairs, _encode, collate, _trainer)


def run_simpo(cfg: SimPOConfig, spec: ModelSpec, mesh: jax.sharding.Mesh,
              out_dir: pathlib.Path,
              init_lora: pathlib.Path | None = None,
              prompt: PromptConfig = PromptConfig()) -> pathlib.Path:
  """The SimPO stage in `out_dir`; see runner.run_stage."""
  return runner.run_stage(OBJECTIVE, cfg, spec, mesh, out_dir, init_lora,
                          prompt)


SimPORunConfig = runner.run_config(OBJECTIVE, SimPOConfig)


def load(path, overrides=()) -> SimPORunConfig:
  return strict.load(SimPORunConfig, path, overrides)


def run(cfg: SimPORunConfig) -> pathlib.Path:
  """The `grar simpo` command."""
  return runner.run_alone(OBJECTIVE, cfg)
