"""The trainer's side of the judge contract (protos/judge.proto).

Every rollout sent comes back with a result. One the judge never answered
(down, too slow, the stream broke) comes back UNSCORABLE with the reason, so
the trainer masks it out instead of learning from a fake reward of 0. A
request the judge refuses as malformed raises JudgeRequestError: that is a
bug in the caller's data, not an unscorable rollout.
"""

import time
from typing import Any, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import contract
from protos.contract import SERVICE_NAME, rubric_to_proto
from protos.rubric import Rubric, RubricError
from orchestrator.judge import channel as judge_channel
from protos import judge_pb2, judge_pb2_grpc

ROW_KEYS = ("prompt", "completion", "reference_answer", "rubric", "rubric_id",
            "aggregation")


class JudgeRequestError(ValueError):
  """The judge refused a request as malformed (INVALID_ARGUMENT) or refused
  the client's credentials (UNAUTHENTICATED, PERMISSION_DENIED)."""


class RowError(ValueError):
  """A rollout row that cannot become a ScoreRequest; names the field."""


def _text(row: Mapping[str, Any], key: str, required: bool) -> str:
  if key not in row:
    if required:
      raise RowError(f"{key}: missing")
    return ""
  if not isinstance(row[key], str):
    raise RowError(f"{key}: must be a string, got {type(row[key]).__name__}")
  return row[key]


def _rubric_proto(data: Any) -> judge_pb2.Rubric:
  """A Rubric, or a mapping validated like the server does, so a bad rubric
  fails before sending."""
  if not isinstance(data, Rubric):
    try:
      data = Rubric.from_dict(data, where="rubric")
    except RubricError as e:
      raise RowError(str(e)) from None
  return rubric_to_proto(data)


def request_from_row(row: Mapping[str, Any],
                     rollout_id: str) -> judge_pb2.ScoreRequest:
  """A ScoreRequest from a rollout row: prompt, completion, optional
  reference_answer, one of rubric (a mapping with criteria) or rubric_id,
  optional aggregation "explicit" | "implicit". Raises RowError."""
  unknown = sorted(set(row) - set(ROW_KEYS))
  if unknown:
    raise RowError(f"{unknown[0]}: unknown key (known: {', '.join(ROW_KEYS)})")
  request = judge_pb2.ScoreRequest(
      rollout_id=rollout_id, prompt=_text(row, "prompt", True),
      completion=_text(row, "completion", True),
      reference_answer=_text(row, "reference_answer", False))
  if "rubric" in row and "rubric_id" in row:
    raise RowError("rubric_id: give rubric or rubric_id, not both")
  if "rubric" in row:
    request.rubric.CopyFrom(_rubric_proto(row["rubric"]))
  elif "rubric_id" in row:
    request.rubric_id = _text(row, "rubric_id", True)
  else:
    raise RowError("rubric: one of rubric or rubric_id is required")
  aggregation = row.get("aggregation")
  if aggregation is not None:
    if aggregation not in ("explicit", "implicit"):
      raise RowError(f"aggregation: {aggregation!r} is not one of explicit, "
                     "implicit")
    request.aggregation = judge_pb2.Aggregation.Value(aggregation.upper())
  return request


# Codes that sending the same requests again cannot change: malformed
# requests, missing or wrong credentials.
_REFUSED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED)
# Codes after which the same requests may succeed on a new stream.
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
              grpc.StatusCode.ABORTED)


# The reason of a result the judge never gave (the client made it up).
UNAVAILABLE = "judge unavailable: "


class TeacherMismatch(ValueError):
  """The judge cannot be the student's teacher; the message says why."""


class JudgeClient:
  """A blocking client; safe to share between threads."""

  def __init__(self, target: str, timeout_s: float = 60,
               connection: judge_channel.ChannelConfig = (
                   judge_channel.ChannelConfig()),
               retry_unreachable: bool = True):
    """retry_unreachable False: `score` gives up at once on a judge it
    cannot reach (UNAVAILABLE), for a caller with other judges to try."""
    self.target = target
    self._timeout_s = timeout_s
    self._retry_unreachable = retry_unreachable
    self._channel = judge_channel.create(target, connection)
    self._stub = judge_pb2_grpc.JudgeServiceStub(self._channel)
    self._health = health_pb2_grpc.HealthStub(self._channel)
    self.retries = 0  # streams re-opened to re-send unanswered rollouts

  def score(self, requests: list[judge_pb2.ScoreRequest]
            ) -> dict[str, judge_pb2.ScoreResult]:
    """One result per request, by rollout_id, within timeout_s in all.

    If the stream breaks (the judge restarted, the network blinked), the
    rollouts still without a result are sent again on a new stream, with
    backoff, until the deadline; results are idempotent by rollout_id.
    """
    return self._stream(self._stub.Score, requests, judge_pb2.ScoreResult)

  def token_logprobs(self, requests: list[judge_pb2.LogprobsRequest]
                     ) -> dict[str, judge_pb2.LogprobsResult]:
    """The teacher's log-probs of each request's completion, by rollout_id,
    as `score` gives scores: re-sent on a broken stream, UNSCORABLE where
    the judge never answered. Call check_tokenizer first."""
    return self._stream(self._stub.TokenLogprobs, requests,
                        judge_pb2.LogprobsResult)

  def _stream(self, method, requests: list, result_type) -> dict:
    ids = [r.rollout_id for r in requests]
    if len(set(ids)) != len(ids):
      raise ValueError("rollout ids must be unique within one call")
    resends = judge_channel.Resends(self._timeout_s)
    results = {}
    why = "the stream ended without this result"
    while True:
      missing = [r for r in requests if r.rollout_id not in results]
      left = resends.left()
      if not missing or left <= 0:
        break
      asked = 0.0
      try:
        for result in method(iter(missing), timeout=left):
          results[result.rollout_id] = result
      except grpc.RpcError as e:
        if e.code() in _REFUSED:
          raise JudgeRequestError(
              f"judge at {self.target} refused a request: {e.details()}"
          ) from None
        why = f"{e.code().name}: {e.details()}"
        if e.code() not in _TRANSIENT or (
            e.code() == grpc.StatusCode.UNAVAILABLE
            and not self._retry_unreachable):
          break
        # An overloaded judge says when to come back.
        asked = judge_channel.retry_after_s(e)
      if len(results) == len(ids):
        break
      self.retries += 1
      resends.pause(asked)
    return {i: results[i] if i in results else result_type(
        rollout_id=i, status=judge_pb2.UNSCORABLE,
        reason=f"{UNAVAILABLE}{why}") for i in ids}

  def check_tokenizer(self, tokenizer) -> None:
    """Raises TeacherMismatch unless the judge serves token log-probs read
    with the same tokenizer as `tokenizer` (encode, bos_id, vocab_size):
    ids from another would be scored as other text."""
    info = self.info()
    mine = contract.tokenizer_fingerprint(tokenizer)
    theirs = info.tokenizer
    where = f"the judge at {self.target} (backend {info.backend}, model " \
            f"{info.model or '?'})"
    if theirs.error:
      raise TeacherMismatch(f"{where} cannot read its tokenizer now: "
                            f"{theirs.error}")
    if not theirs.fingerprint:
      raise TeacherMismatch(f"{where} gives no token log-probs; a teacher "
                            "needs backend kind jax, or openai in mode "
                            "completions")
    if theirs.fingerprint != mine or (
        theirs.vocab_size and theirs.vocab_size != tokenizer.vocab_size):
      raise TeacherMismatch(
          f"{where} has another tokenizer than the student's (fingerprint "
          f"{theirs.fingerprint}, {theirs.vocab_size or 'unknown'} tokens; "
          f"the student's {mine}, {tokenizer.vocab_size} tokens): teacher "
          "and student must share one, e.g. both Gemma-3")
  def info(self) -> judge_pb2.GetInfoResponse:
    return self._stub.GetInfo(judge_pb2.GetInfoRequest(),
                              timeout=self._timeout_s)

  def wait_ready(self, timeout_s: float) -> None:
    """Returns once the judge reports SERVING; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
      left = deadline - time.monotonic()
      try:
        status = self._health.Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME),
            timeout=max(min(left, 1.0), 0.01)).status
        if status == health_pb2.HealthCheckResponse.SERVING:
          return
        last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
      except grpc.RpcError as e:
        last = e.code().name
      if time.monotonic() >= deadline:
        raise TimeoutError(f"judge at {self.target} not serving after "
                           f"{timeout_s:g}s ({last})")
      time.sleep(0.1)

  def close(self) -> None:
    self._channel.close()

  def __enter__(self) -> "JudgeClient":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
