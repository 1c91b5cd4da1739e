"""The KL to the reference that GRPO's loss uses and metrics.csv logs is the
estimator `grpo.kl_estimator` names, computed from the per-token log-probs:
by default Schulman's k3 (DeepSeekMath's), which is never negative."""

from flax import nnx
import jax
import numpy as np
import pytest

from grar_config.model import ModelSpec
from policy_worker import grpo, models, rollout

G = 4


@pytest.fixture(scope="module")
def batch():
  """A tiny policy whose LoRA adapters are moved off zero (so it differs
  from the reference), its rollouts, and the reference's log-probs."""
  # The policy mesh the other tests use: a jit cache shared within a test
  # worker must not see one model on two device sets.
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]).reshape(1, 4),
                           ("fsdp", "tp"))
  reference, tok = models.build_model(ModelSpec(), mesh)
  policy, _ = models.build_policy(ModelSpec(), mesh, rank=4, alpha=8.0,
                                  seed=0)
  state = models.lora_state(policy)
  keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(state))))
  nnx.update(policy, jax.tree.map(
      lambda p: p + 0.3 * jax.random.normal(next(keys), p.shape, p.dtype),
      state))
  rolls = rollout.RolloutGenerator(
      policy, tok, mesh, max_prompt_tokens=16, max_new_tokens=8).generate(
          ["Count: ", "Number: "], G, temperature=1.0, top_p=1.0, seed=0)
  return mesh, policy, reference, tok, rolls


def _step(batch, estimator):
  mesh, policy, reference, tok, rolls = batch
  updater = grpo.GRPOUpdater(
      policy, reference, mesh, tok.pad_id(), tok.eos_id(),
      grpo.UpdateConfig(num_generations=G, beta=0.04, learning_rate=1e-3,
                        kl_estimator=estimator))
  ref = np.asarray(updater.reference_logps(rolls))
  pol = np.asarray(updater.policy_logps(rolls))  # before this update
  mask = rolls.completion_tokens != tok.pad_id()
  advantages = np.tile([1.0, -1.0], len(rolls.texts) // 2)
  logged = updater.step(rolls, advantages, np.ones(len(rolls.texts), bool),
                        updater.reference_logps(rolls), None)["kl"]
  return logged, pol, ref, mask


def test_k3_is_the_default_and_is_what_is_logged(batch):
  assert grpo.UpdateConfig(num_generations=G).kl_estimator == "low_var_kl"
  logged, pol, ref, mask = _step(batch, "low_var_kl")
  d = ref - pol
  expected = ((np.exp(d) - d - 1) * mask).sum() / mask.sum()
  assert logged == pytest.approx(expected, rel=1e-3, abs=1e-6)
  assert logged > 0  # the policy was moved away from the reference


def test_the_plain_estimator_is_the_log_ratio_and_can_be_negative(batch):
  logged, pol, ref, mask = _step(batch, "kl")
  expected = ((pol - ref) * mask).sum() / mask.sum()
  assert logged == pytest.approx(expected, rel=1e-3, abs=1e-6)
  # Per token it takes both signs, which k3 never does.
  assert ((pol - ref)[mask] < 0).any() and ((pol - ref)[mask] > 0).any()
