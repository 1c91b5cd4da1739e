"""A policy's LoRA adapters as a PEFT adapter directory, for vLLM to load at
run time (POST /v1/load_lora_adapter) without a merged export.

qwix adds (x @ A) @ B * alpha / rank to a projection; PEFT adds
x @ (B @ A * lora_alpha / r).T to an HF [out, in] weight, so the same alpha
gives the same delta once A and B are laid out as HF's weights are. qwix's
A holds the weight's axes that meet the input, then the rank, and B the rank
then the rest (export._delta), each in the weight's order: so A is a
projection onto the rank, and B one from it, and export.hf_matrix lays out
both as it lays out the weight. A stacked kv (or qkv) einsum has one A and a
B per slice: k_proj and v_proj share their A.
"""

import json
import os
import pathlib
import shutil
import uuid

from flax import nnx
from flax import traverse_util
import numpy as np
from safetensors.numpy import save_file

from policy_worker import export, models

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
# PEFT's names: the task's wrapper around transformers' model.
_PREFIX = "base_model.model.model.layers."


def write(model: nnx.Module, alpha: float,
          out_dir: pathlib.Path) -> pathlib.Path:
  """Writes the LoRA adapters of `model` (a policy of models.build_policy,
  trained with `alpha`) as the PEFT adapter directory `out_dir`; see
  write_tree. Cheap enough for every step: a host copy of the adapters and
  a file (0.03 s for the 270M's at rank 8, 2 CPU cores)."""
  return write_tree(nnx.to_pure_dict(models.lora_state(model)), alpha,
                    out_dir)


def write_tree(lora: dict, alpha: float,
               out_dir: pathlib.Path) -> pathlib.Path:
  """Writes `lora` (the adapters as a nested dict, from a model's LoRA
  state or checkpoint.load_lora) as the PEFT adapter directory `out_dir`:
  adapter_config.json and adapter_model.safetensors (float32 A [r, in],
  B [out, r] under transformers' Gemma3ForCausalLM names).

  A reader sees the directory whole or not at all: it is written beside
  `out_dir` and renamed into place. Raises ValueError when `out_dir`
  exists (a loaded adapter's files must not change under the server) or
  `lora` holds adapters this layout does not know.
  """
  out_dir = pathlib.Path(out_dir)
  if out_dir.exists():
    raise ValueError(f"out: {out_dir} exists; a PEFT adapter is written to "
                     "a new directory")
  tensors, rank = peft_tensors(lora)
  config = {
      "peft_type": "LORA",
      "task_type": "CAUSAL_LM",
      "base_model_name_or_path": "",
      "r": rank,
      "lora_alpha": float(alpha),
      "lora_dropout": 0.0,
      "target_modules": sorted({name.split(".")[-3] for name in tensors}),
      "bias": "none",
      "use_rslora": False,
      "fan_in_fan_out": False,
      "inference_mode": True,
  }
  tmp = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.tmp")
  tmp.mkdir(parents=True)
  try:
    save_file(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
    (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    # Fails if a non-empty out_dir appeared meanwhile (rename(2) replaces
    # only an empty one), so a loaded adapter's files never change.
    os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out_dir


def peft_tensors(lora: dict) -> tuple[dict[str, np.ndarray], int]:
  """(PEFT's tensors by name, the rank) of the adapters `lora` (nested
  dict; layer indices ints or strings): float32, A [r, in], B [out, r]."""
  flat = {tuple(map(str, path)): value
          for path, value in traverse_util.flatten_dict(lora).items()}
  layers = sorted({int(path[1]) for path in flat if path[0] == "layers"})
  out, ranks = {}, set()
  for i in layers:
    for weight, names, in_axes in export.PROJECTIONS:
      module = ("layers", str(i), *weight[:-1])
      a = flat.pop((*module, f"{weight[-1]}_lora_a"), None)
      b = flat.pop((*module, f"{weight[-1]}_lora_b"), None)
      if a is None and b is None:
        continue
      if a is None or b is None or a.ndim != len(in_axes) + 1:
        raise ValueError(f"lora: {'/'.join(module)} has adapters of another "
                         "layout than qwix's (or only one of A and B)")
      a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
      ranks.add(a.shape[-1])
      a_hf = export.hf_matrix(a, tuple(range(a.ndim - 1)))
      # B's slices of a stacked weight: its axis after the rank.
      parts = b.swapaxes(0, 1) if len(names) > 1 else [b]
      for name, part in zip(names, parts, strict=True):
        out[f"{_PREFIX}{i}.{name}.lora_A.weight"] = a_hf
        out[f"{_PREFIX}{i}.{name}.lora_B.weight"] = export.hf_matrix(
            part, (0,))
  if flat:
    raise ValueError(f"lora: {'/'.join(next(iter(flat)))} adapts no "
                     "projection a PEFT adapter of Gemma can hold")
  if len(ranks) != 1:
    raise ValueError(f"lora: ranks {sorted(ranks)}; a PEFT adapter has one")
  return ({name: np.ascontiguousarray(value) for name, value in out.items()},
          ranks.pop())
