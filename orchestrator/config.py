"""One run's configuration: YAML, validated at load, overridable by --set."""

import dataclasses
from typing import Literal

from judge_server import strict
from judge_server.config import JudgeConfig, MeshShape
from policy_worker.spec import ModelSpec


def _positive(obj, *names):
  for name in names:
    if getattr(obj, name) <= 0:
      raise ValueError(f"{name}: must be > 0, got {getattr(obj, name)}")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  policy: MeshShape = MeshShape(fsdp=1, tp=4)
  judge: MeshShape = MeshShape(fsdp=1, tp=4)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  path: str = "data/reasoning-sample.jsonl"
  shuffle_seed: int = 0


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  num_generations: int = 4
  max_prompt_tokens: int = 512
  max_new_tokens: int = 32
  temperature: float = 1.0
  top_p: float = 1.0

  def __post_init__(self):
    _positive(self, "max_prompt_tokens", "max_new_tokens", "temperature")
    if self.num_generations < 2:
      raise ValueError("num_generations: GRPO needs >= 2 completions per "
                       "prompt to compare them")
    if not 0 < self.top_p <= 1:
      raise ValueError("top_p: must be in (0, 1]")


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
  beta: float = 0.04
  epsilon: float = 0.2
  learning_rate: float = 1e-3
  max_grad_norm: float = 1.0
  lora_rank: int = 4
  lora_alpha: float = 8.0

  def __post_init__(self):
    _positive(self, "epsilon", "learning_rate", "max_grad_norm", "lora_rank",
              "lora_alpha")
    if self.beta < 0:
      raise ValueError("beta: must be >= 0")


@dataclasses.dataclass(frozen=True)
class JudgeRunConfig:
  """in-process: the judge backend runs on the judge mesh of this process
  behind a loopback gRPC server; remote: a judge server at `target`."""
  placement: Literal["in-process", "remote"] = "in-process"
  target: str = ""
  timeout_s: float = 300.0
  aggregation: Literal["explicit", "implicit"] = "explicit"
  server: JudgeConfig = JudgeConfig()

  def __post_init__(self):
    _positive(self, "timeout_s")
    if self.placement == "remote" and not self.target:
      raise ValueError("target: required when placement is 'remote' "
                       "(HOST:PORT of a running judge server)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int = 4
  batch_size: int = 2  # prompts per step; each gets num_generations rollouts
  seed: int = 0
  checkpoint_every: int = 0  # 0: only after the last step

  def __post_init__(self):
    _positive(self, "steps", "batch_size")
    if self.checkpoint_every < 0:
      raise ValueError("checkpoint_every: must be >= 0")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  model: ModelSpec = ModelSpec()
  mesh: MeshConfig = MeshConfig()
  data: DataConfig = DataConfig()
  rollout: RolloutConfig = RolloutConfig()
  grpo: GRPOConfig = GRPOConfig()
  # Components and their weights in the composite reward; a component with
  # weight 0 is still computed and logged. "judge" is the rubric reward.
  rewards: dict[str, float] = dataclasses.field(
      default_factory=lambda: {"format": 0.2, "answer": 0.5, "judge": 0.3})
  judge: JudgeRunConfig = JudgeRunConfig()
  train: TrainConfig = TrainConfig()
  output_dir: str = "runs"
  run_name: str = ""  # default: a timestamp

  def __post_init__(self):
    known = {"format", "answer", "judge"}
    for name, weight in self.rewards.items():
      if name not in known:
        raise ValueError(f"rewards.{name}: unknown reward component "
                         f"(known: {', '.join(sorted(known))})")
      if weight < 0:
        raise ValueError(f"rewards.{name}: weight must be >= 0")
    if not any(self.rewards.values()):
      raise ValueError("rewards: at least one weight must be > 0")
    batch = self.train.batch_size * self.rollout.num_generations
    if batch % self.mesh.policy.fsdp:
      raise ValueError(
          f"train.batch_size: batch_size x num_generations = {batch} must be a "
          f"multiple of mesh.policy.fsdp={self.mesh.policy.fsdp}")


def load(path, overrides=()) -> RunConfig:
  return strict.load(RunConfig, path, overrides)
