"""A judge behind the Gemini API: `POST {base}/v1beta/models/{model}:
generateContent`, the key in the `x-goog-api-key` header.

As with the openai backend, each judge prompt is one request for a single
token with its top log-probabilities (generationConfig.responseLogprobs and
logprobs), and the score is the expectation of the digit over those of
"0".."9" (binary format: of yes and no, any case and spacing) among
candidates[0].logprobsResult.topCandidates[0]. A model that gives no
log-probabilities (or a config that asks for none) gets the answer it wrote
in candidates[0].content.parts parsed instead, and the Judgement says so
(method "parsed").

httpx straight to the REST shape rather than the google-genai SDK: the SDK
release that fits this project's pins brings eight more packages into the
judge image (google-auth, cryptography, websockets...) and retries on its own,
while deadlines, retries and Retry-After are the resilience layer's to apply
the same way for every backend. No jax here.
"""

import os

from judge_server import prompts
from judge_server.backends import base, http_judge
from judge_server.backends.base import Judgement
from judge_server.config import BackendConfig, GeminiConfig
from grar_config.strict import ConfigError


def _top_candidates(candidate: dict) -> list[tuple[str, float]] | None:
  """(token, log-probability) of the first generated token's alternatives,
  or None when the answer has none."""
  tops = (candidate.get("logprobsResult") or {}).get("topCandidates")
  if not tops or not tops[0].get("candidates"):
    return None
  return [(c["token"], c["logProbability"]) for c in tops[0]["candidates"]]


class GeminiBackend(http_judge.HttpBackend):
  """One request per judge prompt, at most `max_concurrency` in flight."""

  name = "gemini"

  def __init__(self, config: GeminiConfig, *, max_batch: int,
               min_score_mass: float, answer: str = prompts.SCALE):
    key = os.environ.get(config.api_key_env)
    if not key:
      raise ConfigError(f"backend.gemini.api_key_env: the environment "
                        f"variable {config.api_key_env} is not set")
    super().__init__(
        f"{config.base_url.rstrip('/')}/v1beta/models/{config.model}"
        ":generateContent", {"x-goog-api-key": key}, config.max_concurrency,
        config.timeout_s, answer)
    self._cfg = config
    self._min_score_mass = min_score_mass
    self.model = config.model
    self.max_batch = max_batch
    self.max_calls_in_flight = config.max_calls_in_flight

  @property
  def identity(self) -> str:
    return (f"gemini:{self._url}:top_logprobs={self._cfg.top_logprobs}:"
            f"min_score_mass={self._min_score_mass}:answer={self.answer}")

  def _body(self, prompt: str) -> dict:
    k = self._cfg.top_logprobs
    generation = {"temperature": 0.0, "candidateCount": 1,
                  "maxOutputTokens": 1 if k else http_judge.PARSE_MAX_TOKENS}
    if k:
      generation |= {"responseLogprobs": True, "logprobs": k}
    return {"contents": [{"role": "user", "parts": [{"text": prompt}]}],
            "generationConfig": generation}

  def _read(self, data: dict) -> Judgement:
    try:
      candidate = data["candidates"][0]
      parts = (candidate.get("content") or {}).get("parts") or []
      text = "".join(p.get("text", "") for p in parts)
      tops = _top_candidates(candidate) if self._cfg.top_logprobs else None
    except http_judge.SHAPE_ERRORS:
      # No candidates at all: the prompt was blocked, or the shape is new
      # (then HttpBackend reports the answer).
      feedback = data.get("promptFeedback") if isinstance(data, dict) else None
      if not feedback:
        raise
      return base.unparseable(f"{self._url} gave no answer: {feedback}")
    return http_judge.score(text, tops, self._min_score_mass, self.answer)


def build(config: BackendConfig) -> GeminiBackend:
  return GeminiBackend(config.gemini, max_batch=config.max_batch,
                       min_score_mass=config.min_score_mass,
                       answer=config.criteria.format)
