"""The judge as an OpenRLHF remote reward model: POST /get_reward over HTTP.

OpenRLHF (`--remote_rm_url http://HOST:PORT/get_reward`) sends
  {"query": [prompt + response, ...], "prompts": [prompt, ...],
   "labels": [label, ...]}
and reads back {"rewards": [...], "scores": [...], "extra_logs": {...}}.
Each item becomes one judge request (prompt, the query after the prompt as
the completion, the label as the reference answer and/or rubric choice) and
goes through the gRPC face's validation, admission, scoring, metrics and
logs (service.Scorer), behind the same bearer tokens: no `Authorization:
Bearer TOKEN` header is a 401, a full judge a 429 with Retry-After.
docs/rubrics.md describes the labels and the unscorable fallback.

The face speaks plain HTTP even when the gRPC port has TLS: keep it on
loopback beside the trainer, or put a TLS proxy in front of it.

HTTP/1.1 is parsed by h11 (already beside httpx), so the face needs no jax
and no web framework.
"""

import asyncio
import json
import math
import re
import time
import uuid
from typing import Any, Mapping

import grpc
import h11

from judge_server import rar, scoring, security, service
from judge_server.config import OpenRLHFConfig
from judge_server.limits import Overloaded, prompt_count
from protos.rubric import Rubric, RubricError
from protos import contract, judge_pb2

PATH = "/get_reward"
HEALTH_PATH = "/health"
RPC = "get_reward"  # the name metrics and logs give this face's calls
_READ_CHUNK = 1 << 16
_MAX_HEADER_BYTES = 16 << 10
_LABEL_KEYS = ("reference_answer", "rubric_id", "rubric", "aggregation")


class Refused(ValueError):
  """A request answered with an error: one that breaks the protocol (the
  message starts with the field), or that the judge will not take now."""

  def __init__(self, message: str, status: int = 400,
               headers: tuple[tuple[str, str], ...] = ()):
    super().__init__(message)
    self.status = status
    self.headers = headers


# How the refusals count in the judge's metrics, as their gRPC twins.
_REFUSAL_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT,
                  413: grpc.StatusCode.INVALID_ARGUMENT,
                  401: grpc.StatusCode.UNAUTHENTICATED,
                  429: grpc.StatusCode.RESOURCE_EXHAUSTED}


def _list(payload: Mapping, key: str, n: int | None,
          required: bool = True) -> list:
  value = payload.get(key)
  if value is None and not required:
    return [None] * n
  if not isinstance(value, list):
    raise Refused(f"{key}: must be a list" + (
        "" if value is not None else " (missing)"))
  if n is not None and len(value) != n:
    raise Refused(f"{key}: {len(value)} items, but query has {n}")
  return value


def _completion(query: Any, prompt: Any, i: int) -> str:
  """The response: the query after its prompt. A query whose decoding
  differs in front of the prompt (a BOS token written out) still has the
  prompt inside it; one without the prompt cannot be split and is refused."""
  if not isinstance(query, str):
    raise Refused(f"query[{i}]: must be a string")
  if not isinstance(prompt, str):
    raise Refused(f"prompts[{i}]: must be a string")
  start = query.find(prompt) if prompt else -1
  if start < 0:
    raise Refused(f"query[{i}]: does not contain prompts[{i}], so the "
                     "response cannot be told from the prompt")
  return query[start + len(prompt):]


def _label(label: Any, i: int, default_rubric_id: str) -> dict:
  """The ScoreRequest fields a label gives: a string is the reference
  answer; an object may also choose the rubric and the aggregation."""
  where = f"labels[{i}]"
  fields = {"rubric_id": default_rubric_id}
  if label is None or isinstance(label, str):
    fields["reference_answer"] = label or ""
    return fields
  if not isinstance(label, Mapping):
    raise Refused(f"{where}: must be a string, an object or null")
  unknown = sorted(set(label) - set(_LABEL_KEYS))
  if unknown:
    raise Refused(f"{where}.{unknown[0]}: unknown key (known: "
                     f"{', '.join(_LABEL_KEYS)})")
  if "rubric_id" in label and "rubric" in label:
    raise Refused(f"{where}.rubric: give rubric or rubric_id, not both")
  for key in ("reference_answer", "rubric_id", "aggregation"):
    if key in label and not isinstance(label[key], str):
      raise Refused(f"{where}.{key}: must be a string")
  fields["reference_answer"] = label.get("reference_answer", "")
  if "rubric_id" in label:
    fields["rubric_id"] = label["rubric_id"]
  if "rubric" in label:
    raw = label["rubric"]
    try:
      # A list is an RaR rubric, as RaR datasets carry them per row.
      rubric = (Rubric.from_dict(rar.convert(raw, f"{where}.rubric").rubric)
                if isinstance(raw, list)
                else Rubric.from_dict(raw, where=f"{where}.rubric"))
    except (RubricError, rar.RaRError) as e:
      raise Refused(str(e)) from None
    del fields["rubric_id"]
    fields["rubric"] = contract.rubric_to_proto(rubric)
  if "aggregation" in label:
    if label["aggregation"] not in scoring.AGGREGATIONS:
      raise Refused(f"{where}.aggregation: {label['aggregation']!r} is "
                       f"not one of {', '.join(scoring.AGGREGATIONS)}")
    fields["aggregation"] = judge_pb2.Aggregation.Value(
        label["aggregation"].upper())
  return fields


def _field_of(problem: str, i: int, label: Any) -> str:
  """A ScoreRequest field named in a validation message, as the HTTP field
  it came from."""
  name = re.match(r"[a-z_]*", problem).group()
  rest = problem[len(name):]
  if name == "prompt":
    return f"prompts[{i}]{rest}"
  if name == "completion":
    return f"query[{i}] (the response after the prompt){rest}"
  if name == "reference_answer" and not isinstance(label, Mapping):
    return f"labels[{i}]{rest}"
  return f"labels[{i}].{problem}"


def check(cfg: OpenRLHFConfig, packs: Mapping[str, Rubric]) -> None:
  """RubricError unless the default rubric is a known pack."""
  if cfg.rubric_id not in packs:
    raise RubricError(f"openrlhf.rubric_id: unknown rubric {cfg.rubric_id!r} "
                      f"(known: {', '.join(sorted(packs))})")


class RewardFace:
  """Turns /get_reward payloads into judge jobs and rewards."""

  def __init__(self, cfg: OpenRLHFConfig, scorer: service.Scorer):
    check(cfg, scorer.packs)
    self._cfg = cfg
    self._scorer = scorer

  def jobs(self, payload: Any) -> list[scoring.Job]:
    """The jobs of a payload, or BadRequest naming the first bad field."""
    if not isinstance(payload, Mapping):
      raise Refused("body: must be a JSON object")
    queries = _list(payload, "query", None)
    n, limit = len(queries), self._scorer.limits.max_requests_per_batch_call
    if n > limit:
      raise Refused(f"query: {n} items, more than "
                       f"max_requests_per_batch_call={limit}")
    prompts = _list(payload, "prompts", n)
    labels = _list(payload, "labels", n, required=False)
    call = uuid.uuid4().hex[:12]
    jobs = []
    for i, (query, prompt, label) in enumerate(zip(queries, prompts, labels)):
      completion = _completion(query, prompt, i)
      request = judge_pb2.ScoreRequest(
          rollout_id=f"openrlhf-{call}-{i}", prompt=prompt,
          completion=completion, **_label(label, i, self._cfg.rubric_id))
      try:
        jobs.append(self._scorer.validate(request))
      except service.InvalidRequest as e:
        raise Refused(_field_of(str(e), i, label)) from None
    return jobs

  async def rewards(self, payload: Any) -> dict:
    """The answer to a payload; Refused with 400 naming the first bad field,
    or 429 with Retry-After when the judge is full (as a gRPC call would
    get RESOURCE_EXHAUSTED)."""
    received = time.perf_counter()
    admission = self._scorer.admission
    try:
      with admission.call():
        jobs = self.jobs(payload)
        ticket = admission.admit(sum(map(prompt_count, jobs)))
        try:
          results = await asyncio.gather(
              *(self._scorer.score(RPC, job, received) for job in jobs))
        finally:
          ticket.release()
    except Overloaded as e:
      # Retry-After is in whole seconds; retry_after_ms is the exact hint.
      raise Refused(str(e), 429, (
          ("retry-after", str(math.ceil(e.retry_after_ms / 1000))),)) from None
    scored = [r.status == judge_pb2.SCORED for r in results]
    rewards = [r.reward if ok else self._cfg.unscorable_reward
               for r, ok in zip(results, scored)]
    return {
        "rewards": rewards,
        # OpenRLHF's dynamic filtering reads "scores", in [0, 1].
        "scores": rewards,
        "extra_logs": {"judge_scorable": list(map(float, scored))},
        "unscorable": [{"index": i, "reason": r.reason}
                       for i, (r, ok) in enumerate(zip(results, scored))
                       if not ok],
    }


class _Closed(Exception):
  """The client went away or broke HTTP; nothing more can be sent."""


class HttpServer:
  """HTTP/1.1 with keep-alive in front of a RewardFace; /get_reward needs
  one of `tokens` when there are any, /health never does."""

  def __init__(self, cfg: OpenRLHFConfig, scorer: service.Scorer,
               tokens: tuple[bytes, ...]):
    self._face = RewardFace(cfg, scorer)
    self._cfg = cfg
    self._tokens = tokens
    self._observer = scorer.observer
    self._server: asyncio.Server | None = None
    self._connections: set[asyncio.Task] = set()
    self._answering: set[asyncio.Task] = set()  # between request and reply
    self._stopping = False
    self.port = 0

  async def start(self) -> None:
    try:
      self._server = await asyncio.start_server(
          self._connection, self._cfg.host, self._cfg.port)
    except OSError as e:
      raise OSError(f"openrlhf.port: cannot listen on {self._cfg.host}:"
                    f"{self._cfg.port}: {e.strerror}") from None
    self.port = self._server.sockets[0].getsockname()[1]

  async def stop(self, grace: float | None) -> None:
    """Stops listening and drops idle connections; requests being answered
    get `grace` seconds to finish (their answers close their connections),
    then are dropped too."""
    self._stopping = True
    self._server.close()
    await self._server.wait_closed()
    for task in self._connections - self._answering:
      task.cancel()
    if self._answering:
      await asyncio.wait(self._answering, timeout=grace)
    for task in self._connections:
      task.cancel()

  async def _connection(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
    self._connections.add(asyncio.current_task())
    conn = h11.Connection(h11.SERVER,
                          max_incomplete_event_size=_MAX_HEADER_BYTES)
    try:
      while conn.our_state is not h11.MUST_CLOSE:
        event = await self._next(conn, reader)
        if not isinstance(event, h11.Request):
          break
        self._answering.add(asyncio.current_task())
        status, body, headers = await self._answer(conn, reader, event)
        self._send(conn, writer, status, body, headers)
        await writer.drain()
        self._answering.discard(asyncio.current_task())
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
          conn.start_next_cycle()
    except h11.RemoteProtocolError as e:
      if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
        self._send(conn, writer, e.error_status_hint,
                   {"error": f"http: {e}"})
    except (_Closed, ConnectionError, TimeoutError):
      pass
    finally:
      self._connections.discard(asyncio.current_task())
      self._answering.discard(asyncio.current_task())
      writer.close()

  async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader):
    while True:
      event = conn.next_event()
      if event is not h11.NEED_DATA:
        return event
      try:
        data = await asyncio.wait_for(reader.read(_READ_CHUNK),
                                      self._cfg.read_timeout_s)
      except TimeoutError:
        raise _Closed() from None
      conn.receive_data(data)

  async def _body(self, conn: h11.Connection, reader: asyncio.StreamReader,
                  request: h11.Request) -> bytes:
    limit = self._cfg.max_body_bytes
    for name, value in request.headers:
      if name == b"content-length" and int(value) > limit:
        raise Refused(f"body: {int(value)} bytes, more than "
                         f"openrlhf.max_body_bytes={limit}", 413)
    chunks, size = [], 0
    while True:
      event = await self._next(conn, reader)
      if isinstance(event, h11.EndOfMessage):
        return b"".join(chunks)
      if not isinstance(event, h11.Data):
        raise _Closed()
      size += len(event.data)
      if size > limit:
        raise Refused(f"body: more than openrlhf.max_body_bytes={limit} "
                         "bytes", 413)
      chunks.append(event.data)

  def _authorize(self, request: h11.Request) -> None:
    """Refused (401) unless the request carries one of the tokens; the body
    of a refused request is never read."""
    if not self._tokens:
      return
    values = [v for k, v in request.headers if k == b"authorization"]
    problem = security.token_problem(
        self._tokens, values[0].decode("latin-1") if values else None)
    if problem:
      raise Refused(problem, 401, (("www-authenticate", "Bearer"),))

  async def _answer(self, conn: h11.Connection, reader: asyncio.StreamReader,
                    request: h11.Request) -> tuple[int, dict, tuple]:
    """(status, JSON body, extra headers) of the answer to `request`."""
    path = request.target.split(b"?")[0].decode("ascii", "replace")
    if path == HEALTH_PATH and request.method == b"GET":
      return 200, {"status": "serving"}, ()
    if path != PATH:
      return 404, {"error": f"path: {path} is not served; POST {PATH}"}, ()
    if request.method != b"POST":
      return 405, {"error": f"method: {request.method.decode()} {PATH}; use "
                            "POST"}, ()
    try:
      self._authorize(request)
      body = await self._body(conn, reader, request)
      try:
        payload = json.loads(body)
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Refused(f"body: not JSON: {e}") from None
      return 200, await self._face.rewards(payload), ()
    except Refused as e:
      self._observer.refused(RPC, _REFUSAL_CODES[e.status], str(e))
      return e.status, {"error": str(e)}, e.headers

  def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter,
            status: int, payload: dict, extra_headers=()) -> None:
    body = json.dumps(payload).encode()
    headers = [("content-type", "application/json"),
               ("content-length", str(len(body))), *extra_headers]
    if conn.their_state is not h11.DONE or self._stopping:
      # The request's body was not read to its end, so the connection cannot
      # carry another request; or the server is stopping, and this answer
      # is the connection's last.
      headers.append(("connection", "close"))
    writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
    writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))


async def start(cfg: OpenRLHFConfig, scorer: service.Scorer,
                tokens: tuple[bytes, ...]) -> HttpServer:
  """Serves /get_reward on cfg.host:cfg.port (which must not be 0)."""
  server = HttpServer(cfg, scorer, tokens)
  await server.start()
  return server
