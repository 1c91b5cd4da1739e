"""What the HTTP judge backends (openai, gemini) share: reading a score from
the top alternatives of the first answer token (a digit, or yes or no) or
from the written text, and telling a failure that may pass (worth retrying)
from one that will not.

No jax here: a judge server with an HTTP backend runs on machines without it.
"""

import abc
import asyncio
import email.utils
import math
import time
from typing import Callable, TypeVar

import httpx
import numpy as np

from judge_server import parsing, prompts
from judge_server.backends import base
from judge_server.backends.base import Backend, Judgement

# Room for a written answer such as "7/9" or "Score: 7" when the digit is
# parsed rather than read from probabilities.
PARSE_MAX_TOKENS = 8
ERROR_BODY_CHARS = 300
# Besides any 5xx, what says "not now" rather than "not this request": the
# same request may succeed later.
_TRANSIENT_4XX = frozenset({408, 425, 429})
# What reading a field the answer lacks raises.
SHAPE_ERRORS = (KeyError, IndexError, TypeError, AttributeError)

T = TypeVar("T")


def choice_probs(tops: list[tuple[str, float]],
                 choices: tuple[str, ...]) -> np.ndarray:
  """[K+1] probability of each answer among (token, log-probability)
  alternatives. An answer can come as more than one token ("7" and " 7",
  "yes", " Yes"): all of them mean the judge writes it."""
  probs = np.zeros(len(choices))
  for token, logprob in tops:
    word = token.strip().lower()
    if word in choices:
      probs[choices.index(word)] += math.exp(logprob)
  return probs


def _parse(text: str, answer: str) -> float:
  if answer == prompts.BINARY:
    return float(parsing.parse_yes_no(text))
  return parsing.parse_score(text) / prompts.MAX_SCORE


def score(text: str, tops: list[tuple[str, float]] | None,
          min_score_mass: float, answer: str) -> Judgement:
  """The expected score over the answers of format `answer` among `tops`,
  or the answer written in `text` where the endpoint gave no alternatives
  (method "parsed")."""
  if tops is None:
    try:
      value = _parse(text, answer)
    except parsing.UnparseableScore as e:
      return base.unparseable(str(e), method="parsed")
    return Judgement(value, 1.0, method="parsed")
  return base.from_choice_probs(
      choice_probs(tops, prompts.CHOICES[answer]), min_score_mass, answer,
      f" among its top {len(tops)} tokens", f" (it wrote {text!r})")


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


def status_failure(url: str, response: httpx.Response) -> Judgement:
  """An HTTP error answer: transient for 429, 5xx and the like, honouring
  Retry-After; any other 4xx is the request's fault and final."""
  return base.infrastructure(
      f"HTTP {response.status_code} from {url}: "
      f"{response.text[:ERROR_BODY_CHARS]}",
      transient=(response.status_code in _TRANSIENT_4XX
                 or response.status_code >= 500),
      retry_after_s=retry_after_s(response.headers.get("retry-after")))


def transport_failure(url: str, error: httpx.HTTPError) -> Judgement:
  """No answer: refused or dropped connections and timeouts may pass."""
  return base.infrastructure(
      f"{type(error).__name__} from {url}: {error}",
      transient=isinstance(error, (httpx.TimeoutException, httpx.NetworkError,
                                   httpx.RemoteProtocolError)))


class HttpBackend(Backend):
  """One POST per judge prompt to `url`, at most `max_concurrency` in
  flight, each bounded by `timeout_s`, answers read in format `answer`;
  subclasses shape the request body and read the answer, and make any
  other request of theirs through `_post`."""

  def __init__(self, url: str, headers: dict[str, str], max_concurrency: int,
               timeout_s: float, answer: str):
    if answer not in prompts.CHOICES:
      raise ValueError(f"answer: {answer!r} is not one of "
                       f"{', '.join(prompts.FORMATS)}")
    self.answer = answer
    self._url = url
    self._timeout_s = timeout_s
    # The deadline is asyncio's, over the whole request; httpx's own timeouts
    # are per phase (connect, each read) and bound no request as a whole.
    # One kept-alive connection per request slot.
    self._client = httpx.AsyncClient(
        headers=headers, timeout=None, limits=httpx.Limits(
            max_connections=max_concurrency,
            max_keepalive_connections=max_concurrency))
    self._slots = asyncio.Semaphore(max_concurrency)

  @abc.abstractmethod
  def _body(self, prompt: str) -> dict:
    """The JSON request for one judge prompt."""

  @abc.abstractmethod
  def _read(self, data: dict) -> Judgement:
    """The judgement in a JSON answer; KeyError, IndexError, TypeError or
    AttributeError when the answer is not in the shape it expects."""

  async def _post(self, url: str, body: dict,
                  read: Callable[[dict], T]) -> T | Judgement:
    """What `read` makes of the JSON answer to POSTing `body` to `url`, or
    the infrastructure Judgement of why there is none: judging and every
    other request a subclass makes share one slot pool, deadline and
    reading of failures, so retries and the circuit breaker see them alike.
    `read` raises one of SHAPE_ERRORS on an answer it does not know."""
    try:
      async with self._slots, asyncio.timeout(self._timeout_s):
        response = await self._client.post(url, json=body)
    except TimeoutError:
      return base.infrastructure(
          f"no answer from {url} within {self._timeout_s}s", transient=True)
    except httpx.HTTPError as e:
      return transport_failure(url, e)
    if response.is_error:
      return status_failure(url, response)
    try:
      data = response.json()
    except ValueError:
      return base.infrastructure(
          f"{url} answered with no JSON: "
          f"{response.text[:ERROR_BODY_CHARS]!r}")
    try:
      return read(data)
    except SHAPE_ERRORS as e:
      return base.infrastructure(
          f"{url} answered in an unknown shape ({type(e).__name__}: "
          f"{e}): {str(data)[:ERROR_BODY_CHARS]}")

  async def _judge_one(self, prompt: str) -> Judgement:
    return await self._post(self._url, self._body(prompt), self._read)

  async def judge(self, prompts: list[str]) -> list[Judgement]:
    return list(await asyncio.gather(*map(self._judge_one, prompts)))

  async def close(self) -> None:
    await self._client.aclose()
