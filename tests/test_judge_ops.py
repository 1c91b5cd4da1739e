"""Limits, metrics and logs of a real judge process (`python -m judge_server`),
seen the way an operator sees them: RESOURCE_EXHAUSTED with a retry hint,
the Prometheus endpoint scraped before and after traffic, JSON log lines on
stderr.

It judges with the gemini backend against tests/gemini_standin.py (the
Gemini API cannot be reached from here): no jax to start or compile, and
faults on demand for the error classes. A batch waits MAX_WAIT_MS for
company unless it fills, so a request is reliably still queued when the
next one arrives."""

import dataclasses
import json
import signal
import threading
import time
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families
import pytest

from orchestrator.judge.client import JudgeClient
from protos import judge_pb2, judge_pb2_grpc
import gemini_standin
from gemini_standin import Fault
import processes

MAX_WAIT_MS = 1000
MAX_QUEUE_DEPTH = 6  # one math-solution rollout (6 criteria) fills it
MAX_STREAMS = 2
RETRY_AFTER_MS = 200


@dataclasses.dataclass
class Judge:
  proc: object
  address: str
  metrics_url: str


@pytest.fixture(scope="module")
def standin():
  with gemini_standin.serving() as s:
    yield s


@pytest.fixture(scope="module")
def judge(standin, tmp_path_factory):
  metrics_port = processes.free_port()
  proc = processes.start_judge(
      {"backend": {"kind": "gemini", "max_batch": 8,
                   # The stand-in answers digits: the 0-9 scale, zero-shot.
                   "criteria": {"format": "scale", "few_shot": False},
                   "gemini": {"base_url": standin.base_url,
                              "model": gemini_standin.MODEL},
                   "resilience": {"max_retries": 0}},
       "max_wait_ms": MAX_WAIT_MS,
       "limits": {"max_queue_depth": MAX_QUEUE_DEPTH,
                  "max_concurrent_streams": MAX_STREAMS,
                  "retry_after_ms": RETRY_AFTER_MS},
       "metrics": {"port": metrics_port},
       "log_format": "json"},
      tmp_path_factory.mktemp("judge"),
      env={"GEMINI_API_KEY": gemini_standin.KEY})
  yield Judge(proc, processes.judge_address(proc),
              f"http://127.0.0.1:{metrics_port}/metrics")
  processes.stop(proc)


@pytest.fixture(scope="module")
def stub(judge):
  with grpc.insecure_channel(judge.address) as channel:
    yield judge_pb2_grpc.JudgeServiceStub(channel)


def scrape(judge: Judge) -> dict[tuple, float]:
  """Every sample, by (name, sorted label items)."""
  with urllib.request.urlopen(judge.metrics_url, timeout=10) as response:
    text = response.read().decode()
  return {(s.name, tuple(sorted(s.labels.items()))): s.value
          for family in text_string_to_metric_families(text)
          for s in family.samples}


def moved(before: dict, after: dict, name: str, **labels) -> float:
  key = (name, tuple(sorted(labels.items())))
  return after.get(key, 0.0) - before.get(key, 0.0)


_unique = iter(range(10**6))


def req(rollout_id: str, implicit: bool = False) -> judge_pb2.ScoreRequest:
  """A math-solution rollout (6 prompts explicit, 1 implicit) with a
  completion of its own, so the judgement cache never answers it."""
  return judge_pb2.ScoreRequest(
      rollout_id=rollout_id, prompt="What is 47 + 38?",
      completion=f"<answer>{next(_unique)}</answer>",
      rubric_id="math-solution",
      aggregation=judge_pb2.IMPLICIT if implicit else judge_pb2.EXPLICIT)


def wait_for_depth(judge: Judge, depth: int) -> None:
  deadline = time.monotonic() + 10
  while scrape(judge)[("grar_judge_queue_depth", ())] < depth:
    assert time.monotonic() < deadline, f"queue depth never reached {depth}"
    time.sleep(0.02)


def held_stream(stub, requests, release: threading.Event):
  """A Score stream that sends `requests`, then stays open until release."""
  def gen():
    yield from requests
    release.wait(30)
  return stub.Score(gen(), timeout=60)


def test_metrics_move_with_traffic(judge, stub):
  before = scrape(judge)
  inline = judge_pb2.Rubric(criteria=[
      judge_pb2.Criterion(text=f"States {n}", category=judge_pb2.ESSENTIAL,
                          weight=1) for n in (85, 86, 87)])
  first = [judge_pb2.ScoreRequest(rollout_id="m1", prompt="What is 47 + 38?",
                                  completion="<answer>85</answer>",
                                  rubric=inline),
           req("m2", implicit=True)]
  response = stub.ScoreBatch(judge_pb2.ScoreBatchRequest(requests=first),
                             timeout=60)
  assert [r.status for r in response.results] == [judge_pb2.SCORED] * 2
  middle = scrape(judge)
  assert moved(before, middle, "grar_judge_results_total",
               status="scored") == 2
  assert moved(before, middle, "grar_judge_result_latency_seconds_count",
               backend="gemini", status="scored") == 2
  assert moved(before, middle, "grar_judge_result_latency_seconds_sum",
               backend="gemini", status="scored") > 0
  assert moved(before, middle, "grar_judge_batch_size_sum",
               backend="gemini") == 4
  assert moved(before, middle, "grar_judge_backend_call_seconds_count",
               backend="gemini") >= 1
  assert moved(before, middle, "grar_judge_cache_misses_total") == 4
  assert moved(before, middle, "grar_judge_cache_hits_total") == 0
  assert middle[("grar_judge_queue_depth", ())] == 0

  # The same rollouts again: judged from the cache, not the backend.
  again = [judge_pb2.ScoreRequest.FromString(r.SerializeToString())
           for r in first]
  for r in again:
    r.rollout_id = f"again-{r.rollout_id}"
  stub.ScoreBatch(judge_pb2.ScoreBatchRequest(requests=again), timeout=60)
  with pytest.raises(grpc.RpcError):
    stub.ScoreBatch(judge_pb2.ScoreBatchRequest(requests=[
        judge_pb2.ScoreRequest(rollout_id="bad", prompt="p")]), timeout=10)
  after = scrape(judge)
  assert moved(middle, after, "grar_judge_cache_hits_total") == 4
  assert moved(middle, after, "grar_judge_batch_size_sum",
               backend="gemini") == 0
  assert moved(middle, after, "grar_judge_results_total", status="scored") == 2
  assert moved(middle, after, "grar_judge_errors_total",
               **{"class": "invalid_argument"}) == 1
  assert moved(before, after, "grar_judge_errors_total",
               **{"class": "infrastructure"}) == 0


def test_unscorable_rollouts_are_counted_by_class(judge, stub, standin):
  before = scrape(judge)
  for fault, why in ((Fault(status=500), "infrastructure"),
                     (Fault(blocked=True), "unparseable")):
    standin.fail(fault)
    (result,) = stub.ScoreBatch(judge_pb2.ScoreBatchRequest(requests=[
        req(why, implicit=True)]), timeout=60).results
    assert result.status == judge_pb2.UNSCORABLE
    assert f"{why}: " in result.reason, result.reason
  after = scrape(judge)
  for why in ("infrastructure", "unparseable"):
    assert moved(before, after, "grar_judge_errors_total",
                 **{"class": why}) == 1
  assert moved(before, after, "grar_judge_results_total",
               status="unscorable") == 2
  assert moved(before, after, "grar_judge_result_latency_seconds_count",
               backend="gemini", status="unscorable") == 2


def test_stream_answers_what_it_took_then_says_when_to_come_back(judge, stub):
  before = scrape(judge)
  results = stub.Score(iter([req("taken"), req("refused")]), timeout=60)
  first = next(results)
  assert first.rollout_id == "taken" and first.status == judge_pb2.SCORED
  with pytest.raises(grpc.RpcError) as e:
    next(results)
  assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
  assert e.value.details() == (
      f"{MAX_QUEUE_DEPTH} judge prompts queued, max_queue_depth="
      f"{MAX_QUEUE_DEPTH}; retry in {RETRY_AFTER_MS} ms")
  assert ("retry-after-ms", str(RETRY_AFTER_MS)) in e.value.trailing_metadata()
  assert moved(before, scrape(judge), "grar_judge_errors_total",
               **{"class": "resource_exhausted"}) == 1


def test_score_batch_is_refused_while_the_queue_is_full(judge, stub):
  release = threading.Event()
  held = held_stream(stub, [req("holder")], release)
  try:
    wait_for_depth(judge, MAX_QUEUE_DEPTH)
    with pytest.raises(grpc.RpcError) as e:
      stub.ScoreBatch(judge_pb2.ScoreBatchRequest(requests=[
          req("late", implicit=True)]), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_queue_depth" in e.value.details()
    assert next(held).rollout_id == "holder"
  finally:
    release.set()
  assert list(held) == []


def test_calls_past_max_concurrent_streams_are_refused(judge, stub):
  release = threading.Event()
  held = [held_stream(stub, [req(f"open-{i}", implicit=True)], release)
          for i in range(MAX_STREAMS)]
  try:
    wait_for_depth(judge, MAX_STREAMS)  # both streams are being served
    stub.GetInfo(judge_pb2.GetInfoRequest(), timeout=10)  # not counted
    with pytest.raises(grpc.RpcError) as e:
      stub.ScoreBatch(judge_pb2.ScoreBatchRequest(requests=[
          req("third", implicit=True)]), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert e.value.details() == (
        f"{MAX_STREAMS} calls in progress, max_concurrent_streams="
        f"{MAX_STREAMS}; retry in {RETRY_AFTER_MS} ms")
  finally:
    release.set()
  for stream in held:
    assert [r.status for r in stream] == [judge_pb2.SCORED]


def test_client_resends_after_the_hint(judge):
  with JudgeClient(judge.address, timeout_s=60) as client:
    results = client.score([req("c1"), req("c2")])
    assert client.retries == 1
  assert {k: r.status for k, r in results.items()} == {
      "c1": judge_pb2.SCORED, "c2": judge_pb2.SCORED}


def test_sigterm_exits_0_and_every_log_line_is_json(judge, stub):
  """Last in the module: it stops the shared server."""
  stub.ScoreBatch(judge_pb2.ScoreBatchRequest(requests=[
      req("logged", implicit=True)]), timeout=60)
  judge.proc.send_signal(signal.SIGTERM)
  _, err = judge.proc.communicate(timeout=60)
  assert judge.proc.returncode == 0
  lines = [json.loads(line) for line in err.splitlines()]
  for line in lines:
    assert {"time", "level", "logger", "message"} <= set(line), line
  (logged,) = [line for line in lines if line.get("rollout_id") == "logged"]
  assert logged["message"] == "result" and logged["level"] == "info"
  assert logged["status"] == "scored" and logged["rpc"] == "ScoreBatch"
  assert logged["latency_ms"] > 0 and 0 <= logged["reward"] <= 1
  refused = [line for line in lines if line["message"] == "refused"]
  assert {line["status"] for line in refused} == {
      "invalid_argument", "resource_exhausted"}
