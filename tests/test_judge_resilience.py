"""Deadlines, retries, the circuit breaker and concurrent backend calls,
through the real gemini backend against the local Gemini stand-in
(tests/gemini_standin.py; the Gemini API cannot be reached from here), which
injects 429s, 5xxs and slow answers."""

import asyncio
import email.utils
import time

import pytest

from judge_server import config as config_lib
from judge_server import remote_models, resilience, server
from judge_server.backends import gemini
from judge_server.batching import MicroBatcher
from grar_config.strict import ConfigError
from orchestrator.judge.client import JudgeClient, request_from_row
from protos import judge_pb2
import gemini_standin
from gemini_standin import (  # noqa: F401 (fixtures)
    Fault, backend_config, fresh, standin)

FAST = dict(backoff_initial_s=0.05, backoff_max_s=0.1)


def resilient(standin, **fields) -> resilience.Resilient:
  cfg = config_lib.ResilienceConfig(**FAST | fields)
  return resilience.Resilient(gemini.build(backend_config(standin)), cfg)


def run(backend, *calls: list[str]):
  """Each call's judgements, the calls made concurrently, then closes."""
  async def go():
    try:
      return await asyncio.gather(*(backend.judge(c) for c in calls))
    finally:
      await backend.close()
  return asyncio.run(go())


def gaps(standin) -> list[float]:
  times = [r.arrived for r in standin.requests]
  return [b - a for a, b in zip(times, times[1:])]


def test_transient_failures_are_retried_after_backoff_and_retry_after(
    standin):
  standin.fail(Fault(status=500),
               Fault(status=429, headers=(("Retry-After", "0.4"),)))
  ((j,),) = run(resilient(standin), ["p"])
  assert j.score == pytest.approx(gemini_standin.EXPECTED), j.reason
  first, second = gaps(standin)
  assert 0.025 <= first < 0.4  # backoff 0.05 s, half of it jitter
  assert second >= 0.4  # Retry-After wins over the shorter backoff


def test_retry_after_reads_seconds_and_http_dates():
  soon = email.utils.formatdate(time.time() + 30, usegmt=True)
  assert remote_models.retry_after_s("7") == 7.0
  assert 28 < remote_models.retry_after_s(soon) <= 30
  for unusable in (None, "", "soon", "-3"):
    assert remote_models.retry_after_s(unusable) == 0.0


@pytest.mark.parametrize("status", [400, 403, 404])
def test_other_client_errors_are_final_at_once(standin, status):
  standin.fail(Fault(status=status))
  ((j,),) = run(resilient(standin), ["p"])
  assert j.reason.startswith(f"infrastructure: HTTP {status} from ")
  assert "gave up" not in j.reason and len(standin.requests) == 1


def test_retries_stop_after_max_retries(standin):
  standin.fail(*[Fault(status=503)] * 4)
  ((j,),) = run(resilient(standin, max_retries=2), ["p"])
  assert j.score is None and j.reason.endswith("(gave up after 3 tries)")
  assert j.reason.startswith("infrastructure: HTTP 503 from ")
  assert len(standin.requests) == 3


def test_a_try_past_attempt_timeout_is_retried(standin):
  standin.fail(Fault(delay_s=1.0))
  started = time.monotonic()
  ((j,),) = run(resilient(standin, attempt_timeout_s=0.2), ["p"])
  assert j.score is not None, j.reason
  assert len(standin.requests) == 2 and time.monotonic() - started < 0.9


def test_the_deadline_bounds_tries_and_waits(standin):
  standin.fail(Fault(status=503, headers=(("Retry-After", "5"),)),
               Fault(delay_s=1.0))
  started = time.monotonic()
  ((waiting,),) = run(resilient(standin, deadline_s=0.3), ["p"])
  ((slow,),) = run(resilient(standin, deadline_s=0.3), ["q"])
  assert time.monotonic() - started < 0.9
  assert "would pass the deadline of 0.3s" in waiting.reason, waiting.reason
  assert slow.reason.startswith(
      "infrastructure: deadline of 0.3s passed"), slow.reason
  assert len(standin.requests) == 2


def test_circuit_opens_fails_fast_then_one_probe_decides(standin):
  backend = resilient(standin, max_retries=0, breaker_failures=2,
                      breaker_open_s=0.5)

  async def go():
    standin.fail(Fault(status=500), Fault(status=502))
    for _ in range(2):
      (j,) = await backend.judge(["p"])
      assert "HTTP 50" in j.reason
    started = time.monotonic()
    (j,) = await backend.judge(["p"])
    assert time.monotonic() - started < 0.1 and len(standin.requests) == 2
    assert j.reason.startswith("infrastructure: circuit open after 2 "
                               "consecutive failed tries"), j.reason
    await asyncio.sleep(0.55)  # half-open: the probe fails, open again
    standin.fail(Fault(status=503))
    (j,) = await backend.judge(["p"])
    assert "HTTP 503" in j.reason and len(standin.requests) == 3
    (j,) = await backend.judge(["p"])
    assert "circuit open" in j.reason and len(standin.requests) == 3
    await asyncio.sleep(0.55)  # one probe at a time; it succeeds: closed
    standin.fail(Fault(delay_s=0.1))
    (probe,), (other,) = await asyncio.gather(backend.judge(["p"]),
                                              backend.judge(["q"]))
    assert probe.score is not None and "circuit open" in other.reason
    assert backend.breaker.state == "closed"
    (j,) = await backend.judge(["p"])
    assert j.score is not None and len(standin.requests) == 5
    await backend.close()
  asyncio.run(go())


def test_failures_of_the_prompt_itself_leave_the_breaker_alone(standin):
  """A 400 is the prompt's fault, as is one over max_prompt_tokens: not
  retried, and however many come in a row, the next prompt is judged. A
  transient failure still counts, and a 400 between two does not reset."""
  backend = resilient(standin, max_retries=0, breaker_failures=2)

  async def go():
    standin.fail(*[Fault(status=400)] * 3)
    for p in "abc":
      (j,) = await backend.judge([p])
      assert j.reason.startswith("infrastructure: HTTP 400"), j.reason
    (j,) = await backend.judge(["d"])
    assert j.score is not None, j.reason
    standin.fail(Fault(status=503), Fault(status=400), Fault(status=503))
    for _ in range(3):
      await backend.judge(["e"])
    assert backend.breaker.state == "open"
    await backend.close()
  asyncio.run(go())
  assert len(standin.requests) == 7


def test_the_server_answers_unscorable_when_the_circuit_is_open(standin):
  cfg = backend_config(standin, config_lib.ResilienceConfig(
      max_retries=0, breaker_failures=1, breaker_open_s=60))
  handle = server.run_in_thread(config_lib.JudgeConfig(backend=cfg),
                                gemini.build(cfg))
  standin.fail(Fault(status=500))
  row = {"prompt": "What is 2 + 2?", "completion": "<answer>4</answer>",
         "rubric_id": "math-solution", "aggregation": "implicit"}
  try:
    with JudgeClient(handle.address) as client:
      client.wait_ready(10)
      first = client.score([request_from_row(row, "a")])["a"]
      second = client.score([request_from_row(row, "b")])["b"]
  finally:
    handle.stop()
  for r in (first, second):
    assert r.status == judge_pb2.UNSCORABLE and r.reward == 0.0
  assert first.reason.startswith("holistic score: infrastructure: HTTP 500")
  assert second.reason.startswith(
      "holistic score: infrastructure: circuit open"), second.reason
  assert len(standin.requests) == 1


@pytest.mark.parametrize("calls", [1, 2])
def test_the_batcher_runs_up_to_max_calls_in_flight(standin, calls):
  standin.fail(*[Fault(delay_s=0.15)] * 4)
  backend = gemini.build(backend_config(standin, max_calls_in_flight=calls))

  async def go():
    batcher = MicroBatcher(backend, 1, 0.0, backend.max_calls_in_flight)
    batcher.start()
    try:
      return await asyncio.gather(*(batcher.submit([p]) for p in "abcd"))
    finally:
      await batcher.close()
      await backend.close()
  started = time.monotonic()
  results = asyncio.run(go())
  assert all(j.score is not None for (j,) in results)
  assert standin.peak == calls
  assert time.monotonic() - started >= 0.6 / calls


def test_a_short_rollout_still_passes_a_long_one_with_calls_in_flight(
    standin):
  standin.fail(*[Fault(delay_s=0.05)] * 8)
  backend = gemini.build(backend_config(standin, max_calls_in_flight=2))

  async def go():
    batcher = MicroBatcher(backend, 1, 0.0, backend.max_calls_in_flight)
    batcher.start()
    try:
      long = asyncio.create_task(batcher.submit(list("abcdefg")))
      await asyncio.sleep(0)
      short = asyncio.create_task(batcher.submit(["z"]))
      done, _ = await asyncio.wait({long, short},
                                   return_when=asyncio.FIRST_COMPLETED)
      await long
      return done == {short}
    finally:
      await batcher.close()
      await backend.close()
  assert asyncio.run(go())
  texts = [r.body["contents"][0]["parts"][0]["text"] for r in standin.requests]
  # Behind the two prompts in flight and at most one more of the long
  # rollout, not behind all seven.
  assert texts.index("z") <= 3


@pytest.mark.parametrize("fields, problem", [
    ({"deadline_s": 0}, "deadline_s: must be > 0"),
    ({"attempt_timeout_s": -1}, "attempt_timeout_s: must be > 0"),
    ({"max_retries": -1}, "max_retries: must be >= 0"),
    ({"backoff_initial_s": 2, "backoff_max_s": 1},
     "backoff_max_s: must be >= backoff_initial_s"),
    ({"breaker_failures": -1}, "breaker_failures: must be >= 0"),
    ({"breaker_open_s": 0}, "breaker_open_s: must be > 0"),
    ({"retries": 3}, "retries: unknown key"),
])
def test_bad_resilience_config_names_the_field(fields, problem):
  overrides = [f"backend.resilience.{k}={v}" for k, v in fields.items()]
  with pytest.raises(ConfigError) as e:
    config_lib.load(None, overrides)
  assert str(e.value).startswith(f"backend.resilience.{problem}")
