"""What the judge tells its operators: Prometheus metrics over HTTP (HTTPS
with the judge's tls section) and a log line per result and per refused
call.

Each server has its own CollectorRegistry, so several judges in one process
(tests, the trainer's in-process placement) keep their numbers apart.
"""

import datetime
import json
import logging
import socket
import ssl
import sys
import threading
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler

import grpc
import prometheus_client
from prometheus_client.exposition import ThreadingWSGIServer

from judge_server.backends.base import Backend, Judgement
from judge_server.config import MetricsConfig
from protos import judge_pb2

LOGGER = logging.getLogger("grar.judge")
# Quiet unless the process configures logging (configure_logging does for
# the standalone server; in the trainer's process the trainer decides).
LOGGER.addHandler(logging.NullHandler())

# Why a call or a rollout failed. infrastructure: the judge model could not
# be asked or did not answer; unparseable: it answered with nothing a score
# can come from; the others are the status codes of refused calls.
ERROR_CLASSES = ("infrastructure", "unparseable", "invalid_argument",
                 "unauthenticated", "resource_exhausted", "unimplemented",
                 "unavailable")
# unimplemented: TokenLogprobs of a backend that gives none; unavailable:
# of one whose tokenizer cannot be read just now.
_REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT: "invalid_argument",
             grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
             grpc.StatusCode.RESOURCE_EXHAUSTED: "resource_exhausted",
             grpc.StatusCode.UNIMPLEMENTED: "unimplemented",
             grpc.StatusCode.UNAVAILABLE: "unavailable"}
# Why the HTTP face closed a connection its client had not closed:
# max_connections, one too many; deadline, a request that had not arrived
# within openrlhf.header_deadline_s.
DROP_REASONS = ("max_connections", "deadline")
# From a cache hit (well under a millisecond) to a long queue on a 12B judge.
_LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5,
                    10, 30, 60, 120)


def unscorable_class(reason: str) -> str:
  return "infrastructure" if "infrastructure: " in reason else "unparseable"


class Metrics:
  """The judge's metrics. The cache increments cache_hits / cache_misses
  once per judge prompt it answers / passes on to the backend."""

  def __init__(self, depth: Callable[[], int]):
    self.registry = prometheus_client.CollectorRegistry()
    kw = {"registry": self.registry}
    self.result_latency = prometheus_client.Histogram(
        "grar_judge_result_latency_seconds",
        "From receipt of a rollout to its result", ("backend", "status"),
        buckets=_LATENCY_BUCKETS, **kw)
    self.backend_latency = prometheus_client.Histogram(
        "grar_judge_backend_call_seconds", "One backend call (one batch)",
        ("backend",), buckets=_LATENCY_BUCKETS, **kw)
    self.batch_size = prometheus_client.Histogram(
        "grar_judge_batch_size", "Judge prompts per backend call",
        ("backend",), buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), **kw)
    self.queue_depth = prometheus_client.Gauge(
        "grar_judge_queue_depth", "Judge prompts taken on, not yet judged",
        **kw)
    self.queue_depth.set_function(depth)
    self.cache_hits = prometheus_client.Counter(
        "grar_judge_cache_hits", "Judge prompts answered from the cache", **kw)
    self.cache_misses = prometheus_client.Counter(
        "grar_judge_cache_misses", "Judge prompts the cache sent on", **kw)
    self.results = prometheus_client.Counter(
        "grar_judge_results", "Rollouts answered, by status", ("status",),
        **kw)
    self.errors = prometheus_client.Counter(
        "grar_judge_errors",
        "Unscorable rollouts and refused calls, by class", ("class",), **kw)
    self.http_connections = prometheus_client.Gauge(
        "grar_judge_http_connections", "Connections open to the HTTP face",
        **kw)
    self.http_dropped = prometheus_client.Counter(
        "grar_judge_http_connections_dropped",
        "Connections the HTTP face closed unasked, by reason", ("reason",),
        **kw)
    for name in ERROR_CLASSES:  # present from the start, at 0
      self.errors.labels(name)
    for status in ("scored", "unscorable"):
      self.results.labels(status)
    for reason in DROP_REASONS:
      self.http_dropped.labels(reason)


class InstrumentedBackend(Backend):
  """`backend`, timing each call and counting its batch size."""

  def __init__(self, backend: Backend, metrics: Metrics):
    self._backend = backend
    self.name, self.model = backend.name, backend.model
    self.max_batch = backend.max_batch
    self.max_calls_in_flight = backend.max_calls_in_flight
    self._latency = metrics.backend_latency.labels(backend.name)
    self._batch_size = metrics.batch_size.labels(backend.name)

  @property
  def identity(self) -> str:
    return self._backend.identity

  async def judge(self, prompts: list[str]) -> list[Judgement]:
    self._batch_size.observe(len(prompts))
    with self._latency.time():
      return await self._backend.judge(prompts)

  async def close(self) -> None:
    await self._backend.close()


class Observer:
  """Counts and logs what the service does."""

  def __init__(self, backend_name: str, depth: Callable[[], int]):
    self.metrics = Metrics(depth)
    self._backend = backend_name

  def result(self, rpc: str, result: judge_pb2.ScoreResult
             | judge_pb2.LogprobsResult) -> None:
    status = judge_pb2.Status.Name(result.status).lower()
    m = self.metrics
    m.results.labels(status).inc()
    m.result_latency.labels(self._backend, status).observe(
        result.latency_ms / 1000)
    fields = {"rpc": rpc, "rollout_id": result.rollout_id, "status": status,
              "latency_ms": round(result.latency_ms, 3)}
    if result.status == judge_pb2.SCORED:
      if isinstance(result, judge_pb2.ScoreResult):
        fields["reward"] = result.reward
      else:
        fields["tokens"] = len(result.logprobs)
    else:
      m.errors.labels(unscorable_class(result.reason)).inc()
      fields["reason"] = result.reason
    LOGGER.info("result", extra={"fields": fields})

  def refused(self, rpc: str, code: grpc.StatusCode, details: str) -> None:
    self.metrics.errors.labels(_REFUSALS[code]).inc()
    LOGGER.warning("refused", extra={"fields": {
        "rpc": rpc, "status": code.name.lower(), "details": details}})

  def unauthenticated(self, method: str) -> None:
    self.refused(method, grpc.StatusCode.UNAUTHENTICATED,
                 "missing or unknown bearer token")


class _QuietHandler(WSGIRequestHandler):
  def log_message(self, format, *args) -> None:
    """A line per scrape would drown the judge's own lines."""


class _MetricsServer(ThreadingWSGIServer):
  """prometheus_client's metrics server (start_http_server's), but with
  TLS in each connection's own thread: its handshake happens at the first
  read, so a client that never finishes one holds that thread only, not
  the accept loop (prometheus_client's own TLS handshakes in accept)."""

  def __init__(self, config: MetricsConfig, registry,
               context: ssl.SSLContext | None):
    # IPv6 hosts too: the address family of the host, as prometheus_client.
    self.address_family = socket.getaddrinfo(
        config.host, config.port, type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE)[0][0]
    self._context = context
    super().__init__((config.host, config.port), _QuietHandler)
    self.set_app(prometheus_client.make_wsgi_app(registry))

  def get_request(self):
    sock, address = super().get_request()
    if self._context:
      sock = self._context.wrap_socket(sock, server_side=True,
                                       do_handshake_on_connect=False)
    return sock, address

  def handle_error(self, request, client_address) -> None:
    """A failed handshake or a client gone is the client's business."""
    if not isinstance(sys.exc_info()[1], OSError):
      super().handle_error(request, client_address)


def serve_metrics(config: MetricsConfig, registry,
                  context: ssl.SSLContext | None = None) -> Callable[[], None]:
  """Serves /metrics when config.port is set, over HTTPS with `context`
  (security.ssl_context); returns what stops it."""
  if not config.port:
    return lambda: None
  try:
    httpd = _MetricsServer(config, registry, context)
  except OSError as e:
    raise OSError(f"metrics: cannot listen on {config.host}:{config.port}: "
                  f"{e.strerror}") from None
  thread = threading.Thread(target=httpd.serve_forever, name="grar-metrics",
                            daemon=True)
  thread.start()

  def stop() -> None:
    httpd.shutdown()
    httpd.server_close()
    thread.join()
  return stop


class JsonFormatter(logging.Formatter):
  """One JSON object per line: time, level, logger, message, and the
  record's `fields` (rollout_id, status, latency_ms, ...)."""

  def format(self, record: logging.LogRecord) -> str:
    entry = {
        "time": datetime.datetime.fromtimestamp(
            record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"),
        "level": record.levelname.lower(), "logger": record.name,
        "message": record.getMessage(), **getattr(record, "fields", {})}
    if record.exc_info:
      entry["exception"] = self.formatException(record.exc_info)
    return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
  """`TIME LEVEL LOGGER: message key=value ...` for people."""

  def __init__(self):
    super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

  def format(self, record: logging.LogRecord) -> str:
    fields = getattr(record, "fields", {})
    line = super().format(record)
    return " ".join([line, *(f"{k}={v}" for k, v in fields.items())])


def configure_logging(log_format: str, stream=None) -> None:
  """Sends every log record of the process to `stream` (stderr) in
  `log_format`; the judge's own at INFO, other libraries' at WARNING."""
  handler = logging.StreamHandler(stream or sys.stderr)
  handler.setFormatter(JsonFormatter() if log_format == "json"
                       else TextFormatter())
  root = logging.getLogger()
  root.handlers[:] = [handler]
  root.setLevel(logging.WARNING)
  LOGGER.setLevel(logging.INFO)
