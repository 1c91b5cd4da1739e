"""Building Gemma-family models on a mesh, and putting LoRA on them."""

from flax import nnx
import jax
import jax.numpy as jnp
import qwix
from tunix.models.gemma3 import model as gemma3

from policy_worker.spec import ModelSpec
from policy_worker.tokenizer import ByteTokenizer, VOCAB_SIZE

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


def _fan_in(path: tuple, shape: tuple[int, ...], spec: ModelSpec) -> int:
  name = path[-2]
  if name == "attn_vec_einsum":
    return spec.num_heads * spec.head_dim
  if name == "down_proj":
    return spec.hidden_dim
  return spec.embed_dim


def _random_init(model: nnx.Module, spec: ModelSpec) -> None:
  """Gives every weight matrix a N(0, 1/fan_in) draw.

  tunix initialises the MLP to zeros and the rest at std 0.01, a blank slate
  for loading checkpoints: as a random model it is dead (its MLP passes no
  gradient to LoRA and its logits are nearly uniform). Scaled draws give a
  random model whose outputs depend on its input, so LoRA can move them.
  """
  key = jax.random.key(spec.seed)
  for path, var in nnx.iter_graph(model):
    if isinstance(var, nnx.Param) and var.value.ndim >= 2:
      key, sub = jax.random.split(key)
      std = _fan_in(path, var.value.shape, spec) ** -0.5
      var.value = (std * jax.random.normal(sub, var.value.shape)).astype(
          var.value.dtype)


def build_model(spec: ModelSpec, mesh: jax.sharding.Mesh):
  """Returns (model, tokenizer) with the model's weights on `mesh`.

  The same spec always gives the same weights, which is how the reference
  model equals the policy's base at step 0.
  """
  with jax.set_mesh(mesh):
    model = gemma3.Gemma3(_gemma3_config(spec), rngs=nnx.Rngs(spec.seed))
    _random_init(model, spec)
    return _place(model, mesh), ByteTokenizer()


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


def lora_state(model: nnx.Module):
  return nnx.state(model, nnx.LoRAParam)
