"""SimPO: the loss is the published formula, and a short run on the tiny
model prefers the chosen completions more and more."""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestrator.rundir import metrics
from orchestrator.rundir import layout as run_dir
from orchestrator.stages import simpo as simpo_stage
from policy_worker import simpo
from grar_config.model import ModelSpec

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 10
# One layer: the tiny Gemma-3 compiles in half the time, and learns as well.
SPEC = ModelSpec(num_layers=1)


def test_loss_is_the_published_formula():
  rng = np.random.default_rng(0)
  chosen_logps = -rng.uniform(0.1, 3.0, (3, 5))
  rejected_logps = -rng.uniform(0.1, 3.0, (3, 5))
  chosen_mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
  rejected_mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
  # What lies under the padding must not matter, even inf or nan.
  chosen_in = np.where(chosen_mask, chosen_logps, -np.inf)
  rejected_in = np.where(rejected_mask, rejected_logps, np.nan)
  beta, gamma = 2.5, 0.7

  losses, chosen, rejected = simpo.simpo_loss(
      jnp.asarray(chosen_in), jnp.asarray(chosen_mask),
      jnp.asarray(rejected_in), jnp.asarray(rejected_mask), beta, gamma)

  for i in range(3):
    # Meng et al. 2024, eq. 6: -log sigma(beta/|y_w| log pi(y_w|x)
    #                                     - beta/|y_l| log pi(y_l|x) - gamma)
    w = chosen_logps[i][chosen_mask[i] == 1]
    l = rejected_logps[i][rejected_mask[i] == 1]
    z = beta / len(w) * w.sum() - beta / len(l) * l.sum() - gamma
    expected = -np.log(1 / (1 + np.exp(-z)))
    assert float(losses[i]) == pytest.approx(expected, rel=1e-5)
    assert float(chosen[i]) == pytest.approx(beta * w.mean(), rel=1e-5)
    assert float(rejected[i]) == pytest.approx(beta * l.mean(), rel=1e-5)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
  cfg = dataclasses.replace(
      simpo_stage.SimPOConfig(data=str(ROOT / "data" / "pairs-sample.jsonl")),
      steps=STEPS, learning_rate=0.01, eval_fraction=0.15)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]).reshape(1, 4),
                           ("fsdp", "tp"))
  out = tmp_path_factory.mktemp("stages") / "simpo"
  final = simpo_stage.run_simpo(cfg, SPEC, mesh, out)
  assert final == out / "checkpoints" / f"step_{STEPS}"
  assert (out / run_dir.CONFIG).exists()
  return metrics.read(out / run_dir.METRICS)


def test_loss_falls_and_margin_rises(rows):
  train = rows[1:]
  assert [int(r["step"]) for r in train] == list(range(1, STEPS + 1))
  loss = [r["loss"] for r in train]
  margin = [r["rewards_margin"] for r in train]
  print("simpo loss:", " ".join(f"{x:.3f}" for x in loss))
  print("simpo margin:", " ".join(f"{x:.3f}" for x in margin))
  assert np.mean(loss[-3:]) < np.mean(loss[:3]) - 0.2, loss
  assert np.mean(margin[-3:]) > np.mean(margin[:3]) + 0.5, margin
  assert np.mean([r["rewards_accuracy"] for r in train[-3:]]) > 0.8


def test_held_out_pairs_are_preferred_after_training(rows):
  before, after = rows[0], rows[-1]
  assert after["eval_loss"] < before["eval_loss"]
  assert after["eval_rewards_margin"] > before["eval_rewards_margin"] + 0.5
