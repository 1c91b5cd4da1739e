"""Saving and restoring the trainable state with orbax.

What is saved is what training changes: the LoRA parameters and the
optimizer's state. The frozen base comes from the model spec again.
"""

import pathlib

from flax import nnx
import jax
import numpy as np
import orbax.checkpoint as ocp


def _trainable(model: nnx.Module, optimizer: nnx.Optimizer):
  return nnx.state(model, nnx.LoRAParam), nnx.state(optimizer)


def save(directory: pathlib.Path, model: nnx.Module,
         optimizer: nnx.Optimizer) -> None:
  """Writes {"lora", "opt"}; orbax finalises the directory atomically."""
  lora, opt = _trainable(model, optimizer)
  tree = {"lora": nnx.to_pure_dict(lora), "opt": nnx.to_pure_dict(opt)}
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(directory.resolve(), tree, force=True)


def restore(directory: pathlib.Path, model: nnx.Module,
            optimizer: nnx.Optimizer) -> None:
  """Loads a `save`d state into `model` and `optimizer`, keeping their
  shardings (the current state is the restore target)."""
  lora, opt = _trainable(model, optimizer)
  target = {"lora": nnx.to_pure_dict(lora), "opt": nnx.to_pure_dict(opt)}
  with ocp.StandardCheckpointer() as ckpt:
    tree = ckpt.restore(directory.resolve(), target)
  for state, part, owner in ((lora, "lora", model), (opt, "opt", optimizer)):
    nnx.replace_by_pure_dict(state, tree[part])
    nnx.update(owner, state)


def load_lora(directory: pathlib.Path) -> dict:
  """The saved LoRA parameters as numpy arrays (nested dict)."""
  with ocp.StandardCheckpointer() as ckpt:
    tree = ckpt.restore(directory.resolve())
  return jax.tree.map(np.asarray, tree["lora"])
