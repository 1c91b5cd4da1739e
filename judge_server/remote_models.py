"""One client layer for models behind a remote API, on the official SDKs:
an OpenAI-compatible endpoint (vLLM, llama.cpp's server, hosted APIs)
through `openai`, and Gemini through `google-genai`, either the Gemini API
with a key or Vertex AI with the machine's Google credentials. The judge's
remote backends (judge_server/backends) and `grar distill`'s teachers
(orchestrator/stages/distill.py) both ask their models through it.

Each model: at most max_concurrency requests in flight, request starts no
faster than a rate limit (aiolimiter: neither SDK has one), each try bounded
by the endpoint's timeout_s and retried by the SDK itself up to `retries`
times. The judge asks for none: its resilience layer retries every backend
alike (jax too) and its circuit breaker must see each try. A request that
gets no usable answer comes back as an infrastructure Judgement
(judge_server.backends.base) whose `transient` says whether it may pass, and
never raises.

No jax here: a judge server with a remote backend runs on machines without
it.
"""

import asyncio
import contextvars
import dataclasses
import email.utils
import functools
import json
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiolimiter
import httpx2
import openai
import pydantic
from google import genai
from google.auth import exceptions as auth_errors
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from grar_config.strict import ConfigError
from judge_server.backends import base
from judge_server.backends.base import Judgement
from judge_server.config import GeminiConfig, OpenAIConfig

ERROR_BODY_CHARS = 300
# Besides any 5xx, what says "not now" rather than "not this request": the
# same request may succeed later.
_TRANSIENT_4XX = frozenset({408, 425, 429})
# What reading a field an answer lacks raises.
SHAPE_ERRORS = (KeyError, IndexError, TypeError, AttributeError)
# Transport failures that may pass: refused or dropped connections, timeouts.
_TRANSIENT_TRANSPORT = (httpx2.TimeoutException, httpx2.NetworkError,
                        httpx2.RemoteProtocolError)

# What the SDKs raise when an answer is not JSON, or not in the shape of
# their models.
_ANSWER_ERRORS = (json.JSONDecodeError, pydantic.ValidationError)
# What they raise when a request got no answer or an error answer.
_REQUEST_ERRORS = (openai.OpenAIError, genai_errors.APIError, httpx2.HTTPError,
                   auth_errors.GoogleAuthError)

T = TypeVar("T")
R = TypeVar("R")

# The HTTP requests of the call running in this task, retries included:
# counted by the transport's request hook, which the SDKs call in the task
# that awaits them.
_TRIES: contextvars.ContextVar[list[int]] = contextvars.ContextVar("tries")


def api_key(where: str, env: str) -> str:
  """The key in environment variable `env`; ConfigError naming `where`'s
  api_key_env when it is not set."""
  key = os.environ.get(env)
  if not key:
    raise ConfigError(f"{where}.api_key_env: the environment variable {env} "
                      "is not set")
  return key


def retry_after_s(value: str | None) -> float:
  """Seconds a Retry-After header asks for (a number or an HTTP date);
  0 when absent or unreadable."""
  if not value:
    return 0.0
  try:
    return max(0.0, float(value))
  except ValueError:
    pass
  try:
    when = email.utils.parsedate_to_datetime(value)
  except (TypeError, ValueError):
    return 0.0
  return max(0.0, when.timestamp() - time.time())


def _status(error: Exception) -> tuple[int, str, str | None] | None:
  """(HTTP status, body, Retry-After) of an error answer either SDK raised;
  None for an error without one."""
  if isinstance(error, openai.APIStatusError):
    response = error.response
    return (response.status_code, response.text,
            response.headers.get("retry-after"))
  if isinstance(error, genai_errors.APIError):
    headers = getattr(error.response, "headers", None) or {}
    return error.code, json.dumps(error.details), headers.get("retry-after")
  return None


def failure(url: str, error: Exception) -> Judgement:
  """The infrastructure Judgement of a request to `url` that raised: an
  error answer is transient for 429, 5xx and the like, honouring
  Retry-After, and final for any other 4xx (the request's fault); no answer
  at all is transient when the connection was refused or dropped or timed
  out. openai wraps the transport's error: the reason names that one."""
  status = _status(error)
  if status is not None:
    code, body, retry_after = status
    return base.infrastructure(
        f"HTTP {code} from {url}: {body[:ERROR_BODY_CHARS]}",
        transient=code in _TRANSIENT_4XX or code >= 500,
        retry_after_s=retry_after_s(retry_after))
  if isinstance(error, openai.APIConnectionError) and error.__cause__:
    error = error.__cause__
  return base.infrastructure(
      f"{type(error).__name__} from {url}: {error}",
      transient=isinstance(error, (*_TRANSIENT_TRANSPORT, TimeoutError,
                                   openai.APITimeoutError,
                                   auth_errors.TransportError)))


def _unknown_shape(url: str, error: Exception) -> Judgement:
  # pydantic's errors run over several lines: a reason is one.
  said = " ".join(str(error).split())
  return base.infrastructure(
      f"{url} answered in an unknown shape ({type(error).__name__}: "
      f"{said[:ERROR_BODY_CHARS]})")


@functools.cache
def _tls() -> ssl.SSLContext:
  """The trust store every client here verifies servers with: loading it
  takes a tenth of a second, too long to do for each model and SDK."""
  return httpx2.create_ssl_context()


async def _count_try(request: httpx2.Request) -> None:
  tries = _TRIES.get(None)
  if tries is not None:
    tries[0] += 1


class RemoteModel:
  """What the SDKs' models share: the request slots, the rate limit, the
  transport, and reading each call's outcome. deadline_s: one call's tries
  and the SDK's waits between them together. tries and calls: the HTTP
  requests sent and the calls made so far, so the SDK's retries are the
  difference."""

  def __init__(self, max_concurrency: int, *, rate_per_s: float,
               deadline_s: float):
    self._deadline_s = deadline_s
    self._slots = asyncio.Semaphore(max_concurrency)
    # A bucket of one: starts spaced evenly, no burst.
    self._rate = (aiolimiter.AsyncLimiter(1, 1.0 / rate_per_s)
                  if rate_per_s else None)
    # The SDKs' transport, with one kept-alive connection per request slot
    # and each request counted.
    self.transport = httpx2.AsyncClient(
        verify=_tls(), event_hooks={"request": [_count_try]},
        limits=httpx2.Limits(max_connections=max_concurrency,
                             max_keepalive_connections=max_concurrency))
    self.tries = self.calls = 0

  async def call(self, url: str, send: Callable[[], Awaitable[T]],
                 read: Callable[[T], R]) -> R | Judgement:
    """What `read` makes of the answer `send()` gets from `url` (the SDK's
    parsed answer), or the infrastructure Judgement of why there is none;
    `read` raises one of SHAPE_ERRORS on an answer it does not know."""
    tries = [0]
    reset = _TRIES.set(tries)
    try:
      if self._rate is not None:
        await self._rate.acquire()
      async with self._slots, asyncio.timeout(self._deadline_s):
        answer = await send()
    except TimeoutError:
      return self._gave_up(tries[0], base.infrastructure(
          f"no answer from {url} within {self._deadline_s}s",
          transient=True))
    except _ANSWER_ERRORS as e:
      return _unknown_shape(url, e)
    except _REQUEST_ERRORS as e:
      return self._gave_up(tries[0], failure(url, e))
    finally:
      _TRIES.reset(reset)
      self.calls += 1
      self.tries += tries[0]
    try:
      return read(answer)
    except SHAPE_ERRORS as e:
      return _unknown_shape(url, e)

  @staticmethod
  def _gave_up(tries: int, judgement: Judgement) -> Judgement:
    """A failure after the SDK's retries says how many tries it took."""
    if tries < 2:
      return judgement
    return dataclasses.replace(
        judgement, reason=f"{judgement.reason} (gave up after {tries} tries)")

  async def close(self) -> None:
    await self.transport.aclose()


class OpenAIModel(RemoteModel):
  """An OpenAI-compatible endpoint (`client`, the SDK's): a prompt is raw
  text or token ids, or in chat mode the user's message. `where` names the
  config section in errors."""

  def __init__(self, cfg: OpenAIConfig, where: str, *, retries: int = 0,
               rate_per_s: float = 0.0, deadline_s: float | None = None):
    super().__init__(cfg.max_concurrency, rate_per_s=rate_per_s,
                     deadline_s=deadline_s or cfg.timeout_s)
    self.model = cfg.model
    self.chat = cfg.mode == "chat"
    self.url = cfg.base_url.rstrip("/") + (
        "/chat/completions" if self.chat else "/completions")
    # The SDK sends a key whatever the endpoint; one without keys (vLLM as
    # started by default) gets vLLM's placeholder and ignores it.
    self.client = openai.AsyncOpenAI(
        base_url=cfg.base_url,
        api_key=(api_key(where, cfg.api_key_env) if cfg.api_key_env
                 else "EMPTY"),
        max_retries=retries, timeout=cfg.timeout_s,
        http_client=self.transport)

  def text(self, choice) -> str:
    """What a choice of this endpoint's answers wrote."""
    return (choice.message.content if self.chat else choice.text) or ""

  async def complete(self, prompt: str | list[int], read: Callable[..., R],
                     *, top_logprobs: int = 0, **params) -> R | Judgement:
    """`read` of the first choice of the endpoint's completion of `prompt`,
    with the first token's top_logprobs alternatives when not 0; params:
    the API's (max_tokens, temperature, seed, stop, and extra_body for
    what only vLLM takes)."""
    if self.chat:
      logprobs = ({"logprobs": True, "top_logprobs": top_logprobs}
                  if top_logprobs else {})
      send = functools.partial(
          self.client.chat.completions.create, model=self.model,
          messages=[{"role": "user", "content": prompt}], **logprobs,
          **params)
    else:
      logprobs = {"logprobs": top_logprobs} if top_logprobs else {}
      send = functools.partial(self.client.completions.create,
                               model=self.model, prompt=prompt, **logprobs,
                               **params)
    return await self.call(self.url, send,
                           lambda answer: read(answer.choices[0]))

  async def post(self, url: str, body: dict, read: Callable[[object], R]
                 ) -> R | Judgement:
    """`read` of the JSON answer to POSTing `body` to `url`: a route of the
    endpoint's own that the SDK does not model (vLLM's /tokenize)."""
    send = functools.partial(self.client.post, url, body=body, cast_to=object)
    return await self.call(url, send, read)

  async def close(self) -> None:
    await self.client.close()
    await super().close()


def _gemini_base_url(cfg: GeminiConfig) -> str:
  """cfg.base_url, or where the API that cfg chooses is served."""
  if cfg.base_url:
    return cfg.base_url.rstrip("/")
  location = cfg.vertex.location
  if not cfg.vertex.project:
    return "https://generativelanguage.googleapis.com"
  if location == "global":
    return "https://aiplatform.googleapis.com"
  return f"https://{location}-aiplatform.googleapis.com"


class GeminiModel(RemoteModel):
  """Gemini (`client`, the SDK's): through Vertex AI as the machine's
  Google credentials allow (Application Default Credentials) when
  cfg.vertex names a project, else the Gemini API with the key in
  cfg.api_key_env. backoff_s: the SDK's first and longest wait between
  tries."""

  def __init__(self, cfg: GeminiConfig, where: str, *, retries: int = 0,
               backoff_s: tuple[float, float] = (1.0, 60.0),
               rate_per_s: float = 0.0, deadline_s: float | None = None):
    super().__init__(cfg.max_concurrency, rate_per_s=rate_per_s,
                     deadline_s=deadline_s or cfg.timeout_s)
    self.model = cfg.model
    base_url = _gemini_base_url(cfg)
    vertex = cfg.vertex
    # The versions that take response_logprobs, named rather than left to
    # the SDK, so that self.url is where it asks.
    version = "v1beta1" if vertex.project else "v1beta"
    options = genai_types.HttpOptions(
        base_url=base_url, api_version=version,
        timeout=round(cfg.timeout_s * 1000),
        retry_options=genai_types.HttpRetryOptions(
            attempts=retries + 1, initial_delay=backoff_s[0],
            max_delay=backoff_s[1]),
        httpx_async_client=self.transport,
        # The SDK's other clients, never used here, verify as this one does.
        client_args={"verify": _tls()}, async_client_args={"ssl": _tls()})
    if vertex.project:
      self.client = genai.Client(vertexai=True, project=vertex.project,
                                 location=vertex.location,
                                 http_options=options)
      path = (f"projects/{vertex.project}/locations/{vertex.location}/"
              f"publishers/google/models/{cfg.model}")
    else:
      self.client = genai.Client(
          api_key=api_key(where, cfg.api_key_env), http_options=options)
      path = f"models/{cfg.model}"
    self.url = f"{base_url}/{version}/{path}:generateContent"

  async def generate(self, prompt: str, read: Callable[[object], R],
                     **config) -> R | Judgement:
    """`read` of the model's answer (a GenerateContentResponse) to
    `prompt` as the user's message, one candidate; config: the
    GenerateContentConfig's fields."""
    send = functools.partial(
        self.client.aio.models.generate_content, model=self.model,
        contents=[genai_types.Content(role="user", parts=[
            genai_types.Part(text=prompt)])],
        config=genai_types.GenerateContentConfig(candidate_count=1, **config))
    return await self.call(self.url, send, read)

  async def close(self) -> None:
    await self.client.aio.aclose()
    await super().close()


def candidate_text(candidate) -> str:
  """What a Gemini answer's candidate wrote."""
  parts = (candidate.content.parts if candidate.content else None) or []
  return "".join(part.text or "" for part in parts)
