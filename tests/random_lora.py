"""Non-zero LoRA adapters for tests and benches: qwix starts B at zero, so
fresh adapters change nothing and a comparison through them proves
nothing."""

import jax
import numpy as np
from flax import nnx


def randomise(model: nnx.Module, scale: float, seed: int = 0) -> None:
  """Draws every LoRA parameter of `model` from N(0, scale^2), in place,
  keeping its dtype and sharding."""
  rng = np.random.default_rng(seed)
  for _, var in nnx.iter_graph(model):
    if isinstance(var, nnx.LoRAParam):
      var[...] = jax.device_put(
          (scale * rng.standard_normal(var[...].shape)).astype(
              var[...].dtype), var[...].sharding)
