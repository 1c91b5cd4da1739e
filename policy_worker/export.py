"""A trained policy as a plain HF-format model: the LoRA merged into the base.

The inverse of the loaders in models.py: the merged tunix Gemma-3 becomes
config.json, model.safetensors (float32) and the tokenizer's files, which
transformers, vLLM and grar's own `gemma3` family read. qwix's LoRA adds
(x @ A) @ B * alpha / rank to a projection, so the merged weight is
W + A @ B * alpha / rank, laid out as W is.

A checkpoint directory's config and tokenizer files are copied as they are;
the tiny random family has neither, so its config.json is written from the
tunix config and its byte tokenizer as an equivalent tokenizer.json.
"""

import math
import pathlib
import shutil

from flax import nnx
from flax import traverse_util
import jax
import numpy as np
from safetensors.numpy import save_file
import tokenizers
from tokenizers import decoders
from tunix.models.gemma3 import model as gemma3

from policy_worker import checkpoint, models, prepare, tokenizer
from grar_config.model import ModelSpec

# tunix's Gemma-3 has no position limit; HF readers want one (Gemma-3's).
_MAX_POSITIONS = 32_768
# Files of a checkpoint directory that describe the weights, not hold them.
_SKIP = (prepare.MANIFEST, "model.safetensors.index.json")


def export(spec: ModelSpec, lora_dir: pathlib.Path | None, alpha: float,
           out_dir: pathlib.Path) -> pathlib.Path:
  """Writes the base model of `spec` with the LoRA checkpoint `lora_dir`
  (checkpoint.save's layout, trained with `alpha`) merged in, as an
  HF-format directory `out_dir`; None exports the base. A manifest
  written last marks the directory complete (prepare.is_complete)."""
  if spec.family not in ("gemma3", "gemma3-tiny"):
    raise ValueError(f"family: export writes Gemma-3 checkpoints, not "
                     f"{spec.family}")
  out_dir = pathlib.Path(out_dir)
  if out_dir.exists() and any(out_dir.iterdir()):
    raise ValueError(f"out: {out_dir} exists and is not empty")
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                           ("fsdp", "tp"))
  model, _ = models.build_model(spec, mesh)
  weights = merged_weights(
      model, checkpoint.load_lora(lora_dir) if lora_dir else None, alpha)
  writers = {"model.safetensors": lambda f: save_file(
      hf_tensors(weights, model.config), f, metadata={"format": "pt"})}
  if spec.model_dir is None:
    writers.update(_byte_tokenizer_files())
    writers["config.json"] = prepare.json_writer(hf_config(model.config))
  else:
    for source in sorted(spec.model_dir.iterdir()):
      if (source.is_file() and source.suffix != ".safetensors"
          and source.name not in _SKIP):
        writers[source.name] = (
            lambda f, source=source: shutil.copyfile(source, f))
  out_dir.mkdir(parents=True, exist_ok=True)
  sizes = {name: prepare.write_atomically(out_dir / name, write)
           for name, write in writers.items()}
  prepare.write_atomically(out_dir / prepare.MANIFEST, prepare.json_writer({
      "format": prepare.FORMAT,
      "source": f"{spec.name} + LoRA {lora_dir}" if lora_dir else spec.name,
      "files": sizes}))
  return out_dir


def merged_weights(model: nnx.Module, lora: dict | None,
                   alpha: float) -> dict[tuple[str, ...], np.ndarray]:
  """Every parameter of the base `model` by path (as strings), float32 numpy,
  with the adapters of `lora` (checkpoint.load_lora's tree) added in.

  numpy, not jax: eager jax would compile an einsum per shape. A LoRA model
  is not needed either: qwix's adapter layout follows from the weight's
  einsum, and the test compares the result with qwix's LoRA model.
  """
  params = {tuple(map(str, path)): np.asarray(var[...], np.float32)
            for path, var in nnx.iter_graph(model)
            if isinstance(var, nnx.Param)}
  modules = {tuple(map(str, path)): module
             for path, module in nnx.iter_graph(model)
             if isinstance(module, nnx.Module)}
  flat = {tuple(map(str, path)): np.asarray(value, np.float32) for path, value
          in traverse_util.flatten_dict(lora or {}).items()}
  for path, a in flat.items():
    if not path[-1].endswith("_lora_a"):
      continue
    weight = (*path[:-1], path[-1].removesuffix("_lora_a"))
    b = flat.get((*path[:-1], f"{weight[-1]}_lora_b"))
    if weight not in params or b is None:
      raise ValueError(f"lora: {'/'.join(path)} adapts no weight of the "
                       "model, or has no lora_b (another model?)")
    params[weight] = params[weight] + (alpha / a.shape[-1]) * _delta(
        modules[path[:-1]], a, b).reshape(params[weight].shape)
  return params


def _delta(module: nnx.Module, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """A @ B laid out as the module's weight."""
  einsum = getattr(module, "einsum_str", None)
  if einsum is None:
    # dot_general (nnx.Linear): A is [in, rank], B is [rank, out].
    return a.reshape(-1, a.shape[-1]) @ b.reshape(b.shape[0], -1)
  # As qwix splits x,W->y: A has W's axes that x has too (contracted or
  # batch) then the rank, B the rank then W's other axes, in W's order.
  x, w = einsum.split("->")[0].split(",")
  r = next(c for c in "rRzZ" if c not in einsum)
  a_axes = "".join(c for c in w if c in x) + r
  b_axes = r + "".join(c for c in w if c not in x)
  return np.einsum(f"{a_axes},{b_axes}->{w}", a, b)


# A layer's projections: tunix's weight, the HF modules it holds (a stacked
# weight holds one per index of its first axis), and which axes of one
# module's weight meet the input. LoRA adapts each of these weights.
PROJECTIONS = (
    (("attn", "q_einsum", "w"), ("self_attn.q_proj",), (1,)),  # [N, D, H]
    # [2, K, D, H]
    (("attn", "kv_einsum", "w"), ("self_attn.k_proj", "self_attn.v_proj"),
     (1,)),
    # [3, N, D, H]: tunix's layout when there are as many kv heads as heads.
    (("attn", "qkv_einsum", "w"),
     ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), (1,)),
    (("attn", "attn_vec_einsum", "w"), ("self_attn.o_proj",), (0, 1)),
    (("mlp", "gate_proj", "kernel"), ("mlp.gate_proj",), (0,)),  # [D, F]
    (("mlp", "up_proj", "kernel"), ("mlp.up_proj",), (0,)),  # [D, F]
    (("mlp", "down_proj", "kernel"), ("mlp.down_proj",), (0,)),  # [F, D]
)


def hf_matrix(w: np.ndarray, in_axes: tuple[int, ...]) -> np.ndarray:
  """A projection's weight as transformers lays it out, [out, in]: the axes
  that meet the output, then those that meet the input (`in_axes`), each
  group flattened in w's order (so heads are flattened head-major)."""
  out_axes = tuple(a for a in range(w.ndim) if a not in in_axes)
  w = w.transpose(*out_axes, *in_axes)
  return w.reshape(math.prod(w.shape[:len(out_axes)]), -1)


def hf_tensors(weights: dict[tuple[str, ...], np.ndarray],
               config: gemma3.ModelConfig) -> dict[str, np.ndarray]:
  """transformers' Gemma3ForCausalLM names and layouts of tunix's weights:
  projections are [out, in], heads flattened head-major."""
  out = {"model.embed_tokens.weight": weights[("embedder", "input_embedding")],
         "model.norm.weight": weights[("final_norm", "scale")]}
  for i in range(config.num_layers):
    get = lambda *name, i=i: weights[("layers", str(i), *name)]
    hf = f"model.layers.{i}."
    for weight, names, in_axes in PROJECTIONS:
      w = weights.get(("layers", str(i), *weight))
      if w is not None:  # kv_einsum or qkv_einsum, not both
        for name, part in zip(names, w if len(names) > 1 else [w],
                              strict=True):
          out[f"{hf}{name}.weight"] = hf_matrix(part, in_axes)
    if f"{hf}self_attn.q_proj.weight" not in out:
      raise ValueError(f"model: layer {i} has no query projection")
    out.update({
        hf + "self_attn.q_norm.weight": get("attn", "_query_norm", "scale"),
        hf + "self_attn.k_norm.weight": get("attn", "_key_norm", "scale"),
        hf + "input_layernorm.weight": get("pre_attention_norm", "scale"),
        hf + "post_attention_layernorm.weight":
            get("post_attention_norm", "scale"),
        hf + "pre_feedforward_layernorm.weight": get("pre_ffw_norm", "scale"),
        hf + "post_feedforward_layernorm.weight": get("post_ffw_norm",
                                                      "scale"),
    })
  return {name: np.ascontiguousarray(value) for name, value in out.items()}


def hf_config(config: gemma3.ModelConfig) -> dict:
  """transformers' Gemma3 text config.json of a tunix config; what
  models._gemma3_hf_config reads back into the same config."""
  if config.local_scale_factor != 1.0:
    raise ValueError("model: a local RoPE scale factor has no HF field")
  norms = gemma3.QueryPreAttentionNormalisation
  query_scalar = (config.head_dim if config.query_pre_attn_norm
                  == norms.BY_ONE_OVER_SQRT_HEAD_DIM
                  else config.embed_dim // config.num_heads)
  pattern = gemma3.GEMMA3_ATTENTION_PATTERN
  return {
      "architectures": ["Gemma3ForCausalLM"],
      "model_type": "gemma3_text",
      "vocab_size": config.num_embed,
      "hidden_size": config.embed_dim,
      "intermediate_size": config.hidden_dim,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim,
      "query_pre_attn_scalar": query_scalar,
      "hidden_activation": "gelu_pytorch_tanh",
      "rms_norm_eps": 1e-6,
      "max_position_embeddings": _MAX_POSITIONS,
      "rope_theta": float(config.global_base_frequency),
      "rope_local_base_freq": float(config.local_base_frequency),
      "rope_scaling": {"rope_type": "linear",
                       "factor": float(config.global_scale_factor)},
      "sliding_window": config.sliding_window_size,
      "sliding_window_pattern": len(pattern),
      "layer_types": models.layer_types(pattern, config.num_layers),
      "final_logit_softcapping": None,
      "attn_logit_softcapping": None,
      "attention_bias": False,
      "tie_word_embeddings": True,
      "bos_token_id": tokenizer.BOS,
      "eos_token_id": tokenizer.EOS,
      "pad_token_id": tokenizer.PAD,
      "torch_dtype": "float32",
      "transformers_version": "4.55.0",
  }


_SPECIAL = {tokenizer.PAD: "<pad>", tokenizer.BOS: "<bos>",
            tokenizer.EOS: "<eos>", tokenizer.UNUSED: "<unused>"}


def _byte_tokenizer_files() -> dict:
  """tokenizer.ByteTokenizer as HF files: every byte is the fallback token
  <0xHH> of a BPE without merges, at the same ids."""
  vocab = {text: i for i, text in _SPECIAL.items()}
  vocab.update({f"<0x{b:02X}>": b + tokenizer.OFFSET for b in range(256)})
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(
      vocab, [], byte_fallback=True))
  tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
  tok.add_special_tokens([tokenizers.AddedToken(text, special=True)
                          for text in _SPECIAL.values()])
  return {
      "tokenizer.json": lambda f: tok.save(str(f)),
      "tokenizer_config.json": prepare.json_writer({
          "bos_token": _SPECIAL[tokenizer.BOS],
          "eos_token": _SPECIAL[tokenizer.EOS],
          "pad_token": _SPECIAL[tokenizer.PAD],
          "add_bos_token": True, "add_eos_token": False}),
  }
