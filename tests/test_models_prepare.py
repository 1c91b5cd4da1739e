"""`grar models prepare gemma3-270m`: the shipped GGUF becomes an HF-format
directory that tunix, transformers and SentencePiece all read the same way.

Real package, real weights: conftest's gemma3_270m_dir converts once per
test run into a temporary directory (half a minute to a minute on 2 cores)
and every test here reads that.
"""

import json
import os
import pathlib
import shutil

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sentencepiece
import transformers

from orchestrator import mesh as mesh_lib
from policy_worker import models
from policy_worker import prepare
from grar_config.model import ModelSpec
from policy_worker.tokenizer import HFTokenizer

PROMPT = "The capital of France is"
PROMPT_IDS = [818, 5279, 529, 7001, 563]  # Gemma-3's own tokenizer's
DATA = pathlib.Path(__file__).parent.parent / "data/reasoning-sample.jsonl"


def _texts() -> list[str]:
  with DATA.open() as f:
    rows = [json.loads(line) for line in f]
  return [str(v) for row in rows for v in row.values()] + [
      "a  b   c\t\td\n\n\ne", "  leading and trailing  ",
      "héllo wörld — ∑∫ 日本語のテキスト 😀🚀 ﬁ", "def f(x):\n\treturn x**2\n",
      "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"]


@pytest.mark.slow
def test_the_tokenizer_files_agree_with_gemma(gemma3_270m_dir):
  tok = HFTokenizer(gemma3_270m_dir)
  assert tok.encode(PROMPT) == PROMPT_IDS
  assert tok.decode(PROMPT_IDS) == PROMPT
  assert (tok.bos_id(), tok.eos_id(), tok.pad_id()) == (2, 1, 0)
  special = set(tok.special_ids())
  assert {0, 2, 3} <= special and 1 not in special
  # tokenizer.json's merges are rebuilt from the scores; tokenizer.model is
  # a SentencePiece BPE over the same scores, with no merges at all. The two
  # encoders agreeing on varied text is the evidence the merges are right.
  sp = sentencepiece.SentencePieceProcessor(
      model_file=str(gemma3_270m_dir / "tokenizer.model"))
  for text in _texts():
    assert sp.EncodeAsIds(text) == tok.encode(text), text
    assert sp.DecodeIds(tok.encode(text)) == text


@pytest.mark.slow
def test_transformers_reads_the_directory(gemma3_270m_dir):
  # What vLLM's side sees of the directory.
  config = transformers.AutoConfig.from_pretrained(gemma3_270m_dir)
  assert config.model_type == "gemma3_text"
  assert config.layer_types[:6] == ["sliding_attention"] * 5 + [
      "full_attention"]
  tok = transformers.AutoTokenizer.from_pretrained(gemma3_270m_dir)
  assert tok.encode(PROMPT) == [2] + PROMPT_IDS
  ours = HFTokenizer(gemma3_270m_dir)
  for text in _texts():
    assert tok.encode(text, add_special_tokens=False) == ours.encode(text)


@pytest.mark.slow
def test_loads_on_one_device_and_knows_paris(gemma3_270m_dir):
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                           mesh_lib.AXES)
  spec = ModelSpec(family="gemma3", path=str(gemma3_270m_dir))
  model, tok = models.build_model(spec, mesh)
  real = sum(x.size * x.dtype.itemsize
             for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert mesh_lib.estimate_param_bytes(spec) == real
  ids = [tok.bos_id()] + tok.encode(PROMPT)
  with jax.set_mesh(mesh):
    logits, _ = model(jnp.asarray([ids]), jnp.arange(len(ids))[None], None,
                      jnp.tril(jnp.ones((len(ids), len(ids)), bool))[None])
  top5 = np.argsort(-np.asarray(logits[0, -1]))[:5]
  # The 270M base model ranks " Paris" third, after " the" and " a".
  assert " Paris" in [tok.decode([int(i)]) for i in top5]


def test_a_corrupt_gguf_is_a_prepare_error(tmp_path):
  garbage = tmp_path / "garbage.gguf"
  garbage.write_bytes(os.urandom(4096))
  bad_header = tmp_path / "bad-header.gguf"
  bad_header.write_bytes(b"GGUF" + os.urandom(4092))
  for path in (garbage, bad_header, tmp_path / "missing.gguf"):
    with pytest.raises(prepare.PrepareError, match=path.name):
      prepare.convert_gguf(path, tmp_path / "out")
  assert not prepare.is_complete(tmp_path / "out")


def _mtimes(directory) -> dict[str, int]:
  return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


@pytest.mark.slow
def test_a_complete_directory_is_reused(gemma3_270m_dir):
  before = _mtimes(gemma3_270m_dir)
  assert prepare.prepare_gemma3_270m(gemma3_270m_dir) == gemma3_270m_dir
  assert _mtimes(gemma3_270m_dir) == before


@pytest.mark.slow
def test_a_short_file_makes_the_directory_incomplete(gemma3_270m_dir,
                                                      tmp_path):
  copy = tmp_path / "copy"
  copy.mkdir()
  for path in gemma3_270m_dir.iterdir():
    (copy / path.name).symlink_to(path)
  assert prepare.is_complete(copy)
  (copy / "model.safetensors").unlink()
  shutil.copyfile(gemma3_270m_dir / "config.json", copy / "model.safetensors")
  assert not prepare.is_complete(copy)
