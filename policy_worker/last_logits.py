"""Next-token logits after each sequence's last real token, and only there.

A Gemma forward pass projects every position onto the vocabulary; with
Gemma-3's 262144 tokens that projection is most of the activation memory of
a judge batch (8 x 512 positions: 4.3 GB of float32 logits) and about as many
FLOPs as the whole 270M trunk. A judge reads one position per prompt, so this
runs tunix's layers itself and projects only the gathered last positions.
"""

import contextlib

from flax import nnx
import jax
import jax.numpy as jnp
from tunix.models.gemma3 import model as gemma3_lib

_LOCAL = gemma3_lib.AttentionType.LOCAL_SLIDING


def last_logits(model: nnx.Module, tokens: jax.Array, positions: jax.Array,
                mask: jax.Array, lengths: jax.Array) -> jax.Array:
  """Logits [B, V] at position lengths[b] - 1 of each row; with lengths
  [B, S], logits [B, S, V] at lengths[b, s] - 1 (several reads per row, as a
  judge row packing several prompts behind one shared prefix needs).

  model: a tunix Gemma-3 (text) or Gemma/Gemma-2 Transformer without LoRA
  (qwix's adapters apply inside the model's own __call__, not here);
  tokens, positions: [B, L]; mask: [B, L, L] attention mask; lengths: [B]
  or [B, S].
  Same numbers as model(tokens, positions, None, mask)[0] at those positions
  where positions count 0, 1, ... along the row; on Gemma-3 also where they
  do not (packed_length).
  """
  x = model.embedder.encode(tokens)
  for layer in model.layers:
    with _windowed_by_position(layer, positions, mask) as layer_mask:
      _, x = layer(x, positions, None, layer_mask)
  at = (lengths - 1).reshape(lengths.shape[0], -1)
  x = jnp.take_along_axis(x, at[..., None], axis=1)
  x = x.reshape(*lengths.shape, x.shape[-1])
  logits = model.embedder.decode(model.final_norm(x))
  # Gemma-2 caps its logits; Gemma-3 has no such attribute.
  cap = getattr(model, "final_logits_softcap", None)
  if cap is not None:
    logits = jnp.tanh(logits / cap) * cap
  return logits


def packed_length(model: nnx.Module) -> int | None:
  """The longest row in which last_logits gives each of several packed
  sequences (positions restarting or jumping within the row) what it would
  give it alone: None for no limit. Gemma-3's local layers are windowed by
  position here (_windowed_by_position); Gemma/Gemma-2's window by index in
  the row in tunix, so a row longer than the window would hide from a
  late sequence tokens it sees alone."""
  if isinstance(getattr(model.layers[0], "attn", None), gemma3_lib.Attention):
    return None
  return getattr(getattr(model, "config", None), "sliding_window_size", None)


@contextlib.contextmanager
def _windowed_by_position(layer: nnx.Module, positions: jax.Array,
                          mask: jax.Array):
  """The mask for a layer's call. A Gemma-3 local layer in prefill windows
  its attention by index in the row (|i - j| < window), right only for
  positions 0, 1, ...: for the call it attends globally, and the window, by
  position, is in the mask. Other layers get the mask as it is."""
  attn = getattr(layer, "attn", None)
  if not (isinstance(attn, gemma3_lib.Attention) and attn.attn_type == _LOCAL):
    yield mask
    return
  near = (positions[:, :, None] - positions[:, None, :]
          < attn.sliding_window_size)
  attn.attn_type = gemma3_lib.AttentionType.GLOBAL
  try:
    yield mask & near
  finally:
    attn.attn_type = _LOCAL


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
