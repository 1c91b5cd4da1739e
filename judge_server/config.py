"""The judge server's configuration (YAML, validated by grar_config.strict)."""

import dataclasses
import math
from typing import Literal

from grar_config import strict
from grar_config.mesh import MeshShape
from grar_config.model import ModelSpec
from protos import contract


def _check_endpoint(cfg) -> None:
  """What the remote backends' configs (OpenAIConfig, GeminiConfig) share;
  a base_url "" is for them to allow or refuse."""
  if cfg.base_url and not cfg.base_url.startswith(("http://", "https://")):
    raise ValueError(f"base_url: {cfg.base_url!r} must start with http:// "
                     "or https://")
  for name in ("max_concurrency", "max_calls_in_flight"):
    if getattr(cfg, name) < 1:
      raise ValueError(f"{name}: must be >= 1")
  if not cfg.timeout_s > 0:
    raise ValueError("timeout_s: must be > 0")


@strict.config
class OpenAIConfig:
  """An OpenAI-compatible endpoint: vLLM, llama.cpp's server, hosted APIs."""
  base_url: str = ""  # up to and including the version, e.g. http://h:8000/v1
  model: str = ""  # the name the endpoint serves the judge model under
  # completions: the judge prompt as raw text (vLLM, llama.cpp); chat: the
  # judge prompt as the user's message, for endpoints that only chat.
  mode: Literal["completions", "chat"] = "completions"
  api_key_env: str = ""  # name of the variable holding the key; "" sends none
  # Requests in flight at once. The batcher hands the backend up to
  # max_calls_in_flight batches of max_batch prompts at a time, so at most
  # min(max_calls_in_flight * max_batch, max_concurrency) are.
  max_concurrency: int = 8
  max_calls_in_flight: int = 2
  timeout_s: float = 60.0  # deadline of each request, once it is sent
  # How many alternatives of the score token to ask for (vLLM allows 20
  # unless started with more --max-logprobs); the expected score sums the
  # digits among them. 0 asks for none: the written digit is parsed.
  top_logprobs: int = 20

  def __post_init__(self):
    # "" is caught by BackendConfig, and only when kind is openai.
    _check_endpoint(self)
    if self.top_logprobs < 0:
      raise ValueError("top_logprobs: must be >= 0")


@strict.config
class VertexConfig:
  """Gemini through Vertex AI in Google Cloud project `project`, region
  `location` ("global", or one such as us-central1), as the machine's
  Google credentials allow: Application Default Credentials, which on a
  Google Cloud VM (a TPU VM) are its service account, elsewhere the file in
  GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default
  login`'s. The account needs the Vertex AI User role. project "": not
  Vertex AI, the Gemini API with an API key."""
  project: str = ""
  location: str = "global"

  def __post_init__(self):
    if not self.location:
      raise ValueError("location: must name a region or be 'global'")


@strict.config
class GeminiConfig:
  """Gemini (generateContent), on the Gemini API with an API key, or on
  Vertex AI with the machine's credentials when vertex.project is set."""
  # "" is where the API is served: the Gemini API's, or Vertex AI's for
  # vertex.location.
  base_url: str = ""
  model: str = ""  # e.g. gemini-2.5-flash
  # Name of the variable holding the Gemini API key (unused on Vertex AI);
  # keys never go in the YAML.
  api_key_env: str = "GEMINI_API_KEY"
  vertex: VertexConfig = VertexConfig()
  max_concurrency: int = 8  # requests in flight at once
  max_calls_in_flight: int = 2  # batches the batcher hands over at once
  timeout_s: float = 60.0  # deadline of each request, once it is sent
  # Alternatives of the score token to ask for (the API allows 1-19); the
  # expected score sums the digits among them. 0: the written digit is parsed.
  top_logprobs: int = 19

  def __post_init__(self):
    _check_endpoint(self)
    if not self.api_key_env:
      raise ValueError("api_key_env: must name an environment variable")
    if not 0 <= self.top_logprobs <= 19:
      raise ValueError("top_logprobs: must be in 0..19")


@strict.config
class ResilienceConfig:
  """What every backend call gets, whatever the backend."""
  # One prompt's judging, retries and waits included; then it is unscorable.
  deadline_s: float = 600.0
  # One try; a try that takes longer is a transient failure.
  attempt_timeout_s: float = 300.0
  # Tries after the first, for transient failures only (connection errors,
  # timeouts, HTTP 408/425/429 and 5xx, a backend that raised), after
  # exponential backoff with jitter or the server's Retry-After, whichever
  # is longer.
  max_retries: int = 3
  backoff_initial_s: float = 0.5
  backoff_max_s: float = 30.0
  # After this many consecutive failed tries (none answered, a transient
  # failure among them) the circuit opens: calls fail at once for
  # breaker_open_s, then one probe call decides. 0: never opens. Failures of
  # a prompt of its own (too long, HTTP 400) do not count.
  breaker_failures: int = 5
  breaker_open_s: float = 30.0

  def __post_init__(self):
    for name in ("deadline_s", "attempt_timeout_s", "breaker_open_s"):
      if not getattr(self, name) > 0:
        raise ValueError(f"{name}: must be > 0")
    for name in ("max_retries", "breaker_failures"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name}: must be >= 0")
    if self.backoff_initial_s < 0:
      raise ValueError("backoff_initial_s: must be >= 0")
    if self.backoff_max_s < self.backoff_initial_s:
      raise ValueError("backoff_max_s: must be >= backoff_initial_s")


# The answer format of a backend that scores the rollout itself, not judge
# prompts (kind reward_model): scoring.rollout_prompt.
ROLLOUT = "rollout"


@strict.config
class RewardModelConfig:
  """A reward model of `grar rm train` (kind reward_model). checkpoint: its
  checkpoints/step_N directory. step_labels: the names of the reasoning
  steps (the trainer's prompt.scaffold); a completion that writes lines
  starting with one and a colon is scored at each step's end, and its
  reward is the lowest. () scores the whole rollout only."""
  checkpoint: str = ""
  step_labels: tuple[str, ...] = ()

  def __post_init__(self):
    if any(not label.strip() or ":" in label for label in self.step_labels):
      raise ValueError("step_labels: each must be a non-empty name without "
                       "a colon")


@strict.config
class CriteriaConfig:
  """How the judge is asked about each criterion (judge_server.prompts).
  format scale: one digit 0-9, the score E[digit] / 9; binary: yes or no,
  the score P(yes) / (P(yes) + P(no)). few_shot: the rubric pack's worked
  examples go in every judge prompt before the graded response (a rubric
  without examples is asked without); rollout: no judge prompt, the backend
  (kind reward_model) scores the prompt and completion itself, and the
  rubric is not read. The defaults validated best on the shipped
  Gemma-3-270M (README, "Can the judge see?")."""
  format: Literal["scale", "binary", "rollout"] = "binary"
  few_shot: bool = True
  # The extraction criterion's share of the reward, in [0, 1]: the
  # response's final answer (read as the answer reward reads it) set beside
  # the reference answer, and the judge asked whether they match
  # (prompts.answer_check_prompt); reward = (1 - answer_check) * rubric +
  # answer_check * match. 0: not asked; a rollout without a reference is
  # scored on its rubric alone.
  answer_check: float = 0.0

  def __post_init__(self):
    if self.format not in ("scale", "binary", ROLLOUT):
      raise ValueError(f"format: {self.format!r} is not one of scale, "
                       "binary, rollout")
    if not 0.0 <= self.answer_check <= 1.0:
      raise ValueError("answer_check: must be in [0, 1]")
    if self.answer_check and self.format == ROLLOUT:
      raise ValueError("answer_check: a rollout backend reads no judge "
                       "prompt")


@strict.config
class BackendConfig:
  """kind jax: a tunix model in this process (model, mesh, max_prompt_tokens);
  kind openai: an HTTP endpoint (openai); kind gemini: the Gemini API
  (gemini); kind reward_model: a learned reward model in this process
  (model, mesh, reward_model; criteria.format rollout)."""
  kind: Literal["jax", "openai", "gemini", "reward_model"] = "jax"
  model: ModelSpec = ModelSpec(seed=1)
  # Devices of the standalone server's process; in-process placement uses the
  # orchestrator's judge mesh instead.
  mesh: MeshShape = MeshShape()
  max_batch: int = 8
  max_prompt_tokens: int = 2048
  min_score_mass: float = 0.0
  criteria: CriteriaConfig = CriteriaConfig()
  openai: OpenAIConfig = OpenAIConfig()
  gemini: GeminiConfig = GeminiConfig()
  reward_model: RewardModelConfig = RewardModelConfig()
  resilience: ResilienceConfig = ResilienceConfig()

  def __post_init__(self):
    if self.kind == "openai":
      for name in ("base_url", "model"):
        if not getattr(self.openai, name):
          raise ValueError(f"openai.{name}: required when kind is 'openai'")
    if self.kind == "gemini" and not self.gemini.model:
      raise ValueError("gemini.model: required when kind is 'gemini'")
    if self.kind == "reward_model" and not self.reward_model.checkpoint:
      raise ValueError("reward_model.checkpoint: required when kind is "
                       "'reward_model'")
    if (self.kind == "reward_model") != (self.criteria.format == ROLLOUT):
      raise ValueError(f"criteria.format: {self.criteria.format!r} with kind "
                       f"{self.kind!r}; format rollout is for kind "
                       "reward_model only, and kind reward_model reads "
                       "only rollouts")
    if self.max_batch < 1:
      raise ValueError("max_batch: must be >= 1")
    if self.max_prompt_tokens < 16:
      raise ValueError("max_prompt_tokens: must be >= 16")
    if not 0.0 <= self.min_score_mass <= 1.0:
      raise ValueError("min_score_mass: must be in [0, 1]")


@strict.config
class Limits:
  max_prompt_chars: int = 8000
  max_completion_chars: int = 16000
  max_reference_chars: int = 2000
  max_criteria: int = 32
  max_requests_per_batch_call: int = 256
  max_rollout_id_chars: int = 256
  # A ScoreBatch call of max_requests_per_batch_call long rollouts is well
  # over gRPC's default 4 MiB.
  max_message_bytes: int = contract.MAX_MESSAGE_BYTES
  # Score streams and ScoreBatch calls served at once; one more is refused
  # with RESOURCE_EXHAUSTED (GetInfo, health and reflection do not count).
  max_concurrent_streams: int = 64
  # Judge prompts (one per criterion, one for implicit aggregation) taken on
  # and not yet judged. A rollout arriving while this many wait is refused
  # with RESOURCE_EXHAUSTED, so the queue never exceeds it by more than one
  # call's prompts.
  max_queue_depth: int = 4096
  # What a refused caller is told to wait before sending again.
  retry_after_ms: int = 1000
  # Tokens of one TokenLogprobs request, prompt and completion together.
  max_logprob_tokens: int = 8192

  def __post_init__(self):
    for f in dataclasses.fields(self):
      if getattr(self, f.name) < 1:
        raise ValueError(f"{f.name}: must be >= 1")


@strict.config
class AuthConfig:
  """token_file: bearer tokens callers must send (`authorization: Bearer
  TOKEN`), one per line, so a new token can be added before the old one is
  retired; blank lines and lines starting with '#' are skipped. "" lets
  every caller in. The health service is open either way."""
  token_file: str = ""


@strict.config
class TLSConfig:
  """PEM files. cert_file and key_file: the server's certificate chain and
  key (TLS); client_ca_file: clients must present a certificate this CA
  signed (mutual TLS). All "": plaintext."""
  cert_file: str = ""
  key_file: str = ""
  client_ca_file: str = ""

  def __post_init__(self):
    if self.cert_file and not self.key_file:
      raise ValueError("key_file: required with cert_file")
    if self.key_file and not self.cert_file:
      raise ValueError("cert_file: required with key_file")
    if self.client_ca_file and not self.cert_file:
      raise ValueError("client_ca_file: mutual TLS needs cert_file and "
                       "key_file too")


@strict.config
class MetricsConfig:
  """Prometheus metrics over HTTP at http://host:port/metrics; port 0: off.
  Unauthenticated, so by default only on loopback."""
  host: str = "127.0.0.1"
  port: int = 0

  def __post_init__(self):
    if not 0 <= self.port <= 65535:
      raise ValueError("port: must be in 0..65535")


@strict.config
class CacheConfig:
  """Judgements kept so that an identical judge prompt to the same judge is
  judged once (GRPO groups repeat completions, and a re-sent rollout is
  not judged twice); unscorable ones are not kept."""
  enabled: bool = True
  # An SQLite file judgements are written to as they arrive and looked up
  # in when not in memory, so a restarted judge keeps them; its directory
  # must exist. "" keeps them in memory only.
  path: str = ""
  # Judgements in memory; then the least recently used go first.
  max_entries: int = 1_000_000
  # Judgements in the file at path; then the least recently used go first.
  # About 90 bytes each on disk (10,000,000: about 1 GB).
  max_disk_entries: int = 10_000_000

  def __post_init__(self):
    if self.max_entries < 1:
      raise ValueError("max_entries: must be >= 1")
    if self.max_disk_entries < 1:
      raise ValueError("max_disk_entries: must be >= 1")
    if self.path and not self.enabled:
      raise ValueError("path: set, but enabled is false")


@strict.config
class OpenRLHFConfig:
  """OpenRLHF's remote reward model protocol, POST /get_reward over HTTP,
  HTTPS when the judge's tls section is set (judge_server.http_face,
  docs/rubrics.md); port 0: off."""
  host: str = "127.0.0.1"
  port: int = 0
  rubric_id: str = "general-reasoning"  # for labels that choose no rubric
  # OpenRLHF needs a number for every rollout: an unscorable one gets this,
  # and is listed in the answer's "unscorable" and extra_logs.
  unscorable_reward: float = 0.0
  max_body_bytes: int = 16 << 20  # a larger body is a 413
  # A request, header and body, must have arrived this many seconds after
  # its connection opened, or after the answer before it on a kept-alive
  # connection; else the connection is closed. A client trickling its bytes
  # holds a connection this long at most, however it paces them (a timeout
  # per read never fires on a byte a second). A TLS handshake, and a TLS
  # close, get as long again. A body of max_body_bytes needs
  # max_body_bytes / header_deadline_s bytes/s: 1.7 MB/s by default.
  header_deadline_s: float = 10.0
  # Connections open at once; one more is closed as soon as it is accepted.
  max_connections: int = 256
  # An idle kept-alive connection is closed after this; the deadline closes
  # it anyway once header_deadline_s passed, so it can be no longer.
  keepalive_timeout_s: float = 5.0
  # The answer to a connection's request number max_requests_per_connection
  # says `Connection: close`, and the connection is closed after it.
  max_requests_per_connection: int = 1000
  # Not used: header_deadline_s and keepalive_timeout_s bound what this
  # bounded. Still a key because every saved run config holds it, and
  # `--resume` loads them.
  read_timeout_s: float = 120.0

  def __post_init__(self):
    if not 0 <= self.port <= 65535:
      raise ValueError("port: must be in 0..65535")
    if not self.rubric_id:
      raise ValueError("rubric_id: must name a rubric pack")
    if not math.isfinite(self.unscorable_reward):
      raise ValueError("unscorable_reward: must be a finite number")
    for name in ("max_body_bytes", "max_connections",
                 "max_requests_per_connection"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}: must be >= 1")
    for name in ("header_deadline_s", "keepalive_timeout_s"):
      if not 0 < getattr(self, name) < math.inf:
        raise ValueError(f"{name}: must be a finite number > 0")
    if not self.read_timeout_s > 0:
      raise ValueError("read_timeout_s: must be > 0")
    if self.keepalive_timeout_s > self.header_deadline_s:
      raise ValueError(
          f"keepalive_timeout_s: {self.keepalive_timeout_s}, more than "
          f"header_deadline_s={self.header_deadline_s}, which closes an "
          "idle connection first")


@strict.config
class JudgeConfig:
  host: str = "127.0.0.1"
  port: int = 0  # 0: any free port; the server prints the one it took
  backend: BackendConfig = BackendConfig()
  max_wait_ms: float = 5.0  # how long the batcher waits to fill a batch
  default_aggregation: Literal["explicit", "implicit"] = "explicit"
  rubric_dir: str = ""  # extra rubric packs beside the shipped ones
  limits: Limits = Limits()
  auth: AuthConfig = AuthConfig()
  tls: TLSConfig = TLSConfig()
  metrics: MetricsConfig = MetricsConfig()
  # text: for people; json: one JSON object per line, for log collectors.
  log_format: Literal["text", "json"] = "text"
  cache: CacheConfig = CacheConfig()
  openrlhf: OpenRLHFConfig = OpenRLHFConfig()

  def __post_init__(self):
    if not 0 <= self.port <= 65535:
      raise ValueError("port: must be in 0..65535")
    if self.max_wait_ms < 0:
      raise ValueError("max_wait_ms: must be >= 0")


def load(path, overrides=()) -> JudgeConfig:
  return strict.load(JudgeConfig, path, overrides)
