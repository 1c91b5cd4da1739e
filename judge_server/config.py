"""The judge server's configuration (YAML, validated by judge_server.strict)."""

import dataclasses
from typing import Literal

from judge_server import strict
from policy_worker.spec import ModelSpec


@dataclasses.dataclass(frozen=True)
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


@dataclasses.dataclass(frozen=True)
class BackendConfig:
  kind: Literal["jax"] = "jax"
  model: ModelSpec = ModelSpec(seed=1)
  # Devices of the standalone server's process; in-process placement uses the
  # orchestrator's judge mesh instead.
  mesh: MeshShape = MeshShape()
  max_batch: int = 8
  max_prompt_tokens: int = 2048
  min_score_mass: float = 0.0

  def __post_init__(self):
    if self.max_batch < 1:
      raise ValueError("max_batch: must be >= 1")
    if self.max_prompt_tokens < 16:
      raise ValueError("max_prompt_tokens: must be >= 16")
    if not 0.0 <= self.min_score_mass <= 1.0:
      raise ValueError("min_score_mass: must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class Limits:
  max_prompt_chars: int = 8000
  max_completion_chars: int = 16000
  max_reference_chars: int = 2000
  max_criteria: int = 32
  max_requests_per_batch_call: int = 256
  max_rollout_id_chars: int = 256

  def __post_init__(self):
    for f in dataclasses.fields(self):
      if getattr(self, f.name) < 1:
        raise ValueError(f"{f.name}: must be >= 1")


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
  host: str = "127.0.0.1"
  port: int = 0  # 0: any free port; the server prints the one it took
  backend: BackendConfig = BackendConfig()
  max_wait_ms: float = 5.0  # how long the batcher waits to fill a batch
  default_aggregation: Literal["explicit", "implicit"] = "explicit"
  rubric_dir: str = ""  # extra rubric packs beside the shipped ones
  limits: Limits = Limits()

  def __post_init__(self):
    if not 0 <= self.port <= 65535:
      raise ValueError("port: must be in 0..65535")
    if self.max_wait_ms < 0:
      raise ValueError("max_wait_ms: must be >= 0")


def load(path, overrides=()) -> JudgeConfig:
  return strict.load(JudgeConfig, path, overrides)
