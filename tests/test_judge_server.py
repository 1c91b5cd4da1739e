"""The judge server as a real process on loopback, judging with the tiny
random Gemma-3 on a 4-device CPU judge mesh (fsdp=1, tp=4), batches of 2."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
import pytest
import yaml

from judge_server.packs import load_packs
from protos.contract import SERVICE_NAME
from orchestrator.judge import score as judge_cli
from orchestrator.judge.client import JudgeClient, JudgeRequestError
from protos import judge_pb2, judge_pb2_grpc
import processes

PACKS = ", ".join(sorted(load_packs()))


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
  """(process, target) of one judge server shared by the module."""
  # No cache: these tests re-send identical requests to watch the judge
  # schedule real work.
  proc = processes.start_judge(
      {"backend": {"max_batch": 2, "mesh": {"fsdp": 1, "tp": 4}},
       "cache": {"enabled": False}},
      tmp_path_factory.mktemp("judge"),
      env={"JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  yield proc, processes.judge_address(proc)
  processes.stop(proc)


@pytest.fixture(scope="module")
def stub(judge):
  with grpc.insecure_channel(judge[1]) as channel:
    yield judge_pb2_grpc.JudgeServiceStub(channel)


INLINE = judge_pb2.Rubric(criteria=[
    judge_pb2.Criterion(text="States that the sum is 85",
                        category=judge_pb2.ESSENTIAL, weight=5,
                        polarity=judge_pb2.POSITIVE),
    judge_pb2.Criterion(text="Carries the ten", category=judge_pb2.IMPORTANT,
                        weight=3),
    judge_pb2.Criterion(text="Forgets to carry and gives 75",
                        category=judge_pb2.PITFALL, weight=2),
])


def req(rollout_id: str, **fields) -> judge_pb2.ScoreRequest:
  fields = {"prompt": "What is 47 + 38?",
            "completion": "<reasoning>7 + 8 = 15, carry 1: 4 + 3 + 1 = 8"
                          "</reasoning><answer>85</answer>",
            "reference_answer": "85", "rubric": INLINE, **fields}
  return judge_pb2.ScoreRequest(rollout_id=rollout_id, **fields)


def assert_scored(result: judge_pb2.ScoreResult, num_criteria: int) -> None:
  assert result.status == judge_pb2.SCORED, result.reason
  assert 0.0 <= result.reward <= 1.0
  assert [c.index for c in result.criteria] == list(range(num_criteria))
  for c in result.criteria:
    assert 0.0 <= c.score <= 1.0 and 0.0 < c.score_mass <= 1.0
  assert result.latency_ms > 0


def test_health_is_serving(judge):
  with grpc.insecure_channel(judge[1]) as channel:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
      response = health.Check(health_pb2.HealthCheckRequest(service=service),
                              timeout=10)
      assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_get_info(stub):
  info = stub.GetInfo(judge_pb2.GetInfoRequest(), timeout=10)
  assert info.backend == "jax"
  assert info.model == "gemma3-tiny-L2-D64-seed1"
  assert {(r.id, r.version, r.num_criteria) for r in info.rubrics} >= {
      ("math-solution", 1, 6), ("general-reasoning", 1, 6)}
  assert info.limits.max_batch == 2
  assert info.limits.max_completion_chars == 16000
  assert info.limits.max_requests_per_batch_call == 256
  assert info.default_aggregation == judge_pb2.EXPLICIT


def test_score_batch_inline_rubric_rubric_id_and_implicit(stub):
  response = stub.ScoreBatch(judge_pb2.ScoreBatchRequest(requests=[
      req("inline"),
      req("pack", rubric=None, rubric_id="math-solution"),
      req("holistic", aggregation=judge_pb2.IMPLICIT)]), timeout=60)
  inline, pack, holistic = response.results
  assert [r.rollout_id for r in response.results] == [
      "inline", "pack", "holistic"]
  assert_scored(inline, 3)
  assert_scored(pack, 6)
  assert_scored(holistic, 0)


def test_stream_yields_in_completion_order(stub):
  """With batches of 2 taken round-robin, the one-prompt implicit request
  overtakes the six-criterion explicit one sent before it."""
  results = list(stub.Score(iter([
      req("long", rubric=None, rubric_id="math-solution",
          aggregation=judge_pb2.EXPLICIT),
      req("short", rubric=None, rubric_id="math-solution",
          aggregation=judge_pb2.IMPLICIT)]), timeout=60))
  assert [r.rollout_id for r in results] == ["short", "long"]
  assert_scored(results[0], 0)
  assert_scored(results[1], 6)


BAD_REQUESTS = [
    (req("r", rubric=None), "rubric: one of rubric or rubric_id is required"),
    (req("r", rubric=judge_pb2.Rubric(criteria=[
        INLINE.criteria[0],
        judge_pb2.Criterion(text="t", category=judge_pb2.IMPORTANT,
                            weight=-1)])),
     "rubric.criteria[1].weight: must be a finite number > 0"),
    (req("r", rubric=None, rubric_id="nope"),
     f"rubric_id: unknown rubric 'nope' (known: {PACKS})"),
    (req("r", completion="x" * 16001),
     "completion: 16001 characters, more than max_completion_chars=16000"),
    (req("r" * 257),
     "rollout_id: 257 characters, more than max_rollout_id_chars=256"),
]
BAD_REQUEST_IDS = [problem.split(":")[0] for _, problem in BAD_REQUESTS]


@pytest.mark.parametrize("request_, problem", BAD_REQUESTS,
                         ids=BAD_REQUEST_IDS)
def test_bad_request_in_batch_names_the_field(stub, request_, problem):
  with pytest.raises(grpc.RpcError) as e:
    stub.ScoreBatch(judge_pb2.ScoreBatchRequest(
        requests=[req("fine"), request_]), timeout=10)
  assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert e.value.details().startswith(f"requests[1].{problem}")


@pytest.mark.parametrize("request_, problem", BAD_REQUESTS,
                         ids=BAD_REQUEST_IDS)
def test_bad_request_in_stream_names_the_rollout_and_field(
    stub, request_, problem):
  with pytest.raises(grpc.RpcError) as e:
    list(stub.Score(iter([request_]), timeout=10))
  assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert e.value.details().startswith(
      f"rollout_id={request_.rollout_id}: {problem}")


def test_empty_rollout_id_and_duplicates_are_refused(stub):
  cases = [
      (judge_pb2.ScoreBatchRequest(requests=[req("")]),
       "requests[0].rollout_id: must not be empty"),
      (judge_pb2.ScoreBatchRequest(requests=[req("a"), req("b"), req("a")]),
       "requests[2].rollout_id: duplicate 'a' (also requests[0])"),
      (judge_pb2.ScoreBatchRequest(requests=[req(str(i)) for i in range(257)]),
       "requests: 257 requests, more than max_requests_per_batch_call=256"),
  ]
  for batch, details in cases:
    with pytest.raises(grpc.RpcError) as e:
      stub.ScoreBatch(batch, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith(details), e.value.details()
  with pytest.raises(grpc.RpcError) as e:
    list(stub.Score(iter([req("a"), req("a")]), timeout=30))
  assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert e.value.details() == (
      "rollout_id=a: rollout_id: already in flight in this stream")


def test_still_serves_after_bad_requests(stub):
  with pytest.raises(grpc.RpcError):
    list(stub.Score(iter([req("bad", rubric=None)]), timeout=10))
  (result,) = stub.Score(iter([req("good")]), timeout=60)
  assert_scored(result, 3)


def test_client_scores_and_reports_bad_requests(judge):
  with JudgeClient(judge[1]) as client:
    client.wait_ready(10)
    assert client.info().backend == "jax"
    results = client.score([req("c1"), req("c2", aggregation=judge_pb2.IMPLICIT)])
    assert set(results) == {"c1", "c2"}
    assert_scored(results["c1"], 3)
    assert_scored(results["c2"], 0)
    with pytest.raises(JudgeRequestError,
                       match="rollout_id=c3: rubric_id: unknown rubric"):
      client.score([req("c3", rubric=None, rubric_id="nope")])


def test_client_with_no_judge_gets_unscorable_not_zero():
  with JudgeClient(f"127.0.0.1:{processes.free_port()}", timeout_s=5) as client:
    results = client.score([req("x"), req("y")])
    assert set(results) == {"x", "y"}
    for r in results.values():
      assert r.status == judge_pb2.UNSCORABLE
      assert r.reason.startswith("judge unavailable: UNAVAILABLE"), r.reason
    with pytest.raises(TimeoutError, match="not serving"):
      client.wait_ready(0.5)


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


ROW = {"prompt": "What is 47 + 38?", "completion": "<answer>85</answer>"}


def test_score_file_end_to_end(judge, tmp_path):
  path = tmp_path / "rollouts.jsonl"
  _write_jsonl(path, [
      {"rollout_id": "first", **ROW, "reference_answer": "85",
       "rubric": {"criteria": [
           {"text": "States 85", "category": "essential", "weight": 5},
           {"text": "Says 75", "category": "pitfall", "weight": 2}]}},
      {**ROW, "rubric_id": "math-solution", "aggregation": "implicit"},
  ])
  out = io.StringIO()
  assert judge_cli.score_file(judge[1], str(path), out) == 0
  lines = [json.loads(line) for line in out.getvalue().splitlines()]
  assert [line["rollout_id"] for line in lines] == ["first", "2"]
  for line in lines:
    assert set(line) == {"rollout_id", "status", "reward", "criteria",
                         "reason", "latency_ms"}
    assert line["status"] == "scored" and 0 <= line["reward"] <= 1
  assert [c["index"] for c in lines[0]["criteria"]] == [0, 1]
  assert set(lines[0]["criteria"][0]) == {"index", "score", "score_mass"}
  assert lines[1]["criteria"] == []


@pytest.mark.parametrize("rows, problem", [
    ([ROW | {"rubric_id": "math-solution"}, {"prompt": "p", "rubric_id": "x"}],
     "line 2: completion: missing"),
    ([ROW | {"rubric": {"criteria": [
        {"text": "t", "category": "essential", "weight": 0}]}}],
     "line 1: rubric.criteria[0].weight: must be a finite number > 0"),
    ([ROW | {"rubric_id": "x", "rollout_id": "a"},
      ROW | {"rubric_id": "x", "rollout_id": "a"}],
     "line 2: rollout_id: duplicate 'a' (first on line 1)"),
    ([ROW | {"rubric_id": "x", "answer": "85"}], "line 1: answer: unknown key"),
])
def test_score_file_bad_row_sends_nothing(tmp_path, capsys, rows, problem):
  path = tmp_path / "rollouts.jsonl"
  _write_jsonl(path, rows)
  out = io.StringIO()
  # Nothing listens there: had anything been sent, rollouts would come back
  # unscorable with exit code 0.
  assert judge_cli.score_file(f"127.0.0.1:{processes.free_port()}", str(path), out) == 2
  assert out.getvalue() == ""
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and problem in err[0], err


def test_unknown_config_key_exits_2_naming_it(tmp_path):
  proc = processes.start_judge({"backend": {"max_batch": 2, "bogus": 1}}, tmp_path)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 2
  assert out == ""
  assert len(err.splitlines()) == 1 and "backend.bogus: unknown key" in err


def test_sigterm_finishes_in_flight_work_then_exits_0(judge):
  """Last in the module: it stops the shared server."""
  proc, target = judge
  stopping = threading.Event()

  def requests():
    yield req("before")
    stopping.wait(30)
    yield req("after")

  with grpc.insecure_channel(target) as channel:
    stub = judge_pb2_grpc.JudgeServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    results = stub.Score(requests(), timeout=60)
    assert next(results).rollout_id == "before"
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
      try:
        status = health.Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME),
            timeout=1).status
      except grpc.RpcError:
        break  # shutting down: the judge no longer takes new calls
      if status != health_pb2.HealthCheckResponse.SERVING:
        break
      time.sleep(0.05)
    stopping.set()
    after = next(results)
    assert after.rollout_id == "after"
    assert_scored(after, 3)
  assert proc.wait(timeout=60) == 0
