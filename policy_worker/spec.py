"""What model to build: a plain dataclass, importable without jax.

The judge server's config names its model with it too, and a judge with a
remote backend must load its config on a machine without jax.
"""

import dataclasses

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Which model to build.

  family "gemma3-tiny" is a randomly initialised Gemma-3 with the shape below
  and the byte tokenizer: real tunix code, small enough for CPU tests.
  """
  family: str = "gemma3-tiny"
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

  def __post_init__(self):
    if self.family != "gemma3-tiny":
      raise ValueError(f"family: unknown model family {self.family!r} "
                       "(known: gemma3-tiny)")
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype: {self.dtype!r} is not one of {DTYPES}")
    for name in ("num_layers", "embed_dim", "hidden_dim", "num_heads",
                 "head_dim", "num_kv_heads", "sliding_window_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}: must be >= 1")
    if self.num_heads % self.num_kv_heads:
      raise ValueError("num_heads: must be a multiple of num_kv_heads")

  @property
  def name(self) -> str:
    return (f"{self.family}-L{self.num_layers}-D{self.embed_dim}"
            f"-seed{self.seed}")
