"""Every RPC of JudgeService refuses a bad request at the edge, before any
backend work, whether its backend is up or down (issue 34, item 5).

The RPCs are walked from the service descriptor, so a new one is covered
the day it is added; each gets the same bad inputs, sent as raw bytes over
a generic call as a client that knows only the server's reflection would:
an empty message, each string (or repeated) field of the request grown to
32 MiB, NUL bytes and random bytes. Each must be answered with
INVALID_ARGUMENT (or RESOURCE_EXHAUSTED) in one short line, never
UNAVAILABLE because the backend is down, and must put nothing in front of
the backend (its prompt count, scraped from the metrics endpoint, stays
put).

Two real judge processes on loopback: "up" judges with the tiny random
Gemma-3 (jax); "down" is the openai backend pointed at a port where nothing
listens, with no retries and no circuit breaker. A valid request to each
shows the two really differ.
"""

import dataclasses
import json
import random
import threading

from google.protobuf import descriptor as descriptor_lib
from google.protobuf import message_factory
from google.protobuf.message import DecodeError
import grpc
import pytest

from judge_server.config import Limits
from protos import judge_pb2
import processes
from test_judge_ops import Judge, moved, scrape

SERVICE = judge_pb2.DESCRIPTOR.services_by_name["JudgeService"]
DEADLINE_S = 60
OVERSIZED = 32 << 20
UNKNOWN_FIELD = (1 << 29) - 1  # the largest field number protobuf allows
# The RPCs whose empty message is a whole, valid request, and why; every
# other RPC must refuse one.
EMPTY_IS_VALID = {
    "GetInfo": "GetInfoRequest has no fields",
    "ScoreBatch": "a batch of no rollouts is answered with no results",
}
REFUSED = {grpc.StatusCode.INVALID_ARGUMENT,
           grpc.StatusCode.RESOURCE_EXHAUSTED}
# A refusal says what was wrong in a line, never echoing the 32 MiB back.
MAX_DETAILS_CHARS = 1000
BACKEND_WORK = "grar_judge_batch_size_sum"


def _varint(n: int) -> bytes:
  out = bytearray()
  while n > 0x7F:
    out.append(n & 0x7F | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _growable(message: descriptor_lib.Descriptor, outer=()):
  """Paths (tuples of fields) to every string or bytes field and every
  repeated scalar field under `message`, through its message fields."""
  for field in message.fields:
    path = (*outer, field)
    if field.type == field.TYPE_MESSAGE:
      if field.message_type not in [f.message_type for f in outer]:
        yield from _growable(field.message_type, path)
    elif field.type in (field.TYPE_STRING, field.TYPE_BYTES) or (
        field.is_repeated):
      yield path


def _oversized(path) -> bytes:
  """A message whose field at `path` holds OVERSIZED bytes: "x"s for a
  string, packed zeros (each a valid value of any scalar) for a repeated
  field; every field on the way holds just the next."""
  raw = b"x" * OVERSIZED if path[-1].type in (
      path[-1].TYPE_STRING, path[-1].TYPE_BYTES) else b"\0" * OVERSIZED
  for field in reversed(path):
    raw = _length_delimited(field.number, raw)
  return raw


def _random_bytes(method: descriptor_lib.MethodDescriptor) -> bytes:
  """256 seeded random bytes that do not parse as the method's request."""
  parse = message_factory.GetMessageClass(method.input_type).FromString
  rng = random.Random(method.full_name)
  for _ in range(100):
    raw = rng.randbytes(256)
    try:
      parse(raw)
    except DecodeError:
      return raw
  raise AssertionError(f"no random bytes fail to parse as "
                       f"{method.input_type.name}")


def _inputs():
  """(method, input name, thunk building the raw request) for every RPC."""
  for method in SERVICE.methods:
    yield method, "empty", lambda: b""
    for path in _growable(method.input_type):
      name = "32MiB-" + ".".join(f.name for f in path)
      yield method, name, lambda path=path: _oversized(path)
    # A field no request has: every request type can carry one, so an RPC
    # whose request has no fields of its own is sent 32 MiB this way.
    yield method, "32MiB-unknown-field", lambda: _length_delimited(
        UNKNOWN_FIELD, b"x" * OVERSIZED)
    yield method, "nul-bytes", lambda: b"\0" * 64
    yield method, "random-bytes", lambda method=method: _random_bytes(method)


INPUTS = list(_inputs())


def _call(channel, method: descriptor_lib.MethodDescriptor, raw: bytes
          ) -> tuple[grpc.StatusCode, str, list[bytes]]:
  """(status, details, answers) of one generic call sending `raw` as the
  method's only request message."""
  kind = (f"{'stream' if method.client_streaming else 'unary'}_"
          f"{'stream' if method.server_streaming else 'unary'}")
  call = getattr(channel, kind)(f"/{SERVICE.full_name}/{method.name}")
  try:
    answer = call(iter([raw]) if method.client_streaming else raw,
                  timeout=DEADLINE_S)
    answers = list(answer) if method.server_streaming else [answer]
  except grpc.RpcError as e:
    return e.code(), e.details() or "", []
  return grpc.StatusCode.OK, "", answers


BACKENDS = {
    "up": {},  # the default: the tiny random Gemma-3 on jax
    "down": {"kind": "openai",
             "resilience": {"max_retries": 0, "breaker_failures": 0}},
}


@dataclasses.dataclass
class Served:
  mode: str  # a key of BACKENDS
  judge: Judge
  log: list[str]  # the judge's stderr, drained as it comes
  drain: threading.Thread

  def stop(self) -> list[str]:
    """Stops the judge; every line it logged."""
    self.judge.proc.kill()
    self.judge.proc.wait()
    self.drain.join()
    return self.log


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def served(request, tmp_path_factory):
  backend = dict(BACKENDS[request.param])
  if request.param == "down":
    backend["openai"] = {
        "base_url": f"http://127.0.0.1:{processes.free_port()}/v1",
        "model": "nobody"}
  metrics_port = processes.free_port()
  proc = processes.start_judge(
      {"backend": backend, "max_wait_ms": 1,
       "metrics": {"port": metrics_port}, "log_format": "json"},
      tmp_path_factory.mktemp("judge"), env={"JAX_PLATFORMS": "cpu"})
  log: list[str] = []
  # Every refusal is logged: drained as it comes, so a full pipe never
  # stalls the server.
  drain = threading.Thread(target=lambda: log.extend(proc.stderr),
                           daemon=True)
  drain.start()
  served = Served(request.param, Judge(
      proc, processes.judge_address(proc),
      f"http://127.0.0.1:{metrics_port}/metrics"), log, drain)
  yield served
  served.stop()


@pytest.fixture(scope="module")
def channel(served):
  limit = Limits().max_message_bytes
  with grpc.insecure_channel(served.judge.address, options=[
      ("grpc.max_send_message_length", limit),
      ("grpc.max_receive_message_length", limit)]) as c:
    yield c


def _backend_work(judge: Judge) -> float:
  """Judge and teacher prompts the backend was sent, whatever its name."""
  return sum(value for (name, _), value in scrape(judge).items()
             if name == BACKEND_WORK)


def test_every_rpc_is_walked():
  """The walk reaches every RPC and each of its request's string and
  repeated fields (a regression guard on _growable)."""
  walked = {(m.name, name) for m, name, _ in INPUTS}
  assert {m.name for m in SERVICE.methods} == {m for m, _ in walked}
  assert {("Score", "32MiB-completion"),
          ("Score", "32MiB-rubric.criteria.text"),
          ("ScoreBatch", "32MiB-requests.completion"),
          ("TokenLogprobs", "32MiB-completion_tokens"),
          ("GetInfo", "32MiB-unknown-field"), ("GetInfo", "nul-bytes")
          } <= walked
  assert set(EMPTY_IS_VALID) <= {m.name for m in SERVICE.methods}


@pytest.mark.parametrize("method, name, build", INPUTS,
                         ids=[f"{m.name}-{name}" for m, name, _ in INPUTS])
def test_a_bad_request_is_refused_at_the_edge(served, channel, method, name,
                                              build):
  mode, judge = served.mode, served.judge
  before = _backend_work(judge)
  code, details, answers = _call(channel, method, build())
  if name == "empty" and method.name in EMPTY_IS_VALID:
    assert code == grpc.StatusCode.OK, (mode, code, details)
    # Nothing asked, nothing answered but the server's own description.
    if method.name == "ScoreBatch":
      assert answers == [b""]
  else:
    assert code in REFUSED, (mode, code, details[:MAX_DETAILS_CHARS])
    assert details and "\n" not in details
    assert len(details) <= MAX_DETAILS_CHARS, (mode, details[:200])
  assert _backend_work(judge) == before, (
      f"{method.name} {name} reached the {mode} backend")


def _valid(method_name: str) -> bytes:
  if method_name == "Score":
    return judge_pb2.ScoreRequest(
        rollout_id="ok", prompt="What is 2 + 2?",
        completion="<answer>4</answer>", rubric_id="math-solution"
    ).SerializeToString()
  return judge_pb2.LogprobsRequest(
      rollout_id="ok", prompt_tokens=[2, 70, 71],
      completion_tokens=[72, 73]).SerializeToString()


def test_a_valid_request_reaches_the_backend_up_or_down(served, channel):
  """The control: the same generic call with a valid request does reach
  the backend, and the two backends answer it differently."""
  mode, judge = served.mode, served.judge
  before = _backend_work(judge)
  score = SERVICE.methods_by_name["Score"]
  code, details, [raw] = _call(channel, score, _valid("Score"))
  assert code == grpc.StatusCode.OK, details
  result = judge_pb2.ScoreResult.FromString(raw)
  assert _backend_work(judge) > before
  teacher_code, teacher_details, teacher_answers = _call(
      channel, SERVICE.methods_by_name["TokenLogprobs"],
      _valid("TokenLogprobs"))
  if mode == "up":
    assert result.status == judge_pb2.SCORED, result.reason
    assert teacher_code == grpc.StatusCode.OK, teacher_details
    [logprobs] = map(judge_pb2.LogprobsResult.FromString, teacher_answers)
    assert logprobs.status == judge_pb2.SCORED and len(logprobs.logprobs) == 2
  else:
    assert result.status == judge_pb2.UNSCORABLE
    assert "infrastructure: " in result.reason
    # A valid request to a teacher that cannot be reached: the caller's
    # cue to try later.
    assert teacher_code == grpc.StatusCode.UNAVAILABLE, teacher_details


def test_no_refusal_failed_or_logged_what_it_refused(served):
  """Last in the module: each bad request was logged as refused, in a line
  that does not carry the 32 MiB it refused, and no handler failed on the
  way (its exception would be logged an error)."""
  records = [json.loads(line) for line in served.stop()]
  assert not [r for r in records if r["level"] == "error"]
  refused = [r for r in records if r["message"] == "refused"]
  assert len(refused) >= len(INPUTS) - len(EMPTY_IS_VALID)
  assert max(len(r["details"]) for r in refused) <= MAX_DETAILS_CHARS
