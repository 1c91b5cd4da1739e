"""Admission: how many calls and judge prompts the server takes on at once.

Past either limit a call is refused with RESOURCE_EXHAUSTED and told when
to come back (trailing metadata `retry-after-ms`, and in the message), so
an overloaded judge sheds load instead of queueing without bound.
"""

import contextlib
from typing import Iterator

import grpc

from judge_server import scoring
from judge_server.config import Limits
from protos.contract import RETRY_AFTER_KEY


class Overloaded(Exception):
  """The message says which limit is reached and when to try again."""

  def __init__(self, message: str, retry_after_ms: int):
    super().__init__(f"{message}; retry in {retry_after_ms} ms")
    self.retry_after_ms = retry_after_ms


def prompt_count(job: scoring.Job) -> int:
  """Judge prompts a job puts in the queue."""
  return 1 if job.aggregation == "implicit" else len(job.rubric.criteria)


class Ticket:
  """Prompts taken on; `release` (idempotent) gives them back."""

  def __init__(self, admission: "Admission", prompts: int):
    self._admission = admission
    self._prompts = prompts

  def release(self) -> None:
    self._admission._depth -= self._prompts
    self._prompts = 0


class Admission:
  """Counts calls and queued prompts; used from the server's event loop."""

  def __init__(self, limits: Limits):
    self._limits = limits
    self._calls = 0
    self._depth = 0

  @property
  def depth(self) -> int:
    """Judge prompts taken on and not yet judged."""
    return self._depth

  def _refuse(self, message: str) -> Overloaded:
    return Overloaded(message, self._limits.retry_after_ms)

  @contextlib.contextmanager
  def call(self) -> Iterator[None]:
    """One Score stream or ScoreBatch call; Overloaded when too many are."""
    if self._calls >= self._limits.max_concurrent_streams:
      raise self._refuse(f"{self._calls} calls in progress, "
                         "max_concurrent_streams="
                         f"{self._limits.max_concurrent_streams}")
    self._calls += 1
    try:
      yield
    finally:
      self._calls -= 1

  def admit(self, prompts: int) -> Ticket:
    """Takes on `prompts`; Overloaded when the queue is already full."""
    if self._depth >= self._limits.max_queue_depth:
      raise self._refuse(f"{self._depth} judge prompts queued, "
                         f"max_queue_depth={self._limits.max_queue_depth}")
    self._depth += prompts
    return Ticket(self, prompts)


async def refuse(context: grpc.aio.ServicerContext, error: Overloaded) -> None:
  await context.abort(
      grpc.StatusCode.RESOURCE_EXHAUSTED, str(error),
      trailing_metadata=((RETRY_AFTER_KEY, str(error.retry_after_ms)),))
