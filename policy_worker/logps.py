"""Per-token log-probs of completions, computed over completion positions only.

Gemma's vocabulary projection is most of a forward pass on the small models
(the 270M: 2 x 640 x 262144 = 335 MFLOP per position, against ~200 MFLOP for
all 18 blocks), and tunix 0.1.7's `compute_per_token_logps` projects every
prompt and completion position onto all 262144 words in float32 before it
slices out the completion (16 x 136 x 262144 x 4 B = 2.3 GB per pass, and
again in the backward). Here the model runs to its hidden states, the
positions that predict completion tokens are sliced out, and the tied
embedding is applied one vocabulary chunk at a time with a streaming
logsumexp, so the logits tensor is never built: not in the forward, and not
in the backward (each chunk is recomputed there, jax.checkpoint).

Every pass that needs completion log-probs calls `completion_logps`: the
GRPO loss and its gradient, the reference and behaviour passes, eval's
teacher KL. Reference and behaviour go through one compiled program
(`token_logps` with the LoRA state as an argument), so the same weights
give the same numbers bit for bit.
"""

import contextlib

from flax import nnx
import jax
import jax.numpy as jnp
from tunix.rl import common

# Vocabulary columns projected at once: 32768 x 640 positions (16 rollouts
# of 40 tokens) is 84 MB of float32 logits per chunk on the 270M.
DEFAULT_CHUNK = 32768


def completion_logps(model: nnx.Module, prompt_tokens: jax.Array,
                     completion_tokens: jax.Array, pad_id: int,
                     temperature: float = 1.0, chunk: int = DEFAULT_CHUNK,
                     with_entropy: bool = False):
  """Log-probs [N, T] of completion_tokens [N, T] after prompt_tokens [N, P]
  (left-padded with pad_id; completions right-padded) under `model` as it
  is, LoRA included: differentiable, so the loss calls it too. With
  with_entropy, also the entropy [N, T] of each predicted distribution
  (for metrics: the caller stops its gradient).

  Values past a completion's end are those of its padding, for the caller
  to mask. Equal to tunix's compute_per_token_logps to float rounding.
  """
  tokens = jnp.concatenate([prompt_tokens, completion_tokens], axis=1)
  real = tokens != pad_id
  positions = common.build_positions_from_mask(real)
  mask = common.make_causal_attn_mask(real)
  with _hidden_states(model):
    hidden, _ = model(tokens, positions, None, mask)
  # Position p predicts token p + 1: the last prompt position predicts the
  # first completion token, the last completion position nothing.
  start = prompt_tokens.shape[1] - 1
  hidden = hidden[:, start:start + completion_tokens.shape[1]]
  return chunked_logps(hidden, model.embedder.input_embedding[...],
                       completion_tokens, temperature,
                       getattr(model, "final_logits_softcap", None), chunk,
                       with_entropy)


@contextlib.contextmanager
def _hidden_states(model: nnx.Module):
  """For the length of a (traced) call, `model` returns its final-norm
  hidden states [B, L, D] in place of logits. The model's own __call__
  runs, since qwix applies LoRA by intercepting it (LoRA targets no
  embedding, so the projection done here is the model's own); Gemma-2's
  logit soft-cap, applied after the projection in __call__, is applied per
  chunk instead."""
  embedder = model.embedder
  cap = getattr(model, "final_logits_softcap", None)
  embedder.decode = lambda x: x
  if cap is not None:
    model.final_logits_softcap = None
  try:
    yield
  finally:
    del embedder.decode
    if cap is not None:
      model.final_logits_softcap = cap


def chunked_logps(hidden: jax.Array, embedding: jax.Array,
                  targets: jax.Array, temperature: float = 1.0,
                  softcap: float | None = None, chunk: int = DEFAULT_CHUNK,
                  with_entropy: bool = False):
  """log softmax(hidden @ embedding.T / temperature)[targets] without the
  [N, T, V] logits: a scan over vocabulary chunks of `chunk` columns keeps
  a running max and sum of exponentials (and, with_entropy, of
  exp x logit), so memory is one chunk's [N, T, chunk].

  hidden: [N, T, D]; embedding: [V, D]; targets: [N, T] int. Returns
  logps [N, T] float32, and entropy [N, T] with with_entropy.
  """
  vocab, dim = embedding.shape
  chunk = _divisor(vocab, chunk)
  hidden = hidden.astype(jnp.float32)

  def scaled(logits):
    """The model's soft-cap, then the sampling temperature (none at 0 or
    1, as tunix)."""
    if softcap is not None:
      logits = jnp.tanh(logits / softcap) * softcap
    return logits / temperature if temperature not in (0.0, 1.0) else logits

  def logits_of(rows):
    return scaled(jnp.einsum("ntd,vd->ntv", hidden, rows.astype(jnp.float32)))

  @jax.checkpoint
  def step(carry, rows):
    top, total, weighted = carry
    logits = logits_of(rows)
    # The running max only keeps exp() in range: its gradient cancels.
    new_top = jax.lax.stop_gradient(jnp.maximum(top, logits.max(-1)))
    scale = jnp.exp(top - new_top)
    e = jnp.exp(logits - new_top[..., None])
    total = total * scale + e.sum(-1)
    if with_entropy:
      weighted = weighted * scale + (e * logits).sum(-1)
    return (new_top, total, weighted), None

  shape = targets.shape
  init = (jnp.full(shape, -jnp.inf, jnp.float32),
          jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))
  (top, total, weighted), _ = jax.lax.scan(
      step, init, embedding.reshape(vocab // chunk, chunk, dim))
  # The first chunk makes `top` finite, so the first scale (exp(-inf)) is 0.
  normalizer = top + jnp.log(total)
  target_rows = embedding[targets].astype(jnp.float32)  # [N, T, D]
  logps = scaled((hidden * target_rows).sum(-1)) - normalizer
  if not with_entropy:
    return logps
  return logps, normalizer - weighted / total


def _divisor(vocab: int, chunk: int) -> int:
  """The largest chunk size <= chunk that divides vocab (vocabularies are
  powers of two or close: 262144 on Gemma-3, 256 on the tiny models)."""
  chunk = min(chunk, vocab)
  while vocab % chunk:
    chunk -= 1
  return chunk
