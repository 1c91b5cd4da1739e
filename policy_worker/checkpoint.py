"""Saving and loading the trainable (LoRA) parameters with orbax."""

import pathlib

from flax import nnx
import jax
import numpy as np
import orbax.checkpoint as ocp


def save_lora(directory: pathlib.Path, model: nnx.Module) -> pathlib.Path:
  """Writes the LoRA parameters as a pure nested dict of arrays."""
  state = nnx.to_pure_dict(nnx.state(model, nnx.LoRAParam))
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(directory.resolve(), state, force=True)
  return directory


def load_lora(directory: pathlib.Path) -> dict:
  """The saved LoRA parameters as numpy arrays (nested dict)."""
  with ocp.StandardCheckpointer() as ckpt:
    state = ckpt.restore(directory.resolve())
  return jax.tree.map(np.asarray, state)
