"""What model to build: a config dataclass, importable without jax.

The judge server's config names its model with it too, and a judge with a
remote backend must load its config on a machine without jax.
"""

import dataclasses
import json
import os
from pathlib import Path

from grar_config import strict

# The byte tokenizer's (policy_worker/tokenizer.py): 4 special ids, then the
# 256 bytes. The tiny random family has this vocabulary.
BYTE_VOCAB_SIZE = 4 + 256
DTYPES = ("float32", "bfloat16")
FAMILIES = ("gemma3-tiny", "gemma3-random", "gemma3", "gemma2")
# Gemma-3's published text configs (the pretrained models' config.json, as
# tunix's ModelConfig.gemma3_*_pt has them; tests/test_models_random.py
# checks they agree): layers, embed, hidden, heads, head_dim, kv heads.
GEMMA3_VOCAB_SIZE = 262_144
GEMMA3_SIZES = {
    "270m": (18, 640, 2048, 4, 256, 1),
    "1b": (26, 1152, 6912, 4, 256, 1),
    "4b": (34, 2560, 10240, 8, 256, 4),
    "12b": (48, 3840, 15360, 16, 256, 8),
}
TOKENIZERS = ("gemma3-270m", "byte")


def cache_dir() -> Path:
  """$GRAR_CACHE, default ~/.cache/grar."""
  return Path(os.environ.get("GRAR_CACHE") or "~/.cache/grar").expanduser()


def prepared_dir(name: str) -> Path:
  """Where `grar models prepare NAME` puts a model by default."""
  return cache_dir() / "models" / name


@dataclasses.dataclass(frozen=True)
class ModelDims:
  """The parameter shapes that mesh planning needs."""
  vocab_size: int
  num_layers: int
  embed_dim: int
  hidden_dim: int
  num_heads: int
  head_dim: int
  num_kv_heads: int


@strict.config
class ModelSpec:
  """Which model to build.

  family "gemma3-tiny" is a randomly initialised Gemma-3 with the shape below
  and the byte tokenizer: real tunix code, small enough for CPU tests.
  "gemma3" and "gemma2" load an HF-format checkpoint directory (`path`:
  config.json, *.safetensors, tokenizer.json); their shape comes from its
  config.json and the shape fields below are unused. "gemma3" without a path
  is the shipped Gemma-3-270M as `grar models prepare gemma3-270m` leaves it.
  "gemma3-random" is a real Gemma-3 shape (`size`: 270m, 1b, 4b, 12b, from
  the published configs) with random weights, for benches where no
  checkpoint can be had; its tokenizer is the shipped 270M's (all Gemma-3
  sizes share it; prepared as above) or, with tokenizer "byte", the byte
  tokenizer. Both fields are for that family only.
  """
  family: str = "gemma3-tiny"
  path: str = ""
  seed: int = 0
  num_layers: int = 2
  embed_dim: int = 64
  hidden_dim: int = 128
  num_heads: int = 4
  head_dim: int = 16
  num_kv_heads: int = 1
  # Gemma-3's first five layers of six attend within this window. A judge
  # must see the whole judge prompt from its last token, so the tiny default
  # covers any prompt the byte tokenizer makes of the default limits.
  sliding_window_size: int = 4096
  dtype: str = "float32"
  size: str = ""
  tokenizer: str = "gemma3-270m"

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ValueError(f"family: unknown model family {self.family!r} "
                       f"(known: {', '.join(FAMILIES)})")
    if self.family == "gemma2" and not self.path:
      raise ValueError("path: family gemma2 needs the HF-format checkpoint "
                       "directory")
    if self.family in ("gemma3-tiny", "gemma3-random") and self.path:
      raise ValueError(f"path: family {self.family} is randomly initialised "
                       "and reads no checkpoint; use family gemma3 or gemma2")
    if (self.family == "gemma3-random") != bool(self.size):
      raise ValueError(
          "size: family gemma3-random needs one of "
          f"{', '.join(GEMMA3_SIZES)}, and only it takes a size"
          if self.family == "gemma3-random" else
          f"size: only family gemma3-random takes a size, not {self.family}")
    if self.size and self.size not in GEMMA3_SIZES:
      raise ValueError(f"size: unknown Gemma-3 size {self.size!r} (known: "
                       f"{', '.join(GEMMA3_SIZES)})")
    if self.tokenizer not in TOKENIZERS:
      raise ValueError(f"tokenizer: {self.tokenizer!r} is not one of "
                       f"{TOKENIZERS}")
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype: {self.dtype!r} is not one of {DTYPES}")
    for name in ("num_layers", "embed_dim", "hidden_dim", "num_heads",
                 "head_dim", "num_kv_heads", "sliding_window_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}: must be >= 1")
    if self.num_heads % self.num_kv_heads:
      raise ValueError("num_heads: must be a multiple of num_kv_heads")

  @property
  def model_dir(self) -> Path | None:
    """The checkpoint directory; None for the random families."""
    if self.family in ("gemma3-tiny", "gemma3-random"):
      return None
    if self.path:
      return Path(self.path).expanduser()
    return prepared_dir("gemma3-270m")

  def hf_config(self) -> dict:
    """The text model's config.json (a multimodal one's text_config)."""
    file = self.model_dir / "config.json"
    try:
      config = json.loads(file.read_text())
    except FileNotFoundError:
      hint = (" (run `grar models prepare gemma3-270m`, or set model.path)"
              if not self.path else "")
      raise ValueError(f"path: no model at {self.model_dir}: {file.name} is "
                       f"missing{hint}") from None
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"path: cannot read {file}: {e}") from None
    return config.get("text_config", config)

  def dims(self) -> ModelDims:
    """The model's shapes: the fields above, or the checkpoint's config."""
    if self.family == "gemma3-tiny":
      return ModelDims(BYTE_VOCAB_SIZE, self.num_layers, self.embed_dim,
                       self.hidden_dim, self.num_heads, self.head_dim,
                       self.num_kv_heads)
    if self.family == "gemma3-random":
      return ModelDims(GEMMA3_VOCAB_SIZE, *GEMMA3_SIZES[self.size])
    c = self.hf_config()
    try:
      return ModelDims(
          c["vocab_size"], c["num_hidden_layers"], c["hidden_size"],
          c["intermediate_size"], c["num_attention_heads"], c["head_dim"],
          c["num_key_value_heads"])
    except KeyError as e:
      raise ValueError(
          f"path: {self.model_dir}/config.json has no {e}") from None

  @property
  def name(self) -> str:
    if self.model_dir is not None:
      return f"{self.family}-{self.model_dir.name}"
    if self.family == "gemma3-random":
      return f"{self.family}-{self.size}-seed{self.seed}"
    return (f"{self.family}-L{self.num_layers}-D{self.embed_dim}"
            f"-seed{self.seed}")
