"""A mesh's shape, which the judge's config and the trainer's mesh plan both
name."""


from grar_config import strict


@strict.config
class MeshShape:
  """How many devices along each axis; the judge uses fsdp * tp devices."""
  fsdp: int = 1
  tp: int = 1

  def __post_init__(self):
    for axis in ("fsdp", "tp"):
      if getattr(self, axis) < 1:
        raise ValueError(f"{axis}: must be >= 1")

  @property
  def size(self) -> int:
    return self.fsdp * self.tp
