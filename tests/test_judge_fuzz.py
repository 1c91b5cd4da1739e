"""Property-based fuzzing of a running judge process (`python -m judge_server`)
with hypothesis: random bytes through generic (identity-serializer) calls on
every JudgeService path, and well-formed protos with hostile values (huge
strings, NaN/inf/negative weights, unknown enum values, empty rubrics,
unknown rubric ids, duplicate rollout ids, many criteria).

Every call has a deadline. Each must end OK or with an allowed status, OK
answers must keep the contract, the server must stay up and healthy, and
malformed requests must never reach the backend: the backend's prompt count
(scraped from the metrics endpoint) never exceeds what the answered requests
needed. The backend is the real openai backend pointed at a loopback port
where nothing listens, so a request that gets through is judged UNSCORABLE
at once, with no retries and no circuit breaker in the way.

The examples are derandomized (the same ones every run); run with
--hypothesis-seed=N and without derandomize to explore others.
"""

import collections
import json
import math
import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import pytest

from judge_server.config import Limits
from judge_server.packs import load_packs
from protos import judge_pb2, judge_pb2_grpc
import processes
from test_judge_ops import moved, scrape, Judge

DEADLINE_S = 10
PACKS = {rid: len(r.criteria) for rid, r in load_packs().items()}
LIMITS = Limits()
# Tallied by every test, reported by the last.
COUNTS: collections.Counter = collections.Counter()
LOG: list[str] = []  # the judge's stderr
SETTINGS = settings(
    deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example])


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
  metrics_port = processes.free_port()
  proc = processes.start_judge(
      {"backend": {"kind": "openai", "openai": {
          "base_url": f"http://127.0.0.1:{processes.free_port()}/v1",
          "model": "nobody"},
          "resilience": {"max_retries": 0, "breaker_failures": 0}},
       "max_wait_ms": 1,
       "metrics": {"port": metrics_port},
       "log_format": "json"},
      tmp_path_factory.mktemp("judge"))
  address = processes.judge_address(proc)
  # Thousands of refusals are logged: drained as they come, so a full pipe
  # never stalls the server, and kept for the final check.
  drain = threading.Thread(target=lambda: LOG.extend(proc.stderr),
                           daemon=True)
  drain.start()
  yield Judge(proc, address, f"http://127.0.0.1:{metrics_port}/metrics")
  proc.kill()
  proc.wait()
  drain.join()


@pytest.fixture(scope="module")
def channel(judge):
  with grpc.insecure_channel(judge.address, options=[
      ("grpc.max_send_message_length", LIMITS.max_message_bytes),
      ("grpc.max_receive_message_length", LIMITS.max_message_bytes)]) as c:
    yield c


def _call(tally: str, thunk, allowed: set, messages: int):
  """thunk()'s answer, or None when it ended with an allowed status; counts
  the call by status and the `messages` it sent."""
  COUNTS["messages sent", tally] += messages
  try:
    answer = thunk()
  except grpc.RpcError as e:
    COUNTS[tally, e.code().name] += 1
    assert e.code() in allowed, (e.code(), e.details())
    return None
  COUNTS[tally, "OK"] += 1
  return answer


# --- random bytes -----------------------------------------------------------

PATHS = ["/grar.judge.v1.JudgeService/GetInfo",
         "/grar.judge.v1.JudgeService/ScoreBatch",
         "/grar.judge.v1.JudgeService/Score"]
RAW_ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT,
               grpc.StatusCode.RESOURCE_EXHAUSTED}


@settings(SETTINGS, max_examples=800)
@given(path=st.sampled_from(PATHS),
       messages=st.lists(st.binary(max_size=512), min_size=1, max_size=3))
def test_random_bytes_on_every_path(channel, path, messages):
  if path.endswith("/Score"):
    call = channel.stream_stream(path)
    answer = _call("bytes", lambda: list(call(iter(messages),
                                              timeout=DEADLINE_S)),
                   RAW_ALLOWED, len(messages))
  else:
    call = channel.unary_unary(path)
    answer = _call("bytes", lambda: call(messages[0], timeout=DEADLINE_S),
                   RAW_ALLOWED, 1)
  if answer is not None and path.endswith("/ScoreBatch"):
    # Bytes that happen to be a valid request get a valid answer.
    judge_pb2.ScoreBatchResponse.FromString(answer)


# --- hostile protos ---------------------------------------------------------

def _huge(limit: int) -> st.SearchStrategy[str]:
  """Around and far past a length limit, built rather than drawn (drawing
  100k characters one by one is slow)."""
  return st.sampled_from([limit, limit + 1, 10 * limit]).map(lambda n: "x" * n)


WEIGHTS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0, -0.0, 1e308,
                     5e-324]),
    st.floats(allow_nan=True, allow_infinity=True))
ENUMS = st.integers(min_value=-3, max_value=8)  # past both ends of each enum


@st.composite
def criteria(draw) -> judge_pb2.Criterion:
  return judge_pb2.Criterion(
      text=draw(st.one_of(st.text(max_size=30), st.just(""), _huge(4000))),
      category=draw(ENUMS), weight=draw(WEIGHTS), polarity=draw(ENUMS))


FINE_CRITERION = judge_pb2.Criterion(text="States 4",
                                     category=judge_pb2.ESSENTIAL, weight=2)
# Each field's hostile values; a request has up to two hostile fields and
# fine values elsewhere, so many get through and the rest fail at one spot.
HOSTILE = {
    "rollout_id": st.one_of(st.just(""), _huge(LIMITS.max_rollout_id_chars),
                            st.text(max_size=8)),
    "prompt": st.one_of(st.just(""), st.just(" \n\t"), st.text(max_size=40),
                        _huge(LIMITS.max_prompt_chars)),
    "completion": st.one_of(st.text(max_size=40),
                            _huge(LIMITS.max_completion_chars)),
    "reference_answer": st.one_of(st.text(max_size=40),
                                  _huge(LIMITS.max_reference_chars)),
    "aggregation": ENUMS,
    "rubric": st.sampled_from(["none", "empty", "unknown", "inline", "many"]),
}


def _hostile_rubric(draw, request: judge_pb2.ScoreRequest, kind: str) -> None:
  if kind == "empty":
    request.rubric.SetInParent()
  elif kind == "unknown":
    request.rubric_id = draw(st.text(max_size=20))
  elif kind == "inline":
    request.rubric.criteria.extend(
        draw(st.lists(criteria(), min_size=1, max_size=4)))
  elif kind == "many":
    n = draw(st.sampled_from([LIMITS.max_criteria, LIMITS.max_criteria + 1,
                              500]))
    request.rubric.criteria.extend([FINE_CRITERION] * n)


@st.composite
def score_requests(draw, rollout_id: str) -> judge_pb2.ScoreRequest:
  hostile = draw(st.sets(st.sampled_from(sorted(HOSTILE)), max_size=2))
  values = {name: draw(HOSTILE[name]) for name in hostile}
  request = judge_pb2.ScoreRequest(
      rollout_id=values.get("rollout_id", rollout_id),
      prompt=values.get("prompt", "What is 2 + 2?"),
      completion=values.get("completion", "<answer>4</answer>"),
      reference_answer=values.get("reference_answer", "4"),
      aggregation=values.get("aggregation", draw(st.integers(0, 2))))
  if "rubric" in hostile:
    _hostile_rubric(draw, request, values["rubric"])
  elif draw(st.booleans()):
    request.rubric_id = draw(st.sampled_from(sorted(PACKS)))
  else:
    request.rubric.criteria.extend([FINE_CRITERION] * draw(st.integers(1, 3)))
  return request


@st.composite
def calls(draw) -> list[judge_pb2.ScoreRequest]:
  """Up to 4 requests; sometimes two share a rollout id."""
  n = draw(st.integers(0, 4))
  ids = [str(i) for i in range(n)]
  if n > 1 and draw(st.booleans()):
    ids[-1] = ids[0]
  return [draw(score_requests(rollout_id)) for rollout_id in ids]


PROTO_ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT,
                 grpc.StatusCode.RESOURCE_EXHAUSTED}


def _prompts(request: judge_pb2.ScoreRequest) -> int:
  """Backend prompts of a request the judge accepted (default: explicit)."""
  if request.aggregation == judge_pb2.IMPLICIT:
    return 1
  if request.WhichOneof("rubric_source") == "rubric_id":
    return PACKS[request.rubric_id]
  return len(request.rubric.criteria)


def _check_results(requests, results) -> None:
  """The contract of an OK answer: one result per request (a stream may
  send an id again once its first result is out), statuses and rewards in
  range."""
  assert collections.Counter(r.rollout_id for r in results) == (
      collections.Counter(r.rollout_id for r in requests))
  for result in results:
    assert result.status in (judge_pb2.SCORED, judge_pb2.UNSCORABLE)
    if result.status == judge_pb2.SCORED:
      assert 0.0 <= result.reward <= 1.0
    else:
      assert result.reason
    COUNTS["results", judge_pb2.Status.Name(result.status)] += 1


@settings(SETTINGS, max_examples=250)
@given(requests=calls())
def test_hostile_streams(channel, requests):
  stub = judge_pb2_grpc.JudgeServiceStub(channel)
  results = _call("stream", lambda: list(stub.Score(
      iter(requests), timeout=DEADLINE_S)), PROTO_ALLOWED, len(requests))
  if results is not None:
    _check_results(requests, results)


def test_hostile_batches_and_nothing_malformed_reaches_the_backend(
    judge, channel):
  """Prompts that reached the backend (scraped before and after) are at most
  those the answered calls needed; identical prompts in flight together are
  judged once, so it can be fewer."""
  stub = judge_pb2_grpc.JudgeServiceStub(channel)
  needed = []

  @settings(SETTINGS, max_examples=300)
  @given(requests=calls())
  def batches(requests):
    response = _call("batch", lambda: stub.ScoreBatch(
        judge_pb2.ScoreBatchRequest(requests=requests), timeout=DEADLINE_S),
                     PROTO_ALLOWED, len(requests))
    if response is not None:
      assert [r.rollout_id for r in response.results] == [
          r.rollout_id for r in requests]
      _check_results(requests, response.results)
      needed.append(sum(map(_prompts, requests)))

  before = scrape(judge)
  batches()
  reached = moved(before, scrape(judge), "grar_judge_batch_size_sum",
                  backend="openai")
  assert sum(needed) > 0, "no batch call got through: the strategies are off"
  assert 0 < reached <= sum(needed)


def test_oversized_batch_call_is_refused(channel):
  stub = judge_pb2_grpc.JudgeServiceStub(channel)
  n = LIMITS.max_requests_per_batch_call + 1
  requests = [judge_pb2.ScoreRequest(rollout_id=str(i), prompt="p",
                                     completion="c", rubric_id="math-solution")
              for i in range(n)]
  assert _call("batch", lambda: stub.ScoreBatch(
      judge_pb2.ScoreBatchRequest(requests=requests), timeout=DEADLINE_S),
               {grpc.StatusCode.INVALID_ARGUMENT}, len(requests)) is None


def test_server_is_still_healthy_and_judging(judge, channel, capsys):
  """Last in the module: reports the counts."""
  assert judge.proc.poll() is None, "the judge process died"
  response = health_pb2_grpc.HealthStub(channel).Check(
      health_pb2.HealthCheckRequest(service="grar.judge.v1.JudgeService"),
      timeout=DEADLINE_S)
  assert response.status == health_pb2.HealthCheckResponse.SERVING
  before = scrape(judge)
  request = judge_pb2.ScoreRequest(rollout_id="last", prompt="p",
                                   completion="c", rubric_id="math-solution")
  (result,) = judge_pb2_grpc.JudgeServiceStub(channel).ScoreBatch(
      judge_pb2.ScoreBatchRequest(requests=[request]),
      timeout=DEADLINE_S).results
  assert "infrastructure: " in result.reason
  assert moved(before, scrape(judge), "grar_judge_batch_size_sum",
               backend="openai") == PACKS["math-solution"]
  # Every line the judge logged is a JSON record, and none is an error
  # (an exception in a handler would be).
  records = [json.loads(line) for line in LOG]
  assert records and not [r for r in records if r["level"] == "error"]
  with capsys.disabled():
    print("\njudge fuzz, calls by (kind, status), results by status, "
          "messages sent by kind:")
    for key, n in sorted(COUNTS.items()):
      print(f"  {key}: {n}")
  assert sum(n for (kind, _), n in COUNTS.items()
             if kind == "messages sent") >= 2000
