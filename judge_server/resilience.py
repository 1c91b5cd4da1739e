"""Deadlines, retries and a circuit breaker around any judge backend.

`Resilient` wraps a Backend and gives every backend the same behaviour:
- each try of a `judge` call is bounded by attempt_timeout_s, and a prompt's
  whole judging (tries and waits) by deadline_s;
- prompts whose failure may pass (Judgement.transient: connection errors,
  timeouts, HTTP 408/425/429 and 5xx, a backend that raised) are tried
  again, up to max_retries times, after an exponential backoff with jitter
  or the server's Retry-After, whichever is longer; other failures are the
  prompt's own (too long, refused as a bad request, an answer with no
  score) and final at once;
- after breaker_failures consecutive failed tries (no prompt of the try
  answered, at least one failed transiently) the circuit opens: for
  breaker_open_s every call fails at once as "infrastructure: circuit open",
  sparing a down judge a flood and the trainer the timeouts; then one probe
  try is let through, and its outcome closes the circuit or opens it again.
  A try whose prompts all failed on their own says nothing about the judge's
  health and leaves the breaker as it was: six over-long prompts must not
  make every later rollout unscorable.
Failures come back as Judgements with an "infrastructure: " reason, never
raised and never a score.
"""

import asyncio
import random
import time

from judge_server.backends import base
from judge_server.backends.base import Backend, Judgement
from judge_server.config import ResilienceConfig


class CircuitBreaker:
  """Closed, open for `open_s` after `failures` consecutive failed tries,
  then half-open: one probe try at a time decides. failures 0: never opens."""

  def __init__(self, failures: int, open_s: float):
    self._failures = failures
    self._open_s = open_s
    self._consecutive = 0
    self._open_until = 0.0  # time.monotonic(); 0 while closed
    self._probing = False

  @property
  def state(self) -> str:
    if not self._open_until:
      return "closed"
    return "open" if time.monotonic() < self._open_until else "half-open"

  def admit(self) -> tuple[bool, bool]:
    """(may this try go ahead, is it the half-open probe)."""
    state = self.state
    if state == "closed":
      return True, False
    if state == "open" or self._probing:
      return False, False
    self._probing = True
    return True, True

  def refusal(self) -> Judgement:
    left = max(0.0, self._open_until - time.monotonic())
    return base.infrastructure(
        f"circuit open after {self._consecutive} consecutive failed tries "
        f"(next probe in {left:.1f}s)")

  def record(self, ok: bool, probe: bool) -> None:
    if probe:
      self._probing = False
    if ok:
      self._consecutive = 0
      self._open_until = 0.0
      return
    self._consecutive += 1
    if self._failures and (probe or self._consecutive >= self._failures):
      self._open_until = time.monotonic() + self._open_s

  def abandon(self, probe: bool) -> None:
    """A try that ended without an outcome: its caller went away, or each
    of its prompts failed for a reason of its own."""
    if probe:
      self._probing = False


def _health(got: list[Judgement]) -> bool | None:
  """What a try says about the backend: True when it answered a prompt
  (a score, or an answer with none in it), False when it answered none and
  a failure may pass, None when every prompt failed for a reason of its own
  (over max_prompt_tokens, an HTTP 400)."""
  if not all(j.infrastructure_failure for j in got):
    return True
  return False if any(j.transient for j in got) else None


class Resilient(Backend):
  """`backend` with deadlines, retries and a circuit breaker; otherwise the
  same backend (name, model, batch sizes, identity)."""

  def __init__(self, backend: Backend, config: ResilienceConfig):
    self._backend = backend
    self._cfg = config
    self.breaker = CircuitBreaker(config.breaker_failures,
                                  config.breaker_open_s)
    self.name = backend.name
    self.model = backend.model
    self.max_batch = backend.max_batch
    self.max_calls_in_flight = backend.max_calls_in_flight

  @property
  def identity(self) -> str:
    return self._backend.identity

  def _backoff_s(self, retry: int, retry_after_s: float) -> float:
    """Exponential in the retry number with "equal jitter" (half fixed,
    half random), so failed callers do not come back in step."""
    cfg = self._cfg
    step = min(cfg.backoff_max_s, cfg.backoff_initial_s * 2 ** retry)
    return max(retry_after_s, step / 2 + random.uniform(0, step / 2))

  async def _try(self, prompts: list[str], deadline: float,
                 probe: bool) -> list[Judgement]:
    loop = asyncio.get_running_loop()
    left = deadline - loop.time()
    timeout = min(self._cfg.attempt_timeout_s, left)
    recorded = False
    try:
      try:
        async with asyncio.timeout(timeout):
          got = await self._backend.judge(prompts)
        if len(got) != len(prompts):
          raise RuntimeError(f"{len(got)} judgements for {len(prompts)} "
                             "prompts")
      except TimeoutError:
        if timeout < self._cfg.attempt_timeout_s:
          reason = f"deadline of {self._cfg.deadline_s}s passed"
        else:
          reason = f"no judgement within {timeout}s"
        got = [base.infrastructure(reason, transient=True)] * len(prompts)
      except Exception as e:  # a broken backend is unscorable, not a crash
        # Backends answer a bad prompt with a Judgement (Backend.judge), so
        # a raise is the backend's trouble, not the prompt's.
        got = [base.infrastructure(f"{type(e).__name__}: {e}",
                                   transient=True)] * len(prompts)
      health = _health(got)
      if health is not None:
        self.breaker.record(health, probe)
        recorded = True
      return got
    finally:
      if not recorded:
        self.breaker.abandon(probe)

  async def judge(self, prompts: list[str]) -> list[Judgement]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + self._cfg.deadline_s
    results: list[Judgement | None] = [None] * len(prompts)
    todo = list(range(len(prompts)))
    tries = 0
    while todo:
      admitted, probe = self.breaker.admit()
      if not admitted:
        refusal = self.breaker.refusal()
        for i in todo:
          results[i] = refusal
        break
      got = await self._try([prompts[i] for i in todo], deadline, probe)
      tries += 1
      for i, j in zip(todo, got):
        results[i] = j
      todo = [i for i in todo if results[i].transient]
      if not todo:
        break
      wait = self._backoff_s(tries - 1,
                             max(results[i].retry_after_s for i in todo))
      if tries > self._cfg.max_retries:
        note = f"gave up after {tries} tries"
      elif loop.time() + wait >= deadline:
        note = (f"gave up after {tries} tries: waiting {wait:.1f}s more "
                f"would pass the deadline of {self._cfg.deadline_s}s")
      else:
        await asyncio.sleep(wait)
        continue
      for i in todo:
        results[i] = base.infrastructure(
            f"{results[i].reason.removeprefix(base.INFRASTRUCTURE)} "
            f"({note})")
      break
    return results

  async def close(self) -> None:
    await self._backend.close()
