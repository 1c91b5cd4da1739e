"""`grar export`: a run's LoRA merged into its base, as an HF-format model.

The exported directory is read back by a different implementation than the
one that wrote it (grar's HF loader, tunix's safetensors reader; vLLM for the
real Gemma-3-270M), and its next-token distributions are compared with the
unmerged LoRA model's.
"""

import concurrent.futures
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
import pytest

from policy_worker import checkpoint, export, models, prepare
from grar_config.model import ModelSpec
from policy_worker.tokenizer import ByteTokenizer, HFTokenizer
import random_lora
import test_parity_vllm as parity
import vllm_server

PROMPT = "Question: What is 47 + 38?\n<reasoning>7 + 8 = 15"


def _mesh():
  return jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                           ("fsdp", "tp"))


def lora_checkpoint(spec, directory, *, rank, alpha, scale):
  """Saves spec's model with random (non-zero) LoRA adapters of `scale`;
  returns the LoRA model."""
  mesh = _mesh()
  model, _ = models.build_model(spec, mesh)
  model = models.apply_lora(model, mesh, rank=rank, alpha=alpha, seed=0)
  random_lora.randomise(model, scale, seed=7)
  checkpoint.save(directory, model,
                  nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.LoRAParam))
  return model


@nnx.jit
def _forward(model, tokens):
  seq = tokens.shape[1]
  logits, _ = model(tokens, jnp.arange(seq)[None], None,
                    jnp.tril(jnp.ones((seq, seq), bool))[None])
  return jax.nn.log_softmax(logits[0].astype(jnp.float32))


def _logprobs(model, ids: list[int]) -> np.ndarray:
  """log p(next token | ids[:t+1]) at every position, float32."""
  with jax.set_mesh(_mesh()):
    return np.asarray(_forward(model, jnp.asarray([ids], jnp.int32)))


def test_tiny_export_reads_back_as_the_lora_model(tmp_path):
  spec = ModelSpec(family="gemma3-tiny")
  lora_model = lora_checkpoint(spec, tmp_path / "ckpt", rank=4, alpha=8.0,
                                scale=0.3)
  out = export.export(spec, tmp_path / "ckpt", 8.0, tmp_path / "hf")
  assert prepare.is_complete(out)
  merged, tokenizer = models.build_model(
      ModelSpec(family="gemma3", path=str(out)), _mesh())
  base, _ = models.build_model(spec, _mesh())

  # The exported tokenizer.json is the byte tokenizer.
  ids = [tokenizer.bos_id(), *tokenizer.encode(PROMPT)]
  assert ids[1:] == ByteTokenizer().encode(PROMPT)
  assert tokenizer.decode(ids) == PROMPT

  want, got = _logprobs(lora_model, ids), _logprobs(merged, ids)
  moved = np.abs(want - _logprobs(base, ids)).max()
  diff = np.abs(want - got).max()
  print(f"max |dlogp| merged vs LoRA {diff:.1e}; LoRA vs base {moved:.2f}")
  assert moved > 1.0  # the adapters matter, so a dropped delta would show
  assert diff < 1e-4


def test_export_refuses_to_overwrite(tmp_path):
  (tmp_path / "hf").mkdir()
  (tmp_path / "hf" / "keep.txt").write_text("mine")
  with pytest.raises(ValueError, match="out: .* not empty"):
    export.export(ModelSpec(), None, 8.0, tmp_path / "hf")
  assert (tmp_path / "hf" / "keep.txt").read_text() == "mine"


# The parity test's prompts but the long one: enough to compare, and each
# costs a 270M forward pass here.
VLLM_PROMPTS = ("fact", "code", "judge")


@pytest.fixture(scope="module")
def served_export(gemma3_270m_dir, tmp_path_factory):
  """The real Gemma-3-270M with random LoRA adapters merged in, exported
  and served by vLLM; with tunix's log-probs of the unmerged LoRA model and
  of the base (the same model with its B matrices zeroed).

  The vLLM server starts while tunix computes: its ~70 s start-up is most
  of this fixture's cost, and overlapping it with the tunix work is the
  cheapest arrangement a second server allows."""
  tmp = tmp_path_factory.mktemp("export-270m")
  spec = ModelSpec(family="gemma3", path=str(gemma3_270m_dir))
  lora_model = lora_checkpoint(spec, tmp / "ckpt", rank=4, alpha=8.0,
                               scale=0.03)
  out = export.export(spec, tmp / "ckpt", 8.0, tmp / "hf")
  tokenizer = HFTokenizer(out)
  ids = {name: [tokenizer.bos_id(), *tokenizer.encode(parity.PROMPTS[name])]
         for name in VLLM_PROMPTS}
  serving = vllm_server.serving(out, tmp / "vllm.log")
  with contextlib.ExitStack() as stack, \
      concurrent.futures.ThreadPoolExecutor(1) as pool:
    starting = pool.submit(serving.__enter__)
    # Stops the server once started, however this fixture ends.
    stack.callback(lambda: starting.exception() is None
                   and serving.__exit__(None, None, None))
    lora = {n: _logprobs(lora_model, i)[-1] for n, i in ids.items()}
    for path, var in nnx.iter_graph(lora_model):
      if isinstance(var, nnx.LoRAParam) and path[-1].endswith("_lora_b"):
        var[...] = jnp.zeros_like(var[...])
    base = {n: _logprobs(lora_model, i)[-1] for n, i in ids.items()}
    yield starting.result(), ids, lora, base


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("name", VLLM_PROMPTS)
def test_vllm_serves_the_export_as_tunix_runs_the_lora(served_export, name):
  """vLLM's next-token distribution of the exported directory matches the
  unmerged LoRA model's within the parity test's bounds, while the LoRA
  moved it from the base far beyond them."""
  server, ids, lora, base = served_export
  vllm_ids, top_ids, vllm_lp = parity._vllm_top(server, parity.PROMPTS[name])
  assert vllm_ids == ids[name]
  want = lora[name].astype(np.float64)
  assert list(top_ids[:5]) == list(np.argsort(-want)[:5])
  diff = np.max(np.abs(vllm_lp - want[top_ids]))
  p, q = parity._renormalised(vllm_lp), parity._renormalised(want[top_ids])
  kl = float(np.sum(p * (np.log(p) - np.log(q))))
  moved = np.max(np.abs(vllm_lp - base[name][top_ids]))
  print(f"{name}: max |dlogp| vs LoRA {diff:.1e}, KL {kl:.1e}; "
        f"vs base {moved:.2f}")
  assert diff < parity.MAX_ABS_LOGPROB_DIFF and kl < parity.MAX_KL
  assert moved > 100 * parity.MAX_ABS_LOGPROB_DIFF
