"""LoRA SFT on tunix's PeftTrainer: prompt tokens are never targets, the
completion loss falls on the shipped rows, the held-out loss is reported,
and the checkpoint is one GRPO's LoRA model can start from."""

import dataclasses
import math
import pathlib

from flax import nnx, traverse_util
import jax
import numpy as np
import pytest

from orchestrator.rundir import metrics
from orchestrator.rundir import layout as run_dir
from orchestrator.stages import sft as sft_stage
from orchestrator.data.sft_rows import completion
from orchestrator.data import templates
from policy_worker import checkpoint, models, sft
from grar_config.model import ModelSpec

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 10
# One layer: the tiny Gemma-3 compiles in half the time, and learns as well.
SPEC = ModelSpec(num_layers=1)


def _mesh():
  return jax.sharding.Mesh(np.array(jax.devices()[:4]).reshape(1, 4),
                           ("fsdp", "tp"))


@pytest.fixture(scope="module")
def policy():
  """(mesh, a LoRA model as GRPO builds it, tokenizer); shared, as qwix's
  apply_lora takes a while. Only the warm-start test changes its adapters."""
  mesh = _mesh()
  model, tok = models.build_model(SPEC, mesh)
  return mesh, models.apply_lora(model, mesh, rank=4, alpha=8.0, seed=0), tok


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
  """One short SFT stage on the shipped sample, as the pipeline runs it."""
  cfg = dataclasses.replace(
      sft_stage.SFTConfig(data=str(ROOT / "data" / "sft-sample.jsonl")),
      steps=STEPS, learning_rate=0.01)
  out = tmp_path_factory.mktemp("stages") / "sft"
  final = sft_stage.run_sft(cfg, SPEC, _mesh(), out)
  return out, final


def test_prompt_tokens_carry_no_loss(policy):
  mesh, model, tok = policy
  prompts = [templates.render("What is 2 + 2?"), templates.render("Hi?")]
  targets = [completion("2 and 2 make 4.", "4"),
             completion("A greeting.", "hi")]
  encoded = [sft.encode(tok, p, c) for p, c in zip(prompts, targets)]
  length = max(len(ids) for ids, _ in encoded) + 3  # some padding too
  example = sft.batch(encoded, length, tok.pad_id())
  prompt_lens = [1 + len(tok.encode(p)) for p in prompts]  # BOS + prompt
  for row, mask, n, (ids, _) in zip(example.input_tokens, example.input_mask,
                                    prompt_lens, encoded):
    assert not mask[:n].any() and not mask[len(ids):].any()
    assert mask[n:len(ids)].all()
    assert row[len(ids) - 1] == tok.eos_id()

  with jax.set_mesh(mesh):
    trainer = sft.make_trainer(model, learning_rate=1e-3, max_grad_norm=1.0,
                               eval_every=1, pad_id=tok.pad_id(),
                               emit=lambda step, row: None)
    loss = sft.batch_loss(trainer, example)
    inputs = sft.model_input(example, tok.pad_id())
    logits = nnx.jit(lambda m, x: m(x["input_tokens"], x["positions"], None,
                                    x["attention_mask"])[0])(model, inputs)
  # The NLL of each completion token (and EOS) given everything before it,
  # averaged over those tokens only.
  logp = jax.nn.log_softmax(np.asarray(logits, np.float64), axis=-1)
  nll = [-logp[i, t - 1, ids[t]] for i, (ids, _) in enumerate(encoded)
         for t in range(prompt_lens[i], len(ids))]
  assert loss == pytest.approx(float(np.mean(nll)), rel=1e-4)


def test_completion_loss_falls_and_eval_loss_is_reported(stage):
  out, _ = stage
  rows = metrics.read(out / run_dir.METRICS)
  assert [int(r["step"]) for r in rows] == list(range(STEPS + 1))
  # Step 0 is the held-out evaluation before training.
  assert math.isnan(rows[0]["loss"]) and math.isfinite(rows[0]["eval_loss"])
  losses = [r["loss"] for r in rows[1:]]
  print("sft loss:", " ".join(f"{x:.3f}" for x in losses),
        f"eval {rows[0]['eval_loss']:.3f} -> {rows[-1]['eval_loss']:.3f}")
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5, losses
  assert rows[-1]["eval_loss"] < rows[0]["eval_loss"] - 0.5
  assert all(math.isnan(r["eval_loss"]) for r in rows[1:-1])


def test_stage_directory_and_grpo_warm_start(stage, policy):
  out, final = stage
  assert final == out / "checkpoints" / f"step_{STEPS}"
  assert run_dir.latest_manifest(out).step == STEPS
  saved = sft_stage.load(out / run_dir.CONFIG)
  assert saved.sft.steps == STEPS and saved.model == SPEC

  # GRPO builds a fresh LoRA policy and takes the adapters from the stage.
  _, model, _ = policy
  fresh = _flat(nnx.to_pure_dict(models.lora_state(model)))
  checkpoint.restore_lora(final, model)
  restored = _flat(nnx.to_pure_dict(models.lora_state(model)))
  saved = _flat(checkpoint.load_lora(final))
  assert saved.keys() == restored.keys()
  for key, value in saved.items():
    np.testing.assert_array_equal(restored[key], value)
  # Training moved the adapters off qwix's initial (zero "b") ones.
  assert any(not np.array_equal(fresh[k], restored[k]) for k in fresh)


def _flat(tree: dict) -> dict:
  """path (as strings: orbax gives layer indices back as strings) -> array"""
  return {tuple(map(str, k)): np.asarray(v)
          for k, v in traverse_util.flatten_dict(tree).items()}
