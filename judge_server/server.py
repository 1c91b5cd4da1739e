"""Starting and stopping the judge's gRPC server, and beside it the
OpenRLHF HTTP face when configured (judge_server.http_face).

`start` serves on the caller's event loop (the standalone server);
`run_in_thread` serves on a loop of its own in a daemon thread, for the
trainer's in-process placement, where the judge backend lives on the judge
mesh of the trainer's process and is still reached over loopback gRPC.
"""

import asyncio
import contextlib
import dataclasses
import pathlib
import threading
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from judge_server import cache as cache_lib
from judge_server import http_face
from judge_server import limits
from judge_server import observability
from judge_server import resilience
from judge_server import packs as packs_lib
from protos.rubric import Rubric, RubricError
from judge_server import security
from judge_server import service
from judge_server import teacher as teacher_lib
from judge_server.backends.base import Backend
from judge_server.batching import MicroBatcher
from judge_server.config import JudgeConfig
from grar_config.strict import ConfigError
from protos import contract, judge_pb2_grpc



def load_packs(rubric_dir: str) -> dict[str, Rubric]:
  """The shipped rubric packs, plus those of `rubric_dir` when given."""
  packs = packs_lib.load_packs()
  if not rubric_dir:
    return packs
  directory = pathlib.Path(rubric_dir)
  if not directory.is_dir():
    raise RubricError(f"rubric_dir: {rubric_dir}: not a directory")
  for rid, rubric in packs_lib.load_packs(directory).items():
    if rid in packs:
      raise RubricError(
          f"rubric_dir: {rubric_dir}: rubric {rid!r} is also a shipped pack")
    packs[rid] = rubric
  return packs


def _address(host: str, port: int) -> str:
  return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclasses.dataclass
class Handle:
  """A serving judge. `stop` finishes in-flight work of both faces within
  `grace` seconds, then judges what was already submitted; the backend
  stays the caller's. `metrics` holds its Prometheus metrics, served over
  HTTP (HTTPS with config.tls) when config.metrics.port is set; `openrlhf_port` is the HTTP face's
  port, 0 when it is off."""
  port: int
  address: str
  metrics: observability.Metrics
  openrlhf_port: int
  _server: grpc.aio.Server
  _face: http_face.HttpServer | None
  _health: health.aio.HealthServicer
  _batchers: tuple[MicroBatcher, ...]
  _stop_metrics: Callable[[], None]
  _tokens: security.TokenSet

  def reload_tokens(self) -> None:
    """Reads auth.token_file again now (the standalone server's SIGHUP);
    without it a changed file is seen within security.CHECK_INTERVAL_S of
    the next call. Call it on the server's event loop."""
    self._tokens.reload()

  async def stop(self, grace: float | None = 30.0) -> None:
    await self._health.enter_graceful_shutdown()
    await asyncio.gather(self._server.stop(grace),
                         *([self._face.stop(grace)] if self._face else []))
    for batcher in self._batchers:
      await batcher.close()
    self._stop_metrics()


def check(config: JudgeConfig) -> None:
  """Raises what `start` would for the rubric packs, the OpenRLHF face's
  rubric, the token and TLS files and the cache's file, so a bad config
  fails before a slow backend is built."""
  packs = load_packs(config.rubric_dir)
  if config.openrlhf.port:
    http_face.check(config.openrlhf, packs)
  security.load_tokens(config.auth)
  security.server_credentials(config.tls)
  security.ssl_context(config.tls)
  cache_lib.check(config.cache)


async def start(config: JudgeConfig, backend: Backend) -> Handle:
  """Serves JudgeService, grpc.health.v1 and server reflection on
  config.host:config.port, metrics on config.metrics and OpenRLHF's
  /get_reward on config.openrlhf; the two faces share admission, auth,
  metrics and logs."""
  if backend.answer != config.backend.criteria.format:
    # Prompts in one format read as the other give confident nonsense.
    raise ConfigError(
        f"backend.criteria.format: {config.backend.criteria.format!r}, but "
        f"the backend given reads {backend.answer!r} answers")
  packs = load_packs(config.rubric_dir)
  admission = limits.Admission(config.limits)
  observer = observability.Observer(backend.name, lambda: admission.depth)
  tokens = security.TokenSet(config.auth)  # re-read when the file changes
  credentials = security.server_credentials(config.tls)
  context = security.ssl_context(config.tls)  # the HTTP ports' TLS
  # Metrics time each try; deadlines, retries and the breaker wrap the tries.
  batcher = MicroBatcher(
      resilience.Resilient(
          observability.InstrumentedBackend(backend, observer.metrics),
          config.backend.resilience),
      backend.max_batch, config.max_wait_ms / 1000,
      backend.max_calls_in_flight,
      cache_lib.build(config.cache, backend.identity, observer.metrics))
  server = grpc.aio.server(
      # Credentials first: an unauthenticated caller's bytes are not read.
      interceptors=[*security.interceptors(tokens, observer.unauthenticated),
                    service.StrictDecoding(observer)],
      options=[
          ("grpc.max_receive_message_length", config.limits.max_message_bytes),
          ("grpc.max_send_message_length", config.limits.max_message_bytes),
          # A second judge on a port in use must fail, not share the traffic.
          ("grpc.so_reuseport", 0)])
  # The teacher's own batcher, retries and breaker: a slow log-prob call
  # must not hold judge prompts back, nor trip scoring's breaker.
  teacher_batcher = MicroBatcher(
      resilience.Resilient(
          observability.InstrumentedBackend(
              teacher_lib.TeacherFace(backend), observer.metrics),
          config.backend.resilience),
      backend.max_batch, config.max_wait_ms / 1000,
      backend.max_calls_in_flight)
  scorer = service.Scorer(batcher, packs, config.limits,
                          config.default_aggregation, admission, observer,
                          config.backend.criteria)
  judge_pb2_grpc.add_JudgeServiceServicer_to_server(
      service.JudgeServicer(
          backend, scorer, http_face.reported_limits(config.openrlhf),
          teacher_lib.Teacher(backend, teacher_batcher, config.limits,
                              observer)),
      server)
  health_servicer = health.aio.HealthServicer()
  health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
  reflection.enable_server_reflection(
      (contract.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
  wanted = _address(config.host, config.port)
  try:
    port = (server.add_secure_port(wanted, credentials) if credentials
            else server.add_insecure_port(wanted))
  except RuntimeError:  # grpc's way of saying the bind failed
    raise OSError(f"cannot listen on {wanted} (in use, or not an address "
                  "of this machine)") from None
  async with contextlib.AsyncExitStack() as undo:  # unwound on a failure
    stop_metrics = observability.serve_metrics(
        config.metrics, observer.metrics.registry, context)
    undo.callback(stop_metrics)
    for each in (batcher, teacher_batcher):
      each.start()
      undo.push_async_callback(each.close)
    await server.start()
    undo.push_async_callback(server.stop, None)
    face = None
    if config.openrlhf.port:
      face = await http_face.start(config.openrlhf, scorer, tokens,
                                   context)
    for name in ("", contract.SERVICE_NAME):
      await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    undo.pop_all()
  return Handle(port, _address(config.host, port), observer.metrics,
                face.port if face else 0, server, face, health_servicer,
                (batcher, teacher_batcher), stop_metrics, tokens)


class ThreadedServer:
  """A judge server on its own event loop in a daemon thread."""

  def __init__(self, config: JudgeConfig, backend: Backend):
    self._loop = asyncio.new_event_loop()
    self._thread = threading.Thread(
        target=self._loop.run_forever, name="grar-judge", daemon=True)
    self._thread.start()
    try:
      self._handle = asyncio.run_coroutine_threadsafe(
          start(config, backend), self._loop).result()
    except BaseException:
      self._shut_loop()
      raise
    self.port = self._handle.port
    self.address = self._handle.address
    self.metrics = self._handle.metrics
    self.openrlhf_port = self._handle.openrlhf_port

  def stop(self, grace: float | None = 30.0) -> None:
    """Blocks until in-flight work is done (or `grace` ran out)."""
    try:
      asyncio.run_coroutine_threadsafe(
          self._handle.stop(grace), self._loop).result()
    finally:
      self._shut_loop()

  def _shut_loop(self) -> None:
    self._loop.call_soon_threadsafe(self._loop.stop)
    self._thread.join()
    self._loop.close()


def run_in_thread(config: JudgeConfig, backend: Backend) -> ThreadedServer:
  return ThreadedServer(config, backend)


@contextlib.contextmanager
def on_loopback(config: JudgeConfig, backend: Backend):
  """A judge server of `config` with `backend` on 127.0.0.1 (any free port)
  in this process, for a caller that reaches it over gRPC like any other
  judge; yields its address and stops it on exit."""
  handle = run_in_thread(
      dataclasses.replace(config, host="127.0.0.1", port=0), backend)
  try:
    yield handle.address
  finally:
    handle.stop()
