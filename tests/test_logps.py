"""Completion-only, vocabulary-chunked log-probs (policy_worker/logps.py)
give tunix's numbers and gradients; the GRPO update moves nothing without
signal and sees an exactly-zero KL at the reference."""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tunix.rl import algo_core  # noqa: F401  (registers tunix's "grpo" loss)
from tunix.rl import common
from tunix.rl import function_registry
from tunix.rl.grpo import grpo_learner

from grar_config.model import ModelSpec
from policy_worker import grpo, logps, models, rollout
import random_lora

G = 4
TEMPERATURE = 0.7


def _mesh():
  # The policy mesh the other tests use: a jit cache shared within a test
  # worker must not see one model on two device sets.
  return jax.sharding.Mesh(np.array(jax.devices()[:4]).reshape(1, 4),
                           ("fsdp", "tp"))


@pytest.fixture(scope="module")
def tiny():
  """A tiny policy with non-zero LoRA adapters and rollouts of it, their
  prompts left-padded by 24 more columns, as another engine's come padded
  to max_prompt_tokens."""
  mesh = _mesh()
  policy, tok = models.build_policy(ModelSpec(), mesh, rank=4, alpha=8.0,
                                    seed=0)
  random_lora.randomise(policy, 0.05)
  rolls = rollout.RolloutGenerator(
      policy, tok, mesh, max_prompt_tokens=40, max_new_tokens=10).generate(
          ["What is 2 + 3?", "Count: one"], G, temperature=1.0, top_p=1.0,
          seed=0)
  padded = np.pad(rolls.prompt_tokens, ((0, 0), (24, 0)),
                  constant_values=tok.pad_id())
  return mesh, policy, tok, dataclasses.replace(rolls, prompt_tokens=padded)


def _tunix_logps(policy, rolls, tok, temperature):
  graphdef, state = nnx.split(policy)
  return np.asarray(common.compute_per_token_logps(
      graphdef, state, jnp.asarray(rolls.prompt_tokens),
      jnp.asarray(rolls.completion_tokens), tok.pad_id(), tok.eos_id(),
      temperature=temperature))


def test_completion_logps_are_tunix_s_to_1e_5_per_token(tiny):
  mesh, policy, tok, rolls = tiny
  mask = rolls.completion_tokens != tok.pad_id()
  with jax.set_mesh(mesh):
    expected = _tunix_logps(policy, rolls, tok, TEMPERATURE)
    # Several chunks (the tiny vocabulary is 256), and one.
    for chunk in (64, 256):
      mine = np.asarray(nnx.jit(
          lambda m, p, c, chunk=chunk: logps.completion_logps(
              m, p, c, tok.pad_id(), TEMPERATURE, chunk))(
                  policy, jnp.asarray(rolls.prompt_tokens),
                  jnp.asarray(rolls.completion_tokens)))
      np.testing.assert_allclose(mine[mask], expected[mask], atol=1e-5)
  whole = grpo.completion_logps(policy, rolls, mesh, tok.pad_id(),
                                TEMPERATURE)
  np.testing.assert_allclose(whole[mask], expected[mask], atol=1e-5)
  # The updater's passes cut the padding to the run's longest prompt.
  longest = int((rolls.prompt_tokens != tok.pad_id()).sum(1).max())
  updater = grpo.GRPOUpdater(policy, mesh, tok.pad_id(), grpo.UpdateConfig(
      num_generations=G, temperature=TEMPERATURE, logps_chunk=64),
      prompt_width=longest)
  cut = np.asarray(updater.policy_logps(rolls))
  np.testing.assert_allclose(cut[mask], expected[mask], atol=1e-5)
  assert grpo._trimmed(rolls, longest, tok.pad_id())[0].shape[1] == longest
  with pytest.raises(ValueError, match="longer than prompt_width"):
    grpo._trimmed(rolls, longest - 1, tok.pad_id())


def test_chunked_logps_and_entropy_match_the_full_softmax():
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(3, 5, 8)), jnp.float32)
  embedding = jnp.asarray(rng.normal(size=(96, 8)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 96, size=(3, 5)))
  for softcap in (None, 2.0):
    logits = hidden @ embedding.T
    if softcap:
      logits = jnp.tanh(logits / softcap) * softcap
    full = jax.nn.log_softmax(logits / 0.5)
    expected = jnp.take_along_axis(full, targets[..., None], -1)[..., 0]
    entropy = -(jnp.exp(full) * full).sum(-1)
    got, got_entropy = logps.chunked_logps(hidden, embedding, targets, 0.5,
                                           softcap, 32, with_entropy=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got_entropy, entropy, atol=1e-5)


def _tunix_loss_and_grads(policy, batch, tok, config):
  algo = grpo_learner.GRPOConfig(num_generations=G, beta=config.beta,
                                 epsilon=config.epsilon,
                                 kl_loss_mode=config.kl_estimator)
  algo.temperature = config.temperature
  loss_fn = function_registry.get_policy_loss_fn("grpo")
  example = common.TrainExample(
      prompt_ids=batch.prompt_tokens,
      prompt_mask=batch.prompt_tokens != tok.pad_id(),
      completion_ids=batch.completion_tokens, completion_mask=batch.mask,
      advantages=batch.advantages, ref_per_token_logps=batch.ref_logps,
      old_per_token_logps=batch.old_logps)
  return nnx.value_and_grad(
      lambda m: loss_fn(m, example, algo, pad_id=tok.pad_id(),
                        eos_id=tok.eos_id()),
      argnums=nnx.DiffState(0, nnx.LoRAParam), has_aux=True)(policy)


def test_the_loss_and_its_gradient_are_tunix_s(tiny):
  mesh, policy, tok, rolls = tiny
  config = grpo.UpdateConfig(num_generations=G, beta=0.04,
                             temperature=TEMPERATURE, logps_chunk=64)
  mask = rolls.completion_tokens != tok.pad_id()
  rng = np.random.default_rng(1)
  with jax.set_mesh(mesh):
    own = _tunix_logps(policy, rolls, tok, TEMPERATURE)
    # A reference and a behaviour policy the current one has moved from.
    batch = grpo.LossBatch(
        jnp.asarray(rolls.prompt_tokens), jnp.asarray(rolls.completion_tokens),
        jnp.asarray(mask), jnp.asarray(rng.normal(size=len(mask)),
                                       jnp.float32),
        jnp.asarray(own + rng.normal(0, 0.1, own.shape), jnp.float32),
        jnp.asarray(own + rng.normal(0, 0.1, own.shape), jnp.float32))
    (expected, expected_aux), expected_grads = _tunix_loss_and_grads(
        policy, batch, tok, config)
    (loss, aux), grads = nnx.value_and_grad(
        lambda m: grpo.grpo_loss(m, batch, config, tok.pad_id()),
        argnums=nnx.DiffState(0, nnx.LoRAParam), has_aux=True)(policy)
  assert float(loss) == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
  for name in ("kl", "pg_clipfrac", "entropy"):
    assert float(aux[name]) == pytest.approx(float(expected_aux[name]),
                                             rel=1e-4, abs=1e-6), name
  for mine, theirs in zip(jax.tree.leaves(grads),
                          jax.tree.leaves(expected_grads)):
    np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-6)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 0


def _updater(policy, mesh, tok, beta=0.04):
  return grpo.GRPOUpdater(policy, mesh, tok.pad_id(), grpo.UpdateConfig(
      num_generations=G, beta=beta, learning_rate=1e-2,
      temperature=TEMPERATURE, logps_chunk=64))


def test_no_signal_no_step_the_lora_bit_for_bit_unchanged(tiny):
  mesh, policy, tok, rolls = tiny
  updater = _updater(policy, mesh, tok)
  before = jax.tree.map(np.asarray, models.lora_state(policy))
  n = len(rolls.texts)
  for _ in range(3):
    row = updater.step(rolls, np.zeros(n, np.float32), np.ones(n, bool),
                       None, None)
    assert row["update_skipped"] == 1 and row["signal_groups"] == 0
    assert row["grad_norm"] == 0
  after = jax.tree.map(np.asarray, models.lora_state(policy))
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    np.testing.assert_array_equal(a, b)
  assert updater.at_reference()


def test_at_the_reference_the_kl_is_exactly_zero(tiny):
  mesh, policy, tok, rolls = tiny
  updater = _updater(policy, mesh, tok)
  assert updater.at_reference()
  n = len(rolls.texts)
  advantages = np.zeros(n, np.float32)
  advantages[:2] = [1.0, -1.0]  # one group carries signal
  row = updater.step(rolls, advantages, np.ones(n, bool),
                     updater.reference_logps(rolls), None)
  assert row["kl"] == 0.0 and row["update_skipped"] == 0
  assert row["signal_groups"] == 1 and row["grad_norm"] > 0
  assert not updater.at_reference()
  # Moved: the next step has a real KL, measured against the reference.
  row = updater.step(rolls, advantages, np.ones(n, bool),
                     updater.reference_logps(rolls), None)
  assert row["kl"] > 0


def test_flat_groups_are_masked_out_not_diluting():
  valid = np.ones(8, bool)
  advantages = np.array([0, 0, 0, 0, 1, -1, 0, 0], np.float32)
  np.testing.assert_array_equal(grpo.signal_rollouts(advantages, valid, 4),
                                [0, 0, 0, 0, 1, 1, 1, 1])
  # A masked member's advantage is no signal; per-token advantages count
  # by any token.
  valid[4:6] = False
  assert not grpo.signal_rollouts(advantages, valid, 4).any()
  tokens = np.zeros((8, 3), np.float32)
  tokens[1, 2] = 0.5
  np.testing.assert_array_equal(
      grpo.signal_rollouts(tokens, np.ones(8, bool), 4),
      [1, 1, 1, 1, 0, 0, 0, 0])


def test_gemma3_270m_logps_are_tunix_s(gemma3_270m_dir):
  mesh = _mesh()
  policy, tok = models.build_policy(
      ModelSpec(family="gemma3", path=str(gemma3_270m_dir)), mesh, rank=4,
      alpha=8.0, seed=0)
  random_lora.randomise(policy, 0.05)
  rolls = rollout.RolloutGenerator(
      policy, tok, mesh, max_prompt_tokens=48, max_new_tokens=12).generate(
          ["What is 17 * 3?", "Name a primary colour."], 2, temperature=1.0,
          top_p=1.0, seed=0)
  mask = rolls.completion_tokens != tok.pad_id()
  with jax.set_mesh(mesh):
    expected = _tunix_logps(policy, rolls, tok, 1.0)
  mine = grpo.completion_logps(policy, rolls, mesh, tok.pad_id())
  # float32's floor here: tunix against itself, its prompts padded to 16
  # or to 48 columns, differs by up to 3.7e-5 per token (|log p| ~3.5).
  np.testing.assert_allclose(mine[mask], expected[mask], atol=1e-4)
