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
class OpenAIConfig:
  """An OpenAI-compatible endpoint: vLLM, llama.cpp's server, hosted APIs."""
  base_url: str = ""  # up to and including the version, e.g. http://h:8000/v1
  model: str = ""  # the name the endpoint serves the judge model under
  # completions: the judge prompt as raw text (vLLM, llama.cpp); chat: the
  # judge prompt as the user's message, for endpoints that only chat.
  mode: Literal["completions", "chat"] = "completions"
  api_key_env: str = ""  # name of the variable holding the key; "" sends none
  # Requests in flight at once. The batcher hands the backend max_batch
  # prompts at a time, so at most min(max_batch, max_concurrency) are.
  max_concurrency: int = 8
  timeout_s: float = 60.0  # deadline of each request, once it is sent
  # How many alternatives of the score token to ask for (vLLM allows 20
  # unless started with more --max-logprobs); the expected score sums the
  # digits among them. 0 asks for none: the written digit is parsed.
  top_logprobs: int = 20

  def __post_init__(self):
    if self.base_url and not self.base_url.startswith(("http://", "https://")):
      raise ValueError(f"base_url: {self.base_url!r} must start with http:// "
                       "or https://")
    if self.max_concurrency < 1:
      raise ValueError("max_concurrency: must be >= 1")
    if not self.timeout_s > 0:
      raise ValueError("timeout_s: must be > 0")
    if self.top_logprobs < 0:
      raise ValueError("top_logprobs: must be >= 0")


@dataclasses.dataclass(frozen=True)
class BackendConfig:
  """kind jax: a tunix model in this process (model, mesh, max_prompt_tokens);
  kind openai: an HTTP endpoint (openai)."""
  kind: Literal["jax", "openai"] = "jax"
  model: ModelSpec = ModelSpec(seed=1)
  # Devices of the standalone server's process; in-process placement uses the
  # orchestrator's judge mesh instead.
  mesh: MeshShape = MeshShape()
  max_batch: int = 8
  max_prompt_tokens: int = 2048
  min_score_mass: float = 0.0
  openai: OpenAIConfig = OpenAIConfig()

  def __post_init__(self):
    if self.kind == "openai":
      for name in ("base_url", "model"):
        if not getattr(self.openai, name):
          raise ValueError(f"openai.{name}: required when kind is 'openai'")
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
