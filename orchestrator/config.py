"""One run's configuration: YAML, validated at load, overridable by --set."""

import dataclasses
from typing import Literal

from grar_config import strict
from grar_config.mesh import MeshShape
from judge_server.config import JudgeConfig
from orchestrator.data import templates
from orchestrator.judge.channel import ChannelConfig
from grar_config.model import ModelSpec


def positive(obj, *names):
  """Raises ValueError naming the first of `names` of `obj` not above 0."""
  for name in names:
    if getattr(obj, name) <= 0:
      raise ValueError(f"{name}: must be > 0, got {getattr(obj, name)}")


@strict.config
class MeshConfig:
  policy: MeshShape = MeshShape(fsdp=1, tp=4)
  judge: MeshShape = MeshShape(fsdp=1, tp=4)


@strict.config
class DataConfig:
  path: str = "data/reasoning-sample.jsonl"
  shuffle_seed: int = 0


@strict.config
class CurriculumConfig:
  """Harder datasets after data.path (level 0), advanced by the policy's
  success rate (orchestrator/data/curriculum.py): once a level has had
  min_steps trained steps and the mean of `component` over the rollouts of
  its last min_steps steps reaches `threshold`, batches come from the next
  level. No levels: no curriculum."""
  levels: tuple[str, ...] = ()
  component: Literal["answer", "format", "judge", "relevance"] = "answer"
  threshold: float = 0.7
  min_steps: int = 4

  def __post_init__(self):
    positive(self, "min_steps")
    if not 0 <= self.threshold <= 1:
      raise ValueError(f"threshold: must be in [0, 1], got {self.threshold}")


@strict.config
class PromptConfig:
  """The reasoning template that every stage writes (SFT targets) and reads
  (rewards, evaluation). scaffold: the named steps the reasoning goes
  through, in order, each a line "Name: text" in the reasoning block (e.g.
  [Plan, Work, Check]); the prompt names them, and the format reward pays
  half for the blocks and half for the steps in order (rewards.format_reward).
  Empty: free reasoning."""
  scaffold: tuple[str, ...] = ()

  def __post_init__(self):
    templates.check_scaffold(self.scaffold)


@strict.config
class VllmEngineConfig:
  """rollout.engine vllm (orchestrator/rollouts/): a vLLM server generates
  the rollouts with the policy's adapters of each version loaded at run
  time, and the trainer corrects the difference between vLLM's log-probs
  and its own with truncated importance sampling (weights min(p_trainer /
  p_vllm, tis_cap) per token; Yao et al. 2025).

  base_url: a running server ("" starts one here, on the model's directory,
  and stops it with the run): it must have been started with --enable-lora,
  --logprobs-mode processed_logprobs and VLLM_ALLOW_RUNTIME_LORA_UPDATING=
  True, and must read the run directory's adapters/ (same host or a shared
  disk). python: the interpreter that has vllm, for a server started here
  (`make vllm` builds .venv-vllm). extra_args: more server flags, e.g.
  [--enforce-eager] (on CPU: start-up in about a minute instead of three)
  or [--gpu-memory-utilization, "0.4"]."""
  base_url: str = ""
  python: str = ".venv-vllm/bin/python"
  dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
  extra_args: tuple[str, ...] = ()
  kv_cache_gib: int = 1  # VLLM_CPU_KVCACHE_SPACE, read on CPU hosts
  startup_timeout_s: float = 600.0
  request_timeout_s: float = 600.0
  tis_cap: float = 2.0

  def __post_init__(self):
    positive(self, "kv_cache_gib", "startup_timeout_s", "request_timeout_s")
    if self.tis_cap < 1:
      raise ValueError(f"tis_cap: must be >= 1 (the weight of a token both "
                       f"engines agree on), got {self.tis_cap}")


@strict.config
class RolloutConfig:
  num_generations: int = 4
  max_prompt_tokens: int = 512
  max_new_tokens: int = 32
  temperature: float = 1.0
  top_p: float = 1.0
  # Who samples: the policy's own tunix sampler, or a vLLM server (above).
  engine: Literal["tunix", "vllm"] = "tunix"
  vllm: VllmEngineConfig = VllmEngineConfig()

  def __post_init__(self):
    positive(self, "max_prompt_tokens", "max_new_tokens", "temperature")
    if self.num_generations < 2:
      raise ValueError("num_generations: GRPO needs >= 2 completions per "
                       "prompt to compare them")
    if not 0 < self.top_p <= 1:
      raise ValueError("top_p: must be in (0, 1]")


@strict.config
class GRPOConfig:
  beta: float = 0.04
  epsilon: float = 0.2
  learning_rate: float = 1e-3
  max_grad_norm: float = 1.0
  lora_rank: int = 4
  lora_alpha: float = 8.0
  # A LoRA checkpoint (e.g. an SFT stage's) to start from instead of qwix's
  # zero adapters; its rank and alpha must be lora_rank and lora_alpha. It is
  # the KL reference too: GRPO stays near the policy it started from.
  init_from: str = ""
  # The per-token estimator of KL(policy || reference) in the loss and the
  # logged kl. low_var_kl (Schulman's k3, DeepSeekMath's GRPO): r - 1 -
  # log r with r = p_ref / p, never negative. kl: log p - log p_ref, tunix's
  # default, unbiased only on the policy's own samples and negative in many
  # batches, which reads as a bug in metrics.csv. mse_kl: (log p - log
  # p_ref)^2 / 2.
  kl_estimator: Literal["low_var_kl", "kl", "mse_kl"] = "low_var_kl"
  # How per-token losses become the batch's: sequence-mean-token-mean
  # (GRPO's: each completion's mean, then their mean), token-mean (DAPO's:
  # every token counts the same) or sequence-mean-token-scale (Dr. GRPO's:
  # each completion's sum over rollout.max_new_tokens, no length bias).
  # Only the rollouts of groups that carry signal count (policy_worker/
  # grpo.py): a batch with none makes no optimizer step.
  loss_aggregation: Literal["sequence-mean-token-mean", "token-mean",
                            "sequence-mean-token-scale"] = (
                                "sequence-mean-token-mean")

  def __post_init__(self):
    positive(self, "epsilon", "learning_rate", "max_grad_norm", "lora_rank",
              "lora_alpha")
    if self.beta < 0:
      raise ValueError("beta: must be >= 0")


@strict.config
class RewardsConfig:
  """weights: components of the composite reward and their weights ("judge"
  is the rubric reward); a component with weight 0 is still computed and
  logged. mode: weighted_sum adds the raw components; group_normalized
  standardises each component within its prompt's group first (GDPO), so a
  component with a small spread is not drowned by one with a large spread.
  "relevance" (orchestrator/relevance.py) is always computed and logged,
  trained on only when given a weight: TF-IDF cosine of the reasoning with
  the question and reference, times min(1, relevance_max_tokens / its
  length in words) and its distinct word n-grams over its n-grams (n =
  relevance_repeat_ngram; 0 measures no repetition)."""
  weights: dict[str, float] = dataclasses.field(
      default_factory=lambda: {"format": 0.2, "answer": 0.5, "judge": 0.3})
  mode: Literal["weighted_sum", "group_normalized"] = "weighted_sum"
  relevance_max_tokens: int = 64
  relevance_repeat_ngram: int = 3

  def __post_init__(self):
    positive(self, "relevance_max_tokens")
    if (n := self.relevance_repeat_ngram) < 0:
      raise ValueError("relevance_repeat_ngram: must be >= 0 (0: no "
                       f"repetition penalty), got {n}")
    known = {"format", "answer", "judge", "relevance"}
    for name, weight in self.weights.items():
      if name not in known:
        raise ValueError(f"weights.{name}: unknown reward component "
                         f"(known: {', '.join(sorted(known))})")
      if weight < 0:
        raise ValueError(f"weights.{name}: must be >= 0")
    if not any(self.weights.values()):
      raise ValueError("weights: at least one weight must be > 0")


@strict.config
class DistillConfig:
  """On-policy distillation, with the judge's model as the teacher (the
  TokenLogprobs RPC; its tokenizer must be the student's, checked at
  start). Each completion token's advantage gains coef x (log p_teacher -
  log p_student) of that token, the negative of the reverse KL's estimate
  there (policy_worker.advantages.teacher_advantages); the student's
  log-probs are those recorded at generation, at rollout.temperature. The
  teacher is asked beside the judge, overlapping the next generation as
  the judge does; teacher_kl (per rollout, the mean over its tokens of log
  p_student - log p_teacher) is logged and journaled. rewards false trains
  on the teacher's advantage alone; the rewards are still computed and
  logged, to watch what distillation does to them. coef 0: off."""
  coef: float = 0.0
  rewards: bool = True

  def __post_init__(self):
    if self.coef < 0:
      raise ValueError("coef: must be >= 0")
    if not self.rewards and not self.coef:
      raise ValueError("rewards: false trains on the teacher alone, so coef "
                       "must be > 0")


@strict.config
class JudgeValidationConfig:
  """The judge check before a run trusts its judge (and before `grar
  eval`): `rows` of the run's examples become probes (a correct answer,
  a wrong one, off-topic text, padding, no answer, a prompt injection; see
  orchestrator/judge/validate.py), scored by the judge, the table written
  to the run directory. A judge that scores the correct answer above the
  off-topic text in fewer than min_off_topic_accuracy of the rows (ties
  half) cannot see what it grades, and one that scores it above the wrong
  answer in fewer than min_wrong_accuracy cannot tell right from wrong,
  which is what a GRPO group whose format and answer rewards are flat
  relies on: on_fail stop ends the run before training, warn says so and
  trains, unweight says so and trains without the judge's reward (its
  weight in rewards.weights becomes 0 for the run, and the run
  directory's config copy says so; the judge still scores every rollout,
  logged as before), skip does not check (not "off", which YAML reads as
  false). In `grar eval`, which trains nothing, unweight is warn."""
  rows: int = 8
  min_off_topic_accuracy: float = 0.8
  # Chance: the check's few rows give wide intervals, and a judge at 0.8
  # on the held-out probes would fail a higher bar on 4 rows often.
  min_wrong_accuracy: float = 0.5
  on_fail: Literal["stop", "warn", "unweight", "skip"] = "stop"

  def __post_init__(self):
    positive(self, "rows")
    for name in ("min_off_topic_accuracy", "min_wrong_accuracy"):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f"{name}: must be in [0, 1]")


@strict.config
class JudgeWatchConfig:
  """A watch for reward hacking while training: a warning when the
  correlation of the judge's reward with completion length (per step, over
  its scored rollouts) is above length_corr_warn for `patience` steps in a
  row. length_corr_warn 1 never warns."""
  length_corr_warn: float = 0.5
  patience: int = 3

  def __post_init__(self):
    positive(self, "patience")
    if not -1 <= self.length_corr_warn <= 1:
      raise ValueError("length_corr_warn: must be in [-1, 1]")


@strict.config
class JudgeRunConfig:
  """Where the judge runs. in-process: on the judge mesh of the trainer's
  process, behind a loopback gRPC server; subprocess: a judge server process
  on this host with the judge's devices (mesh.judge) to itself; remote: a
  judge server at `target`; ray: ray.judge_replicas judge servers as Ray
  actors, rollouts spread over them. The trainer reaches all over gRPC."""
  placement: Literal["in-process", "subprocess", "remote", "ray"] = (
      "in-process")
  target: str = ""
  timeout_s: float = 300.0
  startup_timeout_s: float = 300.0  # for a judge process to listen
  aggregation: Literal["explicit", "implicit"] = "explicit"
  # The run stops when more than this fraction of a step's rollouts is
  # unscorable for `unscorable_patience` steps in a row.
  max_unscorable_rate: float = 0.5
  unscorable_patience: int = 3
  validation: JudgeValidationConfig = JudgeValidationConfig()
  watch: JudgeWatchConfig = JudgeWatchConfig()
  server: JudgeConfig = JudgeConfig()
  # How the trainer connects: token file, TLS files (orchestrator.judge.channel).
  client: ChannelConfig = ChannelConfig()

  def __post_init__(self):
    positive(self, "timeout_s", "startup_timeout_s", "unscorable_patience")
    if not 0 <= self.max_unscorable_rate <= 1:
      raise ValueError("max_unscorable_rate: must be in [0, 1]")
    if self.placement == "remote" and not self.target:
      raise ValueError("target: required when placement is 'remote' "
                       "(HOST:PORT of a running judge server)")


@strict.config
class TrainConfig:
  steps: int = 4
  batch_size: int = 2  # prompts per step; each gets num_generations rollouts
  seed: int = 0
  checkpoint_every: int = 0  # 0: only after the last step
  # How many policy versions a batch may lag behind when it is trained on:
  # 0 generates, judges and trains each batch in turn; 1 generates the next
  # batch while the judge scores this one.
  staleness: int = 1

  def __post_init__(self):
    positive(self, "steps", "batch_size")
    if self.checkpoint_every < 0:
      raise ValueError("checkpoint_every: must be >= 0")
    if self.staleness < 0:
      raise ValueError("staleness: must be >= 0")


@strict.config
class ActorResources:
  """What one Ray actor asks the cluster for, e.g. num_gpus: 1 on GPU nodes
  or resources: {TPU: 4} on TPU VMs."""
  num_cpus: float = 1.0
  num_gpus: float = 0.0
  resources: dict[str, float] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for name in ("num_cpus", "num_gpus"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name}: must be >= 0")
    for name, amount in self.resources.items():
      if amount <= 0:
        raise ValueError(f"resources.{name}: must be > 0")


@strict.config
class RayConfig:
  """Scale-out on a Ray cluster, the trainer being its driver. address: a
  running cluster (HOST:PORT or "auto"); "" starts a local one.
  rollout_workers: actors that generate rollouts (0: the trainer does).
  judge_replicas: judge servers as actors, for judge.placement ray."""
  address: str = ""
  rollout_workers: int = 0
  judge_replicas: int = 0
  rollout_worker: ActorResources = ActorResources()
  judge_replica: ActorResources = ActorResources()
  # For the actors to be ready: placed, models built, judges listening.
  startup_timeout_s: float = 300.0
  # Times Ray restarts a judge replica whose process died (-1: always), so
  # that one crash or preemption does not shrink the pool for the whole run.
  judge_replica_restarts: int = 3

  def __post_init__(self):
    for name in ("rollout_workers", "judge_replicas"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name}: must be >= 0")
    positive(self, "startup_timeout_s")
    if self.judge_replica_restarts < -1:
      raise ValueError("judge_replica_restarts: must be >= 0, or -1 for "
                       f"without limit, got {self.judge_replica_restarts}")

  @property
  def used(self) -> bool:
    return bool(self.rollout_workers or self.judge_replicas)


@strict.config
class WandbTrackingConfig:
  """tracking backend wandb. mode offline writes the run under
  dir/wandb/offline-run-* with no network or account (`wandb sync` uploads
  it later); online sends it as it goes (WANDB_API_KEY or `wandb login`).
  dir: "" is the run directory. entity: the W&B team or user ("": the
  account's default)."""
  mode: Literal["offline", "online"] = "offline"
  dir: str = ""
  entity: str = ""


@strict.config
class MlflowTrackingConfig:
  """tracking backend mlflow. tracking_uri: "" is a file store in the run
  directory (RUN_DIR/mlruns; `mlflow ui --backend-store-uri RUN_DIR/mlruns`
  shows it), "file:/path" one elsewhere, "http(s)://..." an MLflow server
  (sqlite:/// needs the full mlflow package). experiment: "" is
  tracking.project."""
  tracking_uri: str = ""
  experiment: str = ""


@strict.config
class TrackingConfig:
  """Where each step's metrics go besides metrics.csv: the same rows
  (orchestrator/rundir/tracking.py), with the run's config (W&B config,
  MLflow params and config.json) and, after a pipeline's held-out
  evaluation, its table and the plots. tensorboard writes RUN_DIR/
  tensorboard; wandb and mlflow are configured below, several backends
  at once. A backend that cannot start stops the run; one that fails
  later is warned about once and dropped, and the run goes on
  (metrics.csv has every row). A resumed run goes on in the same tracked
  run (ids in RUN_DIR/tracking.json); the steps after the crashed run's
  last checkpoint are logged again. project: the W&B project and the
  MLflow experiment. run_name: the tracked run's name ("": the run
  directory's)."""
  backends: tuple[Literal["tensorboard", "wandb", "mlflow"], ...] = (
      "tensorboard",)
  project: str = "grar"
  run_name: str = ""
  wandb: WandbTrackingConfig = WandbTrackingConfig()
  mlflow: MlflowTrackingConfig = MlflowTrackingConfig()

  def __post_init__(self):
    if len(set(self.backends)) != len(self.backends):
      raise ValueError(f"backends: each at most once, got "
                       f"{list(self.backends)}")
    if not self.project:
      raise ValueError("project: must not be empty")


@strict.config
class RunConfig:
  model: ModelSpec = ModelSpec()
  mesh: MeshConfig = MeshConfig()
  data: DataConfig = DataConfig()
  curriculum: CurriculumConfig = CurriculumConfig()
  prompt: PromptConfig = PromptConfig()
  rollout: RolloutConfig = RolloutConfig()
  grpo: GRPOConfig = GRPOConfig()
  rewards: RewardsConfig = RewardsConfig()
  distill: DistillConfig = DistillConfig()
  judge: JudgeRunConfig = JudgeRunConfig()
  train: TrainConfig = TrainConfig()
  ray: RayConfig = RayConfig()
  tracking: TrackingConfig = TrackingConfig()
  output_dir: str = "runs"
  run_name: str = ""  # default: a timestamp

  def __post_init__(self):
    batch = self.train.batch_size * self.rollout.num_generations
    if batch % self.mesh.policy.fsdp:
      raise ValueError(
          f"train.batch_size: batch_size x num_generations = {batch} must be a "
          f"multiple of mesh.policy.fsdp={self.mesh.policy.fsdp}")
    if (self.judge.placement == "ray") != (self.ray.judge_replicas > 0):
      raise ValueError(
          "ray.judge_replicas: must be >= 1 exactly when judge.placement is "
          f"'ray' (placement {self.judge.placement!r}, "
          f"{self.ray.judge_replicas} replicas)")
    if self.rollout.engine == "vllm" and self.ray.rollout_workers:
      raise ValueError(
          "rollout.engine: vllm generates every rollout; set "
          "ray.rollout_workers to 0 (or engine tunix for Ray workers)")
    if self.ray.rollout_workers > self.train.batch_size:
      raise ValueError(
          f"ray.rollout_workers: {self.ray.rollout_workers} workers for "
          f"train.batch_size={self.train.batch_size} prompts would leave some "
          "idle; use at most batch_size")


def load(path, overrides=()) -> RunConfig:
  return strict.load(RunConfig, path, overrides)
