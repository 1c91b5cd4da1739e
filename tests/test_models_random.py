"""Gemma-3 shapes with random weights (family gemma3-random): the published
configs, checked against tunix's; the parameter counts mesh planning uses;
a real 270M-shaped model built with LoRA and run."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grar_config.model import (GEMMA3_SIZES, GEMMA3_VOCAB_SIZE, ModelSpec,
                               prepared_dir)
from orchestrator import mesh as mesh_lib
from policy_worker import models
from policy_worker.tokenizer import ByteTokenizer, HFTokenizer
from tunix.models.gemma3 import model as gemma3


def _mesh():
  return jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                           ("fsdp", "tp"))


@pytest.mark.parametrize("size", sorted(GEMMA3_SIZES))
def test_published_shapes_agree_with_tunix_and_mesh_planning(size):
  spec = ModelSpec(family="gemma3-random", size=size, dtype="bfloat16")
  config = models.published_config(spec)
  dims = spec.dims()
  assert (dims.vocab_size, dims.num_layers, dims.embed_dim, dims.hidden_dim,
          dims.num_heads, dims.head_dim, dims.num_kv_heads) == (
              config.num_embed, config.num_layers, config.embed_dim,
              config.hidden_dim, config.num_heads, config.head_dim,
              config.num_kv_heads)
  assert config.num_embed == GEMMA3_VOCAB_SIZE
  assert config.param_dtype == jnp.bfloat16
  # The model tunix builds, abstractly (no memory): mesh planning's byte
  # estimate is its parameter count times 2 bytes.
  shapes = nnx.state(nnx.eval_shape(
      lambda: gemma3.Gemma3(config, rngs=nnx.Rngs(0))), nnx.Param)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  assert mesh_lib.estimate_param_bytes(spec) == 2 * count
  assert {"270m": 0.268e9, "1b": 1.0e9, "4b": 3.88e9, "12b": 11.77e9}[size] \
      == pytest.approx(count, rel=0.01)


@pytest.mark.parametrize("fields, problem", [
    ({"family": "gemma3-random"}, "size: family gemma3-random needs one of"),
    ({"family": "gemma3-random", "size": "2b"}, "size: unknown Gemma-3 size"),
    ({"family": "gemma3-tiny", "size": "1b"}, "size: only family"),
    ({"family": "gemma3-random", "size": "1b", "path": "/x"},
     "path: family gemma3-random is randomly initialised"),
    ({"family": "gemma3-random", "size": "1b", "tokenizer": "sp"},
     "tokenizer: 'sp' is not one of"),
])
def test_bad_specs_are_refused(fields, problem):
  with pytest.raises(ValueError, match=problem):
    ModelSpec(**fields)


def test_names_say_size_and_seed():
  assert ModelSpec(family="gemma3-random", size="4b",
                   seed=3).name == "gemma3-random-4b-seed3"
  assert ModelSpec(family="gemma3-random", size="1b").model_dir is None


def test_missing_gemma_tokenizer_is_one_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv("GRAR_CACHE", str(tmp_path))
  with pytest.raises(ValueError, match="tokenizer: the Gemma-3 tokenizer is "
                     "not at .*models prepare gemma3-270m.*tokenizer=byte"):
    models.build_model(ModelSpec(family="gemma3-random", size="270m"),
                       _mesh())


@pytest.mark.slow
def test_a_270m_shape_builds_and_runs():
  spec = ModelSpec(family="gemma3-random", size="270m", tokenizer="byte")
  model, tokenizer = models.build_policy(spec, _mesh(), rank=4, alpha=8.0,
                                         seed=0)
  assert isinstance(tokenizer, ByteTokenizer)
  tokens = jnp.array([tokenizer.encode("What is 2 + 2?")], jnp.int32)
  n = tokens.shape[1]
  graph, lora, rest = nnx.split(model, nnx.LoRAParam, ...)

  def logits(lora, tokens):
    return nnx.merge(graph, lora, rest)(
        tokens, jnp.arange(n)[None], None, jnp.tril(jnp.ones((1, n, n), bool))
    )[0]

  out = logits(lora, tokens)
  assert out.shape == (1, n, GEMMA3_VOCAB_SIZE)
  assert bool(jnp.isfinite(out).all())
  # Random, not dead (the scaled draws of models._random_init): the
  # next-token distribution depends on the input.
  other = logits(lora, tokens.at[0, 0].set(tokens[0, 0] + 1))
  assert float(jnp.abs(out[0, -1] - other[0, -1]).max()) > 1e-3


@pytest.mark.slow
def test_the_shipped_tokenizer_by_default(gemma3_270m_dir, monkeypatch):
  # The fixture prepares the 270M under <root>/models/gemma3-270m, where
  # `grar models prepare` puts it with GRAR_CACHE=<root>.
  monkeypatch.setenv("GRAR_CACHE", str(gemma3_270m_dir.parent.parent))
  assert prepared_dir("gemma3-270m") == gemma3_270m_dir
  tokenizer = models._random_tokenizer(
      ModelSpec(family="gemma3-random", size="1b"))
  assert isinstance(tokenizer, HFTokenizer)
  assert tokenizer.vocab_size <= GEMMA3_VOCAB_SIZE
  assert tokenizer.decode(tokenizer.encode("What is 2 + 2?")) == (
      "What is 2 + 2?")
