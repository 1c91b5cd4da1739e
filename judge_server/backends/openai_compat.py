"""A judge behind an OpenAI-compatible HTTP endpoint: vLLM, llama.cpp's
server, hosted APIs.

Each judge prompt is one request for a single token with its top
log-probabilities. The score is the expectation of the digit over the
probabilities of "0".."9" among them (binary format: P(yes) / (P(yes) +
P(no)) over "yes", " Yes" and the like), as the jax backend reads it from the
whole distribution: an answer token missing from the top k has less
probability than each of the k, so little is lost when the judge answers as
asked, and the mass says how much it did. An endpoint that returns no
log-probabilities (or a config that asks for none) gets the digit, or the yes
or no, it wrote parsed instead, and the Judgement says so.

No jax here: a judge server with this backend runs on machines without it.
"""

import os

from judge_server import prompts
from judge_server.backends import http_judge
from judge_server.backends.base import Judgement
from judge_server.config import BackendConfig, OpenAIConfig
from grar_config.strict import ConfigError


def _top_logprobs(mode: str, choice: dict) -> list[tuple[str, float]] | None:
  """(token text, log-probability) of the first generated token's top
  alternatives, or None when the endpoint gave none."""
  logprobs = choice.get("logprobs")
  if not logprobs:
    return None
  if mode == "completions":
    tops = logprobs.get("top_logprobs")
    return list(tops[0].items()) if tops and tops[0] else None
  content = logprobs.get("content")
  if not content or not content[0].get("top_logprobs"):
    return None
  return [(t["token"], t["logprob"]) for t in content[0]["top_logprobs"]]


class OpenAIBackend(http_judge.HttpBackend):
  """One HTTP request per judge prompt, at most `max_concurrency` in flight;
  the endpoint batches concurrent requests itself (vLLM does)."""

  name = "openai"

  def __init__(self, config: OpenAIConfig, *, max_batch: int,
               min_score_mass: float, answer: str = prompts.SCALE):
    headers = {}
    if config.api_key_env:
      key = os.environ.get(config.api_key_env)
      if not key:
        raise ConfigError(f"backend.openai.api_key_env: the environment "
                          f"variable {config.api_key_env} is not set")
      headers["Authorization"] = f"Bearer {key}"
    path = "/completions" if config.mode == "completions" else (
        "/chat/completions")
    super().__init__(config.base_url.rstrip("/") + path, headers,
                     config.max_concurrency, config.timeout_s, answer)
    self._cfg = config
    self._min_score_mass = min_score_mass
    self.model = config.model
    self.max_batch = max_batch
    self.max_calls_in_flight = config.max_calls_in_flight

  def _body(self, prompt: str) -> dict:
    body = {"model": self._cfg.model, "temperature": 0.0}
    if self._cfg.mode == "completions":
      body["prompt"] = prompt
    else:
      body["messages"] = [{"role": "user", "content": prompt}]
    k = self._cfg.top_logprobs
    if not k:
      return body | {"max_tokens": http_judge.PARSE_MAX_TOKENS}
    body["max_tokens"] = 1
    if self._cfg.mode == "completions":
      return body | {"logprobs": k}
    return body | {"logprobs": True, "top_logprobs": k}

  @property
  def identity(self) -> str:
    return (f"openai:{self._url}:{self.model}:top_logprobs="
            f"{self._cfg.top_logprobs}:min_score_mass={self._min_score_mass}:"
            f"answer={self.answer}")

  def _read(self, data: dict) -> Judgement:
    choice = data["choices"][0]
    if self._cfg.mode == "completions":
      text = choice["text"] or ""
    else:
      text = choice["message"]["content"] or ""
    tops = _top_logprobs(self._cfg.mode, choice)
    return http_judge.score(text, tops, self._min_score_mass, self.answer)


def build(config: BackendConfig) -> OpenAIBackend:
  return OpenAIBackend(config.openai, max_batch=config.max_batch,
                       min_score_mass=config.min_score_mass,
                       answer=config.criteria.format)
