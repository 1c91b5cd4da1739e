"""Tokenizers with the methods tunix's TokenizerAdapter needs (encode,
decode, bos_id, eos_id, pad_id) plus special_ids, for the sampler.

encode never adds BOS: the sampler and the judge put it in front themselves.
"""

import json
from pathlib import Path

from grar_config.model import BYTE_VOCAB_SIZE

PAD, BOS, EOS, UNUSED = 0, 1, 2, 3
OFFSET = 4
VOCAB_SIZE = BYTE_VOCAB_SIZE


class ByteTokenizer:
  """A byte-level tokenizer for the tiny random models.

  The tiny models need a tokenizer that ships with the code and round-trips
  any text; bytes do both. Ids 0-3 are special, byte b is id b + 4.
  """

  vocab_size = VOCAB_SIZE

  def encode(self, text: str, **_) -> list[int]:
    return [b + OFFSET for b in text.encode("utf-8")]

  def decode(self, ids, **_) -> str:
    data = bytes(int(i) - OFFSET for i in ids if OFFSET <= int(i) < VOCAB_SIZE)
    return data.decode("utf-8", errors="replace")

  def bos_id(self) -> int:
    return BOS

  def eos_id(self) -> int:
    return EOS

  def pad_id(self) -> int:
    return PAD

  def stop_ids(self) -> list[int]:
    """Ids that end a completion."""
    return [EOS]

  def special_ids(self) -> list[int]:
    """Ids a sampler must never emit inside text."""
    return [PAD, BOS, UNUSED]


class HFTokenizer:
  """The tokenizer.json of an HF-format model directory.

  The same file that transformers and vLLM read, so the policy and a judge
  served by vLLM cut text into the same tokens. bos, eos and pad are the
  ones tokenizer_config.json names; generation_config.json may name more
  ids that end a generation (an instruction-tuned Gemma's <end_of_turn>).
  """

  def __init__(self, model_dir: Path):
    import tokenizers
    model_dir = Path(model_dir)
    try:
      self._tok = tokenizers.Tokenizer.from_file(
          str(model_dir / "tokenizer.json"))
      config = json.loads((model_dir / "tokenizer_config.json").read_text())
    except Exception as e:  # tokenizers raises plain Exception
      raise ValueError(
          f"path: cannot load the tokenizer of {model_dir}: {e}") from None
    self._ids = {}
    for role in ("bos", "eos", "pad"):
      token = config.get(f"{role}_token")
      # Either the token's text or an AddedToken's fields.
      text = token.get("content") if isinstance(token, dict) else token
      token_id = None if text is None else self._tok.token_to_id(text)
      if token_id is None:
        raise ValueError(f"path: {model_dir}/tokenizer_config.json names no "
                         f"{role}_token in the vocabulary")
      self._ids[role] = token_id
    generation = model_dir / "generation_config.json"
    stops = (json.loads(generation.read_text()).get("eos_token_id", [])
             if generation.exists() else [])
    self._stops = sorted({self._ids["eos"], *(
        stops if isinstance(stops, list) else [stops])})

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size()

  def encode(self, text: str, **_) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids, **_) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

  def bos_id(self) -> int:
    return self._ids["bos"]

  def eos_id(self) -> int:
    return self._ids["eos"]

  def pad_id(self) -> int:
    return self._ids["pad"]

  def stop_ids(self) -> list[int]:
    """Ids that end a generation: eos and generation_config.json's."""
    return list(self._stops)

  def special_ids(self) -> list[int]:
    """Ids a sampler must never emit inside text: the special tokens (pad,
    bos, unk, unused, ...) but those that end a generation."""
    return sorted(i for i, t in self._tok.get_added_tokens_decoder().items()
                  if t.special and i not in self._stops)
