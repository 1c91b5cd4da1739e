"""Building Gemma-family models on a mesh, and putting LoRA on them."""

import dataclasses
import itertools
import pathlib

from flax import nnx
import jax
import jax.numpy as jnp
import qwix
from tunix.models.gemma import model as gemma2
from tunix.models.gemma import params_safetensors as gemma2_params
from tunix.models.gemma3 import model as gemma3
from tunix.models.gemma3 import params_safetensors as gemma3_params

from grar_config.model import ModelDims, ModelSpec, prepared_dir
from policy_worker import checkpoint
from policy_worker.tokenizer import ByteTokenizer, HFTokenizer, VOCAB_SIZE

# Every projection of attention and MLP: LoRA's usual targets.
LORA_TARGETS = ".*(q_einsum|kv_einsum|qkv_einsum|attn_vec_einsum|gate_proj|up_proj|down_proj)"


def _gemma3_config(spec: ModelSpec) -> gemma3.ModelConfig:
  return gemma3.ModelConfig(
      num_layers=spec.num_layers, num_embed=VOCAB_SIZE,
      embed_dim=spec.embed_dim, hidden_dim=spec.hidden_dim,
      num_heads=spec.num_heads, head_dim=spec.head_dim,
      num_kv_heads=spec.num_kv_heads,
      sliding_window_size=spec.sliding_window_size,
      param_dtype=jnp.dtype(spec.dtype))


def _place(model: nnx.Module, mesh: jax.sharding.Mesh) -> nnx.Module:
  """Moves every variable onto the mesh, following its partitioning names."""
  state = nnx.state(model)
  state = jax.device_put(state, nnx.get_named_sharding(state, mesh))
  nnx.update(model, state)
  return model


def _fan_in(path: tuple, dims: ModelDims) -> int:
  name = path[-2]
  if name == "attn_vec_einsum":
    return dims.num_heads * dims.head_dim
  if name == "down_proj":
    return dims.hidden_dim
  return dims.embed_dim


def _random_init(model: nnx.Module, spec: ModelSpec) -> None:
  """Gives every weight matrix a N(0, 1/fan_in) draw.

  tunix initialises the MLP to zeros and the rest at std 0.01, a blank slate
  for loading checkpoints: as a random model it is dead (its MLP passes no
  gradient to LoRA and its logits are nearly uniform). Scaled draws give a
  random model whose outputs depend on its input, so LoRA can move them.
  """
  key, dims = jax.random.key(spec.seed), spec.dims()
  for path, var in nnx.iter_graph(model):
    if isinstance(var, nnx.Param) and var[...].ndim >= 2:
      key, sub = jax.random.split(key)
      value = var[...]
      std = _fan_in(path, dims) ** -0.5
      var[...] = (std * jax.random.normal(sub, value.shape)).astype(
          value.dtype)


_LAYER_TYPES = {gemma3.AttentionType.LOCAL_SLIDING: "sliding_attention",
                gemma3.AttentionType.GLOBAL: "full_attention",
                gemma2.AttentionType.LOCAL_SLIDING: "sliding_attention",
                gemma2.AttentionType.GLOBAL: "full_attention"}


def layer_types(pattern, num_layers: int) -> list[str]:
  return [_LAYER_TYPES[t] for t in itertools.islice(
      itertools.cycle(pattern), num_layers)]


def _require(hf: dict, key: str, allowed, default) -> None:
  """Refuses a config.json value that tunix's model does not implement."""
  value = hf.get(key, default)
  if value not in allowed:
    raise ValueError(f"path: config.json has {key}={value!r}; the tunix model "
                     f"supports only {' or '.join(map(repr, allowed))}")


def _gemma3_hf_config(hf: dict, dtype) -> gemma3.ModelConfig:
  """tunix's Gemma-3 config from transformers' Gemma3 (text) config.json."""
  layers, head_dim = hf["num_hidden_layers"], hf["head_dim"]
  pattern = layer_types(gemma3.GEMMA3_ATTENTION_PATTERN, layers)
  _require(hf, "layer_types", [pattern], pattern)
  _require(hf, "sliding_window_pattern",
           [len(gemma3.GEMMA3_ATTENTION_PATTERN)], 6)
  _require(hf, "final_logit_softcapping", [None], None)
  _require(hf, "attn_logit_softcapping", [None], None)
  _require(hf, "rms_norm_eps", [1e-6], 1e-6)
  _require(hf, "hidden_activation", ["gelu_pytorch_tanh"], "gelu_pytorch_tanh")
  scaling = hf.get("rope_scaling") or {"rope_type": "linear", "factor": 1.0}
  _require(scaling, "rope_type", ["linear"], scaling.get("type"))
  norms = gemma3.QueryPreAttentionNormalisation
  query_norm = {
      head_dim: norms.BY_ONE_OVER_SQRT_HEAD_DIM,
      hf["hidden_size"] // hf["num_attention_heads"]:
          norms.BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS}
  _require(hf, "query_pre_attn_scalar", list(query_norm), head_dim)
  return gemma3.ModelConfig(
      num_layers=layers, num_embed=hf["vocab_size"],
      embed_dim=hf["hidden_size"], hidden_dim=hf["intermediate_size"],
      num_heads=hf["num_attention_heads"], head_dim=head_dim,
      num_kv_heads=hf["num_key_value_heads"],
      sliding_window_size=hf.get("sliding_window", 4096),
      local_base_frequency=int(hf.get("rope_local_base_freq", 10_000)),
      global_base_frequency=int(hf.get("rope_theta", 1_000_000)),
      global_scale_factor=scaling["factor"],
      query_pre_attn_norm=query_norm[hf.get("query_pre_attn_scalar",
                                            head_dim)],
      param_dtype=dtype)


def _gemma2_hf_config(hf: dict, dtype) -> gemma2.ModelConfig:
  """tunix's Gemma-2 config from transformers' Gemma2 config.json.

  tunix's Gemma-2 keeps parameters in the dtype they are loaded as.
  """
  del dtype
  layers, head_dim = hf["num_hidden_layers"], hf["head_dim"]
  pattern = (gemma2.AttentionType.LOCAL_SLIDING, gemma2.AttentionType.GLOBAL)
  types = layer_types(pattern, layers)
  _require(hf, "layer_types", [types], types)
  # tunix's Gemma-2 hard-codes these.
  _require(hf, "query_pre_attn_scalar", [head_dim], head_dim)
  _require(hf, "rope_theta", [10_000], 10_000)
  _require(hf, "rms_norm_eps", [1e-6], 1e-6)
  _require(hf, "hidden_activation", ["gelu_pytorch_tanh"], "gelu_pytorch_tanh")
  return gemma2.ModelConfig(
      num_layers=layers, num_embed=hf["vocab_size"],
      embed_dim=hf["hidden_size"], hidden_dim=hf["intermediate_size"],
      num_heads=hf["num_attention_heads"], head_dim=head_dim,
      num_kv_heads=hf["num_key_value_heads"],
      final_logit_softcap=hf.get("final_logit_softcapping"),
      attn_logits_soft_cap=hf.get("attn_logit_softcapping"),
      use_post_attn_norm=True, use_post_ffw_norm=True,
      attention_types=pattern * ((layers + 1) // 2),
      sliding_window_size=hf.get("sliding_window", 4096))


def published_config(spec: ModelSpec) -> gemma3.ModelConfig:
  """tunix's config of the published Gemma-3 size spec.size, in spec.dtype."""
  name = "gemma3_270m" if spec.size == "270m" else f"gemma3_{spec.size}_pt"
  return dataclasses.replace(getattr(gemma3.ModelConfig, name)(),
                             param_dtype=jnp.dtype(spec.dtype))


def _random_tokenizer(spec: ModelSpec):
  if spec.tokenizer == "byte":
    return ByteTokenizer()
  directory = prepared_dir("gemma3-270m")
  if not (directory / "tokenizer.json").exists():
    raise ValueError(
        f"tokenizer: the Gemma-3 tokenizer is not at {directory} (run `grar "
        "models prepare gemma3-270m`, or set model.tokenizer=byte)")
  return HFTokenizer(directory)


# family -> (tunix config from config.json, safetensors loader)
_CHECKPOINT_FAMILIES = {
    "gemma3": (_gemma3_hf_config, gemma3_params.create_model_from_safe_tensors),
    "gemma2": (_gemma2_hf_config, gemma2_params.create_model_from_safe_tensors),
}


def build_model(spec: ModelSpec, mesh: jax.sharding.Mesh):
  """Returns (model, tokenizer) with the model's weights on `mesh`.

  gemma3-tiny: random weights, the byte tokenizer; gemma3-random: a
  published Gemma-3 shape with random weights (see ModelSpec); the same
  spec always gives the same weights, which is how the reference model
  equals the policy's base at step 0. gemma3 / gemma2: the checkpoint at
  spec.model_dir, sharded as tunix's ShardingConfig says, and its
  tokenizer.json.
  """
  dtype = jnp.dtype(spec.dtype)
  if spec.family in ("gemma3-tiny", "gemma3-random"):
    tiny = spec.family == "gemma3-tiny"
    tokenizer = ByteTokenizer() if tiny else _random_tokenizer(spec)
    with jax.set_mesh(mesh):
      model = gemma3.Gemma3(
          _gemma3_config(spec) if tiny else published_config(spec),
          rngs=nnx.Rngs(spec.seed))
      _random_init(model, spec)
      return _place(model, mesh), tokenizer
  to_config, load = _CHECKPOINT_FAMILIES[spec.family]
  try:
    config = to_config(spec.hf_config(), dtype)
  except KeyError as e:
    raise ValueError(f"path: {spec.model_dir}/config.json has no {e}") from None
  tokenizer = HFTokenizer(spec.model_dir)
  # An id past the embedding would not fail: jax clamps gather indices.
  if tokenizer.vocab_size > config.num_embed:
    raise ValueError(f"path: {spec.model_dir} has a tokenizer of "
                     f"{tokenizer.vocab_size} tokens for an embedding of "
                     f"{config.num_embed}")
  model = load(str(spec.model_dir), config, mesh=mesh, dtype=dtype)
  return model, tokenizer


def apply_lora(model: nnx.Module, mesh: jax.sharding.Mesh, *, rank: int,
               alpha: float, seed: int) -> nnx.Module:
  """Wraps the projections in LoRA adapters (qwix); only they will train."""
  provider = qwix.LoraProvider(module_path=LORA_TARGETS, rank=rank, alpha=alpha)
  tokens = jnp.ones((1, 4), jnp.int32)
  with jax.set_mesh(mesh):
    lora = qwix.apply_lora_to_model(
        model, provider, tokens, positions=jnp.arange(4)[None],
        cache=None, attention_mask=jnp.ones((1, 4, 4), bool),
        rngs=nnx.Rngs(seed))
    return _place(lora, mesh)


def build_policy(spec: ModelSpec, mesh: jax.sharding.Mesh, *, rank: int,
                 alpha: float, seed: int,
                 init_lora: pathlib.Path | None = None):
  """(model with LoRA adapters, tokenizer): the one way every stage and
  worker builds a policy. The adapters are fresh, or those of the checkpoint
  directory `init_lora`; raises ValueError when it holds none, or adapters
  of another rank or model."""
  model, tokenizer = build_model(spec, mesh)
  model = apply_lora(model, mesh, rank=rank, alpha=alpha, seed=seed)
  if init_lora is not None:
    init_lora = pathlib.Path(init_lora)
    if not init_lora.is_dir():
      raise ValueError(f"no LoRA checkpoint at {init_lora}")
    checkpoint.restore_lora(init_lora, model)
  return model, tokenizer


def lora_state(model: nnx.Module):
  return nnx.state(model, nnx.LoRAParam)
