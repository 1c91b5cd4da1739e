"""A byte-level tokenizer for the tiny random models.

The tiny models need a tokenizer that ships with the code and round-trips any
text; bytes do both. Ids 0-3 are special, byte b is id b + 4. It has the
methods tunix's TokenizerAdapter needs (encode, decode, bos_id, eos_id, pad_id).
"""

PAD, BOS, EOS, UNUSED = 0, 1, 2, 3
OFFSET = 4
VOCAB_SIZE = 256 + OFFSET


class ByteTokenizer:

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

  def special_ids(self) -> list[int]:
    """Ids a sampler must never emit inside text."""
    return [PAD, BOS, UNUSED]
