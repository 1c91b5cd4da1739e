"""The gemma2 family: an HF-format Gemma-2 directory loaded into tunix's
Gemma (the seed's Gemma-2-2B-IT path), tested on a tiny random checkpoint
written here the way transformers lays one out."""

import json

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from tokenizers import models as tok_models
from safetensors.numpy import save_file
from tunix.generate import sampler as sampler_lib

from grar_config.mesh import MeshShape
from orchestrator import mesh as mesh_lib
from policy_worker import last_logits, models
from grar_config.model import ModelSpec
from test_last_logits import assert_matches_full_forward

# num_heads * head_dim != hidden_size, so a transposed projection cannot
# load; an odd layer count and a short window exercise the local/global
# pattern within the test's sequences.
CONFIG = {
    "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
    "vocab_size": 260, "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 24, "query_pre_attn_scalar": 24,
    "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0,
    "sliding_window": 6, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
    "hidden_activation": "gelu_pytorch_tanh", "bos_token_id": 2,
    "eos_token_id": 1, "pad_token_id": 0,
}
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]


def _weights(rng) -> dict[str, np.ndarray]:
  c = CONFIG
  d, f, h = c["hidden_size"], c["intermediate_size"], c["head_dim"]
  n, k = c["num_attention_heads"], c["num_key_value_heads"]

  def matrix(rows, cols):
    return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(
        np.float32)

  def norm():
    return (0.1 * rng.standard_normal(d)).astype(np.float32)

  out = {"model.embed_tokens.weight": matrix(c["vocab_size"], d),
         "model.norm.weight": norm()}
  for i in range(c["num_hidden_layers"]):
    p = f"model.layers.{i}."
    out.update({
        p + "self_attn.q_proj.weight": matrix(n * h, d),
        p + "self_attn.k_proj.weight": matrix(k * h, d),
        p + "self_attn.v_proj.weight": matrix(k * h, d),
        p + "self_attn.o_proj.weight": matrix(d, n * h),
        p + "mlp.gate_proj.weight": matrix(f, d),
        p + "mlp.up_proj.weight": matrix(f, d),
        p + "mlp.down_proj.weight": matrix(d, f),
        **{p + name + ".weight": norm() for name in (
            "input_layernorm", "post_attention_layernorm",
            "pre_feedforward_layernorm", "post_feedforward_layernorm")}})
  return out


def _write_tokenizer(directory) -> None:
  """A byte-level tokenizer.json: 4 specials, then the 256 byte pieces."""
  vocab = {t: i for i, t in enumerate(SPECIALS)}
  vocab.update({f"<0x{b:02X}>": b + len(SPECIALS) for b in range(256)})
  tok = tokenizers.Tokenizer(tok_models.BPE(
      vocab, [], unk_token="<unk>", byte_fallback=True))
  tok.decoder = tokenizers.decoders.ByteFallback()
  tok.add_special_tokens(SPECIALS)
  tok.save(str(directory / "tokenizer.json"))
  (directory / "tokenizer_config.json").write_text(json.dumps(
      {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  directory = tmp_path_factory.mktemp("gemma2-tiny")
  weights = _weights(np.random.default_rng(0))
  save_file(weights, str(directory / "model.safetensors"))
  (directory / "config.json").write_text(json.dumps(CONFIG))
  _write_tokenizer(directory)
  return directory, weights


def _mesh(tp: int) -> jax.sharding.Mesh:
  return jax.sharding.Mesh(np.array(jax.devices()[:tp]).reshape(1, tp),
                           mesh_lib.AXES)


def _rms(x, w):
  return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * (1 + w)


def _rope(x, positions):
  half = x.shape[-1] // 2
  angle = positions[:, None, None] / 10000.0 ** (np.arange(half) / half)
  a, b = x[..., :half], x[..., half:]
  return np.concatenate([a * np.cos(angle) - b * np.sin(angle),
                         b * np.cos(angle) + a * np.sin(angle)], -1)


def _reference_logits(w: dict, ids: list[int]) -> np.ndarray:
  """transformers' Gemma2 forward pass, written out in numpy."""
  c = CONFIG
  n, k, h = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
  t = len(ids)
  pos = np.arange(t)
  x = w["model.embed_tokens.weight"][ids] * np.sqrt(c["hidden_size"])
  for i in range(c["num_hidden_layers"]):
    p = f"model.layers.{i}."
    y = _rms(x, w[p + "input_layernorm.weight"])
    q = _rope((y @ w[p + "self_attn.q_proj.weight"].T).reshape(t, n, h), pos)
    key = _rope((y @ w[p + "self_attn.k_proj.weight"].T).reshape(t, k, h), pos)
    v = (y @ w[p + "self_attn.v_proj.weight"].T).reshape(t, k, h)
    key, v = np.repeat(key, n // k, 1), np.repeat(v, n // k, 1)
    s = np.einsum("qnh,knh->nqk", q * c["query_pre_attn_scalar"] ** -0.5, key)
    s = np.tanh(s / 50.0) * 50.0
    allowed = pos[None, :] <= pos[:, None]
    if i % 2 == 0:  # sliding layers: the last `sliding_window` tokens
      allowed &= pos[:, None] - pos[None, :] < c["sliding_window"]
    s = np.where(allowed, s, -np.inf)
    probs = np.exp(s - s.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    o = np.einsum("nqk,knh->qnh", probs, v).reshape(t, n * h)
    o = o @ w[p + "self_attn.o_proj.weight"].T
    x = x + _rms(o, w[p + "post_attention_layernorm.weight"])
    y = _rms(x, w[p + "pre_feedforward_layernorm.weight"])
    gate = y @ w[p + "mlp.gate_proj.weight"].T
    gelu = 0.5 * gate * (1 + np.tanh(
        np.sqrt(2 / np.pi) * (gate + 0.044715 * gate ** 3)))
    m = (gelu * (y @ w[p + "mlp.up_proj.weight"].T)) @ w[
        p + "mlp.down_proj.weight"].T
    x = x + _rms(m, w[p + "post_feedforward_layernorm.weight"])
  logits = _rms(x, w["model.norm.weight"]) @ w["model.embed_tokens.weight"].T
  return np.tanh(logits / 30.0) * 30.0


def _forward(model, mesh, ids):
  tokens = jnp.asarray([ids])
  mask = jnp.tril(jnp.ones((len(ids), len(ids)), bool))[None]
  with jax.set_mesh(mesh):
    logits, _ = model(tokens, jnp.arange(len(ids))[None], None, mask)
  return np.asarray(logits[0])


def test_loads_sharded_and_matches_transformers_forward(checkpoint):
  directory, weights = checkpoint
  mesh = _mesh(2)
  model, tok = models.build_model(
      ModelSpec(family="gemma2", path=str(directory)), mesh)
  embedding = model.embedder.input_embedding[...]
  assert embedding.sharding.spec[0] == "tp"
  assert len(embedding.addressable_shards) == 2
  ids = [tok.bos_id()] + tok.encode("Gemma-2, twelve tokens")
  assert len(ids) > CONFIG["sliding_window"] * 2
  np.testing.assert_allclose(_forward(model, mesh, ids),
                             _reference_logits(weights, ids),
                             rtol=1e-4, atol=1e-4)


def test_last_logits_keep_the_logit_cap(checkpoint):
  directory, _ = checkpoint
  mesh = _mesh(2)
  model, tok = models.build_model(
      ModelSpec(family="gemma2", path=str(directory)), mesh)
  rows = [[tok.bos_id()] + tok.encode(t) for t in ("capped", "logits here")]
  assert_matches_full_forward(model, mesh, rows, tok.pad_id())
  # tunix's Gemma-2 windows by index: packed rows stop at the window.
  assert last_logits.packed_length(model) == CONFIG["sliding_window"]


def test_generates_and_takes_lora(checkpoint):
  directory, _ = checkpoint
  mesh = _mesh(1)
  model, tok = models.build_model(
      ModelSpec(family="gemma2", path=str(directory)), mesh)
  cfg = model.config
  sampler = sampler_lib.Sampler(model, tok, sampler_lib.CacheConfig(
      cache_size=32, num_layers=cfg.num_layers,
      num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim))
  with jax.set_mesh(mesh):
    out = sampler(["2+2=", "hello"], max_generation_steps=6,
                  max_prompt_length=8, temperature=1.0, seed=0,
                  pad_output=True, return_logits=True,
                  forbidden_tokens=tok.special_ids())
  for tokens, logits in zip(out.tokens, out.logits):
    assert 1 <= len(tokens) <= 6
    assert np.isfinite(np.asarray(logits)).all()
    assert np.asarray(logits).shape[-1] == CONFIG["vocab_size"]

  ids = [tok.bos_id()] + tok.encode("lora")
  before = _forward(model, mesh, ids)
  lora = models.apply_lora(model, mesh, rank=2, alpha=4.0, seed=0)
  adapted = {".".join(map(str, path[:-1]))
             for path, _ in nnx.to_flat_state(models.lora_state(lora))}
  assert any("q_einsum" in p for p in adapted)
  assert any("down_proj" in p for p in adapted)
  # LoRA starts as the identity: B is zero.
  np.testing.assert_allclose(_forward(lora, mesh, ids), before, atol=1e-5)


def test_mesh_planning_reads_the_checkpoint(checkpoint):
  directory, _ = checkpoint
  spec = ModelSpec(family="gemma2", path=str(directory))
  model, _ = models.build_model(spec, _mesh(1))
  real = sum(x.size * x.dtype.itemsize
             for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert mesh_lib.estimate_param_bytes(spec) == real
  with pytest.raises(mesh_lib.MeshPlanError,
                     match="vocabulary size .* 260"):
    mesh_lib.check_divisible("policy", spec, MeshShape(tp=3))


def test_unsupported_config_is_refused(tmp_path, checkpoint):
  directory, _ = checkpoint
  for name in ("model.safetensors", "tokenizer.json",
               "tokenizer_config.json"):
    (tmp_path / name).symlink_to(directory / name)
  (tmp_path / "config.json").write_text(json.dumps(
      {**CONFIG, "query_pre_attn_scalar": 144}))
  with pytest.raises(ValueError, match="query_pre_attn_scalar=144"):
    models.build_model(ModelSpec(family="gemma2", path=str(tmp_path)),
                       _mesh(1))
