"""A judge behind an OpenAI-compatible HTTP endpoint: vLLM, llama.cpp's
server, hosted APIs.

Each judge prompt is one request for a single token with its top
log-probabilities. The score is the expectation of the digit over the
probabilities of "0".."9" among them, as the jax backend reads it from the
whole distribution: a digit missing from the top k has less probability than
each of the k, so little is lost when the judge answers on the scale, and the
mass says how much it did. An endpoint that returns no log-probabilities (or
a config that asks for none) gets the digit it wrote parsed instead, and the
Judgement says so.

No jax here: a judge server with this backend runs on machines without it.
"""

import asyncio
import math
import os

import httpx
import numpy as np

from judge_server import aggregation, parsing
from judge_server.backends.base import Backend, Judgement
from judge_server.config import BackendConfig, OpenAIConfig
from judge_server.prompts import MAX_SCORE, SCORE_TOKENS
from judge_server.strict import ConfigError

# Room for a written answer such as "7/9" or "Score: 7" when the digit is
# parsed rather than read from probabilities.
PARSE_MAX_TOKENS = 8
_ERROR_BODY_CHARS = 300


class _Unusable(Exception):
  """The endpoint answered, but not with something a score can come from."""


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


def _digit_probs(tops: list[tuple[str, float]]) -> np.ndarray:
  """Probability of each digit among the alternatives. A digit can come as
  more than one token ("7" and " 7"); both mean the judge writes 7."""
  probs = np.zeros(len(SCORE_TOKENS))
  for token, logprob in tops:
    digit = token.strip()
    if digit in SCORE_TOKENS:
      probs[int(digit)] += math.exp(logprob)
  return probs


class OpenAIBackend(Backend):
  """One HTTP request per judge prompt, at most `max_concurrency` in flight;
  the endpoint batches concurrent requests itself (vLLM does)."""

  name = "openai"

  def __init__(self, config: OpenAIConfig, *, max_batch: int,
               min_score_mass: float):
    headers = {}
    if config.api_key_env:
      key = os.environ.get(config.api_key_env)
      if not key:
        raise ConfigError(f"backend.openai.api_key_env: the environment "
                          f"variable {config.api_key_env} is not set")
      headers["Authorization"] = f"Bearer {key}"
    self._cfg = config
    self._min_score_mass = min_score_mass
    self.model = config.model
    self.max_batch = max_batch
    path = "/completions" if config.mode == "completions" else (
        "/chat/completions")
    self._url = config.base_url.rstrip("/") + path
    # The deadline is asyncio's, over the whole request; httpx's own timeouts
    # are per phase (connect, each read) and bound no request as a whole.
    # One kept-alive connection per request slot.
    self._client = httpx.AsyncClient(
        headers=headers, timeout=None, limits=httpx.Limits(
            max_connections=config.max_concurrency,
            max_keepalive_connections=config.max_concurrency))
    self._slots = asyncio.Semaphore(config.max_concurrency)

  def _body(self, prompt: str) -> dict:
    body = {"model": self._cfg.model, "temperature": 0.0}
    if self._cfg.mode == "completions":
      body["prompt"] = prompt
    else:
      body["messages"] = [{"role": "user", "content": prompt}]
    k = self._cfg.top_logprobs
    if not k:
      return body | {"max_tokens": PARSE_MAX_TOKENS}
    body["max_tokens"] = 1
    if self._cfg.mode == "completions":
      return body | {"logprobs": k}
    return body | {"logprobs": True, "top_logprobs": k}

  async def _post(self, prompt: str) -> dict:
    async with self._slots, asyncio.timeout(self._cfg.timeout_s):
      response = await self._client.post(self._url, json=self._body(prompt))
    if response.is_error:
      raise _Unusable(f"HTTP {response.status_code} from {self._url}: "
                      f"{response.text[:_ERROR_BODY_CHARS]}")
    try:
      return response.json()
    except ValueError:
      raise _Unusable(f"{self._url} answered with no JSON: "
                      f"{response.text[:_ERROR_BODY_CHARS]!r}") from None

  def _read(self, data: dict) -> Judgement:
    try:
      choice = data["choices"][0]
      if self._cfg.mode == "completions":
        text = choice["text"] or ""
      else:
        text = choice["message"]["content"] or ""
      tops = _top_logprobs(self._cfg.mode, choice)
      probs = None if tops is None else _digit_probs(tops)
    except (KeyError, IndexError, TypeError, AttributeError) as e:
      raise _Unusable(f"{self._url} answered in an unknown shape "
                      f"({type(e).__name__}: {e}): "
                      f"{str(data)[:_ERROR_BODY_CHARS]}") from None
    if probs is None:
      try:
        score = parsing.parse_score(text) / MAX_SCORE
      except parsing.UnparseableScore as e:
        return Judgement(None, 0.0, f"unparseable: {e}", method="parsed")
      return Judgement(score, 1.0, method="parsed")
    score, mass = aggregation.expected_score(probs, self._min_score_mass)
    if score is not None:
      return Judgement(score, mass)
    return Judgement(None, mass, (
        f"judge put {mass:.2g} probability on the score digits among its top "
        f"{len(tops)} tokens, below min_score_mass={self._min_score_mass} "
        f"(it wrote {text!r})"))

  async def _judge_one(self, prompt: str) -> Judgement:
    try:
      return self._read(await self._post(prompt))
    except TimeoutError:
      reason = f"no answer from {self._url} within {self._cfg.timeout_s}s"
    except httpx.HTTPError as e:
      reason = f"{type(e).__name__} from {self._url}: {e}"
    except _Unusable as e:
      reason = str(e)
    return Judgement(None, 0.0, f"infrastructure: {reason}")

  async def judge(self, prompts: list[str]) -> list[Judgement]:
    return list(await asyncio.gather(*map(self._judge_one, prompts)))

  async def close(self) -> None:
    await self._client.aclose()


def build(config: BackendConfig) -> OpenAIBackend:
  return OpenAIBackend(config.openai, max_batch=config.max_batch,
                       min_score_mass=config.min_score_mass)
