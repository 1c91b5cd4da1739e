"""The judge's last-position forward pass gives the full forward pass's
logits at each row's last real token, for right-padded rows of different
lengths (Gemma-2's case, with its logit cap, is in test_models_gemma2.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from orchestrator import mesh as mesh_lib
from policy_worker import last_logits, models
from policy_worker.spec import ModelSpec


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
