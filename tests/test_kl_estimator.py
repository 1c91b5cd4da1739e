"""The KL to the reference that GRPO's loss uses and metrics.csv logs is the
estimator `grpo.kl_estimator` names, computed from the per-token log-probs:
by default Schulman's k3 (DeepSeekMath's), which is never negative."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grar_config.model import ModelSpec
from policy_worker import grpo, models, rollout

G = 4


@pytest.fixture(scope="module")
def batch():
  """A tiny policy whose LoRA adapters are moved off zero (so it differs
  from the reference, the policy with its starting adapters), its
  rollouts, and the base model it was built on."""
  # The policy mesh the other tests use: a jit cache shared within a test
  # worker must not see one model on two device sets.
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]).reshape(1, 4),
                           ("fsdp", "tp"))
  base, tok = models.build_model(ModelSpec(), mesh)
  policy, _ = models.build_policy(ModelSpec(), mesh, rank=4, alpha=8.0,
                                  seed=0)
  start = jax.tree.map(jnp.copy, models.lora_state(policy))
  state = models.lora_state(policy)
  keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(state))))
  nnx.update(policy, jax.tree.map(
      lambda p: p + 0.3 * jax.random.normal(next(keys), p.shape, p.dtype),
      state))
  rolls = rollout.RolloutGenerator(
      policy, tok, mesh, max_prompt_tokens=16, max_new_tokens=8).generate(
          ["Count: ", "Number: "], G, temperature=1.0, top_p=1.0, seed=0)
  return mesh, policy, start, base, tok, rolls


def _updater(batch, estimator):
  mesh, policy, start, _, tok, _ = batch
  return grpo.GRPOUpdater(
      policy, mesh, tok.pad_id(),
      grpo.UpdateConfig(num_generations=G, beta=0.04, learning_rate=1e-3,
                        kl_estimator=estimator), reference_lora=start)


def test_the_reference_is_the_base_model_without_a_copy_of_it(batch):
  mesh, policy, _, base_model, tok, rolls = batch
  updater = _updater(batch, "low_var_kl")
  base = grpo.GRPOUpdater(base_model, mesh, tok.pad_id(),
                          grpo.UpdateConfig(num_generations=G))
  np.testing.assert_allclose(updater.reference_logps(rolls),
                             base.policy_logps(rolls), atol=1e-5)
  assert np.abs(np.asarray(updater.policy_logps(rolls))
                - np.asarray(updater.reference_logps(rolls))).max() > 0.1
  # The updater holds the LoRA parameters only: no base weight of its own.
  held = jax.tree.leaves(updater._reference_lora)
  assert sum(x.size for x in held) == sum(
      x.size for x in jax.tree.leaves(models.lora_state(policy)))


def _step(batch, estimator):
  *_, tok, rolls = batch
  updater = _updater(batch, estimator)
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
