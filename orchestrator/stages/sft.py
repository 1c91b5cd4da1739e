"""`grar sft`: LoRA SFT on reasoning rows, the warm start before GRPO.

The model learns to write `<reasoning>…</reasoning>\n<answer>…</answer>`
after the reasoning prompt (orchestrator/data/templates.py) that GRPO samples
with; only completion tokens are targets. The stage directory holds
config.yaml, metrics.csv (train loss per step, eval loss on held-out rows),
tensorboard/ and checkpoints/step_N in GRPO's LoRA checkpoint layout.
"""

import pathlib

import jax

from grar_config import strict
from grar_config.model import ModelSpec
from orchestrator.config import PromptConfig
from orchestrator.data import templates
from orchestrator.data.sft_rows import load_sft, target
from orchestrator.stages import runner
from policy_worker import sft

COLUMNS = ("loss", "perplexity", "grad_norm", "eval_loss", "eval_perplexity")


@strict.config
class SFTConfig(runner.StageConfig):
  """LoRA SFT; see runner.StageConfig for the fields."""
  data: str = "data/sft-sample.jsonl"


def _targets(rows, scaffold, where) -> list[str]:
  targets = []
  for i, row in enumerate(rows):
    try:
      targets.append(target(row, scaffold))
    except ValueError as e:
      raise ValueError(f"{where}: row {i} (counting rows from 0): {e}"
                       ) from None
  return targets


def _encode(tokenizer, cfg: SFTConfig, rows, where, scaffold):
  pairs = list(zip(rows, _targets(rows, scaffold, where)))
  return runner.encode_all(
      pairs, lambda p: sft.encode(tokenizer,
                                  templates.render(p[0].prompt, scaffold),
                                  p[1]),
      lambda enc: len(enc[0]), cfg.max_tokens, where)


def _collate(tokenizer, items):
  # One sequence length for every batch: one compiled step.
  length = max(len(ids) for ids, _ in items)
  pad = tokenizer.pad_id()
  return lambda batch: sft.batch(batch, length, pad)


def _trainer(model, cfg: SFTConfig, tokenizer, emit):
  return sft.make_trainer(
      model, learning_rate=cfg.learning_rate, max_grad_norm=cfg.max_grad_norm,
      eval_every=cfg.eval_interval, pad_id=tokenizer.pad_id(), emit=emit)


OBJECTIVE = runner.Objective("sft", COLUMNS, ("loss", "eval_loss"), load_sft,
                             _encode, _collate, _trainer)


def run_sft(cfg: SFTConfig, spec: ModelSpec, mesh: jax.sharding.Mesh,
            out_dir: pathlib.Path,
            init_lora: pathlib.Path | None = None,
            prompt: PromptConfig = PromptConfig()) -> pathlib.Path:
  """The SFT stage in `out_dir`; see runner.run_stage."""
  return runner.run_stage(OBJECTIVE, cfg, spec, mesh, out_dir, init_lora,
                          prompt)


SFTRunConfig = runner.run_config(OBJECTIVE, SFTConfig)


def load(path, overrides=()) -> SFTRunConfig:
  return strict.load(SFTRunConfig, path, overrides)


def run(cfg: SFTRunConfig) -> pathlib.Path:
  """The `grar sft` command."""
  return runner.run_alone(OBJECTIVE, cfg)
