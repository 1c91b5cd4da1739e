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

The face speaks HTTPS when the judge's tls section is set, with client
certificates required when it names client_ca_file, as gRPC does.

HTTP is aiohttp's low-level server: one maintained package that is both
the HTTP server and the request/response layer, that runs in the judge's
own event loop (no second server lifecycle, no signal handlers taken over)
and whose protocol factory is ours to wrap, which the header deadline
needs: a request still trickling in never reaches a handler, so only the
transport can see its time run out (_Connection). So clients hold at most
max_connections connections in all, each for header_deadline_s per
request on top of the judge's time, and max_requests_per_connection
requests.
"""

import asyncio
import json
import logging
import math
import re
import ssl
import time
import uuid
from typing import Any, Mapping

from aiohttp import http_exceptions, web
import grpc

from judge_server import rar, scoring, security, service
from judge_server.config import OpenRLHFConfig
from judge_server.limits import Overloaded, prompt_count
from protos.rubric import Rubric, RubricError
from protos import contract, judge_pb2

PATH = "/get_reward"
HEALTH_PATH = "/health"
RPC = "get_reward"  # the name metrics and logs give this face's calls
_LABEL_KEYS = ("reference_answer", "rubric_id", "rubric", "aggregation")


class _NotParsed(logging.Filter):
  """aiohttp logs a request it cannot parse as an error, traceback and
  all; it is the client's, answered 400, and a client sending nonsense
  must not fill the judge's log. Failures of the face's own stay logged."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(
        record.exc_info[1], http_exceptions.HttpProcessingError))


_AIOHTTP_LOGGER = logging.getLogger("grar.judge.http")
_AIOHTTP_LOGGER.addFilter(_NotParsed())


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


class _Connection(asyncio.Protocol):
  """One client connection: aiohttp's protocol for it (`http`), behind the
  header deadline. Its timer, armed when the connection opens, closes the
  connection unless the request has been read by then (`read`); each
  answer arms it again for the next request (`answered`)."""

  def __init__(self, server: "HttpServer"):
    self._server = server
    self._transport: asyncio.Transport | None = None
    self._timer: asyncio.TimerHandle | None = None
    self.http: asyncio.Protocol | None = None  # None: refused, or closed
    self.requests = 0

  def connection_made(self, transport: asyncio.Transport) -> None:
    self._transport = transport
    self.http = self._server.admit(self)
    if not self.http:
      transport.abort()  # at once: a TLS close could wait on the client
      return
    self.answered()
    self.http.connection_made(transport)

  def read(self) -> None:
    """The request has arrived: the rest is the judge's time."""
    if self._timer:
      self._timer.cancel()
      self._timer = None

  def answered(self) -> None:
    """The next request's time starts now."""
    self.read()
    if self.http:
      self._timer = asyncio.get_running_loop().call_later(
          self._server.deadline_s, self._expire)

  def _expire(self) -> None:
    self._timer = None
    self._server.dropped("deadline")
    self._transport.abort()

  def data_received(self, data: bytes) -> None:
    if self.http:
      self.http.data_received(data)

  def eof_received(self) -> bool | None:
    return self.http.eof_received() if self.http else None

  def pause_writing(self) -> None:
    self.http.pause_writing()

  def resume_writing(self) -> None:
    self.http.resume_writing()

  def connection_lost(self, exc: Exception | None) -> None:
    self.read()
    if self.http:
      http, self.http = self.http, None
      self._server.closed(http)
      http.connection_lost(exc)


class HttpServer:
  """HTTP/1.1 with keep-alive in front of a RewardFace; /get_reward needs
  one of `tokens` when there are any, /health never does."""

  def __init__(self, cfg: OpenRLHFConfig, scorer: service.Scorer,
               tokens: security.TokenSet,
               context: ssl.SSLContext | None = None):
    self._face = RewardFace(cfg, scorer)
    self._cfg = cfg
    self._tokens = tokens  # a TokenSet: token_problem sees the file's now
    self._context = context
    self._observer = scorer.observer
    self._metrics = scorer.observer.metrics
    self.deadline_s = cfg.header_deadline_s
    self._listener: asyncio.Server | None = None
    self._web: web.Server | None = None
    self._open: dict[asyncio.Protocol, _Connection] = {}  # by their http
    self._stopping = False
    self.port = 0

  async def start(self) -> None:
    # lingering_time: a refused request's unread body is read (and dropped)
    # for so long, so that its client gets to read the answer; the deadline
    # bounds it as well.
    self._web = web.Server(
        self._handle, keepalive_timeout=self._cfg.keepalive_timeout_s,
        lingering_time=self._cfg.header_deadline_s, access_log=None,
        logger=_AIOHTTP_LOGGER)
    loop = asyncio.get_running_loop()
    try:
      self._listener = await loop.create_server(
          lambda: _Connection(self), self._cfg.host, self._cfg.port,
          ssl=self._context,
          **({"ssl_handshake_timeout": self._cfg.header_deadline_s,
              "ssl_shutdown_timeout": self._cfg.header_deadline_s}
             if self._context else {}))
    except OSError as e:
      raise OSError(f"openrlhf.port: cannot listen on {self._cfg.host}:"
                    f"{self._cfg.port}: {e.strerror}") from None
    self.port = self._listener.sockets[0].getsockname()[1]

  async def stop(self, grace: float | None) -> None:
    """Stops listening and drops idle connections; requests being answered
    get `grace` seconds to finish (their answers close their connections),
    then are dropped too."""
    self._stopping = True
    self._listener.close()
    self._web.pre_shutdown()
    await self._web.shutdown(grace)
    await self._listener.wait_closed()

  def admit(self, connection: _Connection) -> asyncio.Protocol | None:
    """aiohttp's protocol for a new connection; None when max_connections
    are open already."""
    if len(self._open) >= self._cfg.max_connections:
      self.dropped("max_connections")
      return None
    http = self._web()
    self._open[http] = connection
    self._metrics.http_connections.inc()
    return http

  def closed(self, http: asyncio.Protocol) -> None:
    del self._open[http]
    self._metrics.http_connections.dec()

  def dropped(self, reason: str) -> None:
    self._metrics.http_dropped.labels(reason).inc()

  async def _handle(self, request: web.BaseRequest) -> web.Response:
    connection = self._open.get(request.protocol)
    if connection is None:  # closed between its request's arrival and now
      raise web.HTTPServiceUnavailable()
    connection.requests += 1
    try:
      status, payload, headers = await self._answer(request, connection)
    except (ConnectionError, web.RequestPayloadError):
      # The client went, or its deadline closed the connection, mid-body.
      # An HTTP error, unlike any other exception, is not logged as the
      # face's failure; and there is nobody to send it to.
      raise web.HTTPServiceUnavailable() from None
    finally:
      connection.answered()
    response = web.Response(status=status, body=json.dumps(payload).encode(),
                            content_type="application/json", headers=headers)
    if (not request.content.is_eof() or self._stopping
        or connection.requests >= self._cfg.max_requests_per_connection):
      # The request's body was not read to its end, so the connection cannot
      # carry another request; or the server is stopping; or the connection
      # has served its share: this answer is its last.
      response.force_close()
    return response

  async def _body(self, request: web.BaseRequest) -> bytes:
    limit = self._cfg.max_body_bytes
    if (request.content_length or 0) > limit:
      raise Refused(f"body: {request.content_length} bytes, more than "
                       f"openrlhf.max_body_bytes={limit}", 413)
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
      size += len(chunk)
      if size > limit:
        raise Refused(f"body: more than openrlhf.max_body_bytes={limit} "
                         "bytes", 413)
      chunks.append(chunk)
    return b"".join(chunks)

  def _authorize(self, request: web.BaseRequest) -> None:
    """Refused (401) unless the request carries one of the tokens; the body
    of a refused request is never read."""
    if not self._tokens:
      return
    problem = security.token_problem(
        self._tokens, request.headers.get("authorization"))
    if problem:
      raise Refused(problem, 401, (("www-authenticate", "Bearer"),))

  async def _answer(self, request: web.BaseRequest,
                    connection: _Connection) -> tuple[int, dict, tuple]:
    """(status, JSON body, extra headers) of the answer to `request`."""
    path = request.path
    if path == HEALTH_PATH and request.method == "GET":
      return 200, {"status": "serving"}, ()
    if path != PATH:
      return 404, {"error": f"path: {path} is not served; POST {PATH}"}, ()
    if request.method != "POST":
      return 405, {"error": f"method: {request.method} {PATH}; use "
                            "POST"}, ()
    try:
      self._authorize(request)
      body = await self._body(request)
      connection.read()
      try:
        payload = json.loads(body)
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Refused(f"body: not JSON: {e}") from None
      return 200, await self._face.rewards(payload), ()
    except Refused as e:
      self._observer.refused(RPC, _REFUSAL_CODES[e.status], str(e))
      return e.status, {"error": str(e)}, e.headers


def reported_limits(cfg: OpenRLHFConfig) -> dict[str, float]:
  """The face's limits as GetInfo reports them (judge_pb2.Limits'
  openrlhf_* fields); none when the face is off."""
  if not cfg.port:
    return {}
  return {f"openrlhf_{name}": getattr(cfg, name) for name in (
      "max_body_bytes", "max_connections", "max_requests_per_connection",
      "header_deadline_s", "keepalive_timeout_s")}


async def start(cfg: OpenRLHFConfig, scorer: service.Scorer,
                tokens: security.TokenSet,
                context: ssl.SSLContext | None = None) -> HttpServer:
  """Serves /get_reward on cfg.host:cfg.port (which must not be 0), over
  HTTPS with `context` (security.ssl_context)."""
  server = HttpServer(cfg, scorer, tokens, context)
  await server.start()
  return server
