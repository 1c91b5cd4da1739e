"""Saving and restoring the trainable state with orbax.

What is saved is what training changes: the LoRA parameters and the
optimizer's state. The frozen base comes from the model spec again.
"""

import pathlib

from flax import nnx
from flax import traverse_util
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
  """The saved LoRA parameters as numpy arrays (nested dict), whatever
  devices this process has: onto one, since the saving run's mesh may not
  exist here (orbax refuses to restore onto another topology by itself)."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as ckpt:
    saved = ckpt.metadata(directory.resolve()).item_metadata.tree
    tree = ckpt.restore(directory.resolve(), jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        saved))
  return jax.tree.map(np.asarray, tree["lora"])


def restore_lora(directory: pathlib.Path, model: nnx.Module) -> None:
  """Loads the LoRA parameters of a `save`d checkpoint into `model` (a LoRA
  model, e.g. from models.apply_lora), keeping their shardings; the
  optimizer state is not read. Raises ValueError when the checkpoint's
  adapters do not fit the model's (other targets or another rank)."""
  lora = nnx.state(model, nnx.LoRAParam)
  target = traverse_util.flatten_dict(nnx.to_pure_dict(lora))
  # Restored without a target, orbax gives layer indices back as strings.
  saved = {tuple(map(str, path)): value for path, value in
           traverse_util.flatten_dict(load_lora(directory)).items()}
  for path, value in target.items():
    got = saved.get(tuple(map(str, path)))
    if got is None or got.shape != value.shape:
      raise ValueError(
          f"{directory}: its LoRA adapters do not fit the model: "
          f"{'/'.join(map(str, path))} is "
          f"{'missing' if got is None else got.shape} there, {value.shape} "
          "here (another LoRA rank, or another model?)")
  nnx.replace_by_pure_dict(lora, traverse_util.unflatten_dict({
      path: jax.device_put(saved[tuple(map(str, path))], value.sharding)
      for path, value in target.items()}))
  nnx.update(model, lora)
