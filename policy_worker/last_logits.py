"""Next-token logits after each sequence's last real token, and only there.

A Gemma forward pass projects every position onto the vocabulary; with
Gemma-3's 262144 tokens that projection is most of the activation memory of
a judge batch (8 x 512 positions: 4.3 GB of float32 logits) and about as many
FLOPs as the whole 270M trunk. A judge reads one position per prompt, so this
runs tunix's layers itself and projects only the gathered last positions.
"""

from flax import nnx
import jax
import jax.numpy as jnp


def last_logits(model: nnx.Module, tokens: jax.Array, positions: jax.Array,
                mask: jax.Array, lengths: jax.Array) -> jax.Array:
  """Logits [B, V] at position lengths[b] - 1 of each row.

  model: a tunix Gemma-3 (text) or Gemma/Gemma-2 Transformer; tokens,
  positions: [B, L]; mask: [B, L, L] attention mask; lengths: [B].
  Same numbers as model(tokens, positions, None, mask)[0] at those positions.
  """
  x = model.embedder.encode(tokens)
  for layer in model.layers:
    _, x = layer(x, positions, None, mask)
  x = jnp.take_along_axis(x, (lengths - 1)[:, None, None], axis=1)[:, 0]
  logits = model.embedder.decode(model.final_norm(x))
  # Gemma-2 caps its logits; Gemma-3 has no such attribute.
  cap = getattr(model, "final_logits_softcap", None)
  if cap is not None:
    logits = jnp.tanh(logits / cap) * cap
  return logits
