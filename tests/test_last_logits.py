"""The judge's last-position forward pass gives the full forward pass's
logits at each row's last real token, for right-padded rows of different
lengths (Gemma-2's case, with its logit cap, is in test_models_gemma2.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from orchestrator import mesh as mesh_lib
from policy_worker import last_logits, models
from grar_config.model import ModelSpec
import random_lora


def assert_matches_full_forward(model, mesh, rows: list[list[int]],
                                pad_id: int) -> None:
  seq = max(map(len, rows)) + 3
  tokens = np.full((len(rows), seq), pad_id, np.int32)
  for r, ids in enumerate(rows):
    tokens[r, :len(ids)] = ids
  lengths = jnp.asarray([len(ids) for ids in rows])
  tokens = jnp.asarray(tokens)
  positions = jnp.broadcast_to(jnp.arange(seq)[None], tokens.shape)
  mask = jnp.broadcast_to(jnp.tril(jnp.ones((seq, seq), bool))[None],
                          (len(rows), seq, seq))
  with jax.set_mesh(mesh):
    full, _ = model(tokens, positions, None, mask)
    last = last_logits.last_logits(model, tokens, positions, mask, lengths)
  expected = np.asarray(full)[np.arange(len(rows)), np.asarray(lengths) - 1]
  assert last.shape == expected.shape
  np.testing.assert_allclose(np.asarray(last), expected, rtol=1e-5, atol=1e-5)


def test_gemma3_last_logits():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]).reshape(1, 2),
                           mesh_lib.AXES)
  model, tok = models.build_model(ModelSpec(family="gemma3-tiny", seed=3),
                                  mesh)
  rows = [[tok.bos_id()] + tok.encode(t)
          for t in ("judge this", "a longer prompt to judge", "x")]
  assert_matches_full_forward(model, mesh, rows, tok.pad_id())


def test_gemma3_local_layers_window_by_position_as_tunix_does_by_index():
  """last_logits applies Gemma-3's local window by position (so packed
  rows can be longer than it): on ordinary rows longer than the window,
  the numbers are tunix's, which windows by index."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]).reshape(1, 2),
                           mesh_lib.AXES)
  model, tok = models.build_model(
      ModelSpec(family="gemma3-tiny", seed=3, num_layers=3,
                sliding_window_size=5), mesh)
  assert last_logits.packed_length(model) is None
  rows = [[tok.bos_id()] + tok.encode(t)
          for t in ("a prompt well past the window", "short", "x" * 17)]
  assert_matches_full_forward(model, mesh, rows, tok.pad_id())


def test_sampler_view_prefills_only_the_last_position_with_the_same_samples():
  """tunix's sampler through SamplerView: the prefill's logits are [B, 1, V]
  (not [B, P, V]) and what it samples is unchanged, for a LoRA policy after
  a weight sync too."""
  from tunix.generate import sampler as sampler_lib
  from policy_worker import rollout
  # The policy mesh of the tiny configs: samplers of one model on two
  # meshes in one process trip jax's cache (see test_eval.py).
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]).reshape(1, 4),
                           mesh_lib.AXES)
  model, tok = models.build_model(ModelSpec(family="gemma3-tiny", seed=3),
                                  mesh)
  model = models.apply_lora(model, mesh, rank=2, alpha=4.0, seed=0)
  random_lora.randomise(model, 0.5)  # qwix's fresh adapters change nothing
  view = last_logits.SamplerView(model)
  shapes = []
  real_call = last_logits.SamplerView.__call__

  def recording(self, *args, decode_only_last_token=False, **kwargs):
    logits, cache = real_call(self, *args,
                              decode_only_last_token=decode_only_last_token,
                              **kwargs)
    shapes.append((decode_only_last_token, logits.shape))
    return logits, cache

  prompts = ["what is 2 + 3?", "x", "a longer question to answer"]
  cache = sampler_lib.CacheConfig(
      cache_size=64, num_layers=model.config.num_layers,
      num_kv_heads=model.config.num_kv_heads, head_dim=model.config.head_dim)
  kwargs = dict(max_generation_steps=8, max_prompt_length=32, temperature=1.0,
                top_p=None, seed=0, pad_output=True)
  with jax.set_mesh(mesh):
    plain = sampler_lib.Sampler(model, tok, cache)(prompts, **kwargs)
    last_logits.SamplerView.__call__ = recording
    try:
      viewed = sampler_lib.Sampler(view, tok, cache)(prompts, **kwargs)
    finally:
      last_logits.SamplerView.__call__ = real_call
  assert (True, (3, 1, model.num_embed)) in shapes
  assert [list(t) for t in viewed.tokens] == [list(t) for t in plain.tokens]

  generator = rollout.RolloutGenerator(model, tok, mesh, max_prompt_tokens=32,
                                       max_new_tokens=8)
  greedy = generator.generate(prompts, 1, temperature=1.0, top_p=None, seed=0)
  assert greedy.texts == list(plain.text)
  other = models.apply_lora(
      models.build_model(ModelSpec(family="gemma3-tiny", seed=3), mesh)[0],
      mesh, rank=2, alpha=4.0, seed=0)
  random_lora.randomise(other, 0.5, seed=1)
  with jax.set_mesh(mesh):
    others = sampler_lib.Sampler(other, tok, cache)(prompts, **kwargs)
  assert list(others.text) != list(plain.text)  # the adapters matter
  generator.sync(other)  # same structure: the sampler takes its weights
  synced = generator.generate(prompts, 1, temperature=1.0, top_p=None, seed=0)
  assert synced.texts == list(others.text)

