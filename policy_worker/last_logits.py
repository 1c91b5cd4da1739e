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

  model: a tunix Gemma-3 (text) or Gemma/Gemma-2 Transformer without LoRA
  (qwix's adapters apply inside the model's own __call__, not here);
  tokens, positions: [B, L]; mask: [B, L, L] attention mask; lengths: [B].
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


class SamplerView(nnx.Module):
  """A model as tunix's sampler calls it, projecting only the last prompt
  position onto the vocabulary in prefill.

  The sampler asks its transformer for `decode_only_last_token` when its
  __call__ takes that argument; tunix's Gemma models do not, so a prefill of
  B prompts of P positions builds B x P x 262144 float32 logits (6.4 GB at
  B=64, P=96 on Gemma-3) to read one column. The sampler left-pads prompts,
  so the last column is every row's last real token. Everything else the
  sampler reads of its transformer is the model's.
  """

  def __init__(self, model: nnx.Module):
    self.model = model

  @property
  def config(self):
    return self.model.config

  @property
  def num_embed(self) -> int:
    return self.model.num_embed

  # The sampler calls these where hasattr() finds them; reading them through
  # the model raises AttributeError where the model has none (Gemma-2 has no
  # get_attention_mask), so the sampler takes the same path as without us.
  init_cache = property(lambda self: self.model.init_cache)
  get_attention_mask = property(lambda self: self.model.get_attention_mask)

  def __call__(self, last_tokens, positions=None, cache=None,
               attention_mask=None, decode_only_last_token: bool = False):
    """(logits [B, L, V], or [B, 1, V] with decode_only_last_token; the
    updated cache, None without one).

    The model's own __call__ runs either way: qwix applies LoRA by
    intercepting it, so running the layers from here would drop the
    adapters. For the last position alone, its embedder decodes only that
    position for the length of this call (a trace-local attribute: the
    sampler merges a fresh model for every traced call)."""
    if not decode_only_last_token:
      return self.model(last_tokens, positions, cache, attention_mask)
    embedder = self.model.embedder
    decode = embedder.decode
    embedder.decode = lambda x: decode(x[:, -1:])
    try:
      return self.model(last_tokens, positions, cache, attention_mask)
    finally:
      del embedder.decode
