"""Starting and stopping the judge's gRPC server.

`start` serves on the caller's event loop (the standalone server);
`run_in_thread` serves on a loop of its own in a daemon thread, for the
trainer's in-process placement, where the judge backend lives on the judge
mesh of the trainer's process and is still reached over loopback gRPC.
"""

import asyncio
import dataclasses
import pathlib
import threading

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from judge_server import rubric as rubric_lib
from judge_server import service
from judge_server.backends.base import Backend
from judge_server.batching import MicroBatcher
from judge_server.config import JudgeConfig
from protos import judge_pb2, judge_pb2_grpc

SERVICE_NAME = judge_pb2.DESCRIPTOR.services_by_name["JudgeService"].full_name
# A ScoreBatch call of max_requests_per_batch_call long rollouts is well over
# gRPC's default 4 MiB.
MAX_MESSAGE_BYTES = 64 << 20


def load_packs(rubric_dir: str) -> dict[str, rubric_lib.Rubric]:
  """The shipped rubric packs, plus those of `rubric_dir` when given."""
  packs = rubric_lib.load_packs()
  if not rubric_dir:
    return packs
  directory = pathlib.Path(rubric_dir)
  if not directory.is_dir():
    raise rubric_lib.RubricError(f"rubric_dir: {rubric_dir}: not a directory")
  for rid, rubric in rubric_lib.load_packs(directory).items():
    if rid in packs:
      raise rubric_lib.RubricError(
          f"rubric_dir: {rubric_dir}: rubric {rid!r} is also a shipped pack")
    packs[rid] = rubric
  return packs


def _address(host: str, port: int) -> str:
  return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclasses.dataclass
class Handle:
  """A serving judge. `stop` finishes in-flight work within `grace` seconds,
  then judges what was already submitted; the backend stays the caller's."""
  port: int
  address: str
  _server: grpc.aio.Server
  _health: health.aio.HealthServicer
  _batcher: MicroBatcher

  async def stop(self, grace: float | None = 30.0) -> None:
    await self._health.enter_graceful_shutdown()
    await self._server.stop(grace)
    await self._batcher.close()


async def start(config: JudgeConfig, backend: Backend) -> Handle:
  """Serves JudgeService and grpc.health.v1 on config.host:config.port."""
  packs = load_packs(config.rubric_dir)
  batcher = MicroBatcher(backend, backend.max_batch, config.max_wait_ms / 1000)
  server = grpc.aio.server(options=[
      ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
      ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
      # A second judge on a port in use must fail, not share the traffic.
      ("grpc.so_reuseport", 0)])
  judge_pb2_grpc.add_JudgeServiceServicer_to_server(
      service.JudgeServicer(backend, batcher, packs, config.limits,
                            config.default_aggregation), server)
  health_servicer = health.aio.HealthServicer()
  health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
  wanted = _address(config.host, config.port)
  try:
    port = server.add_insecure_port(wanted)
  except RuntimeError:  # grpc's way of saying the bind failed
    raise OSError(f"cannot listen on {wanted} (in use, or not an address "
                  "of this machine)") from None
  batcher.start()
  await server.start()
  for name in ("", SERVICE_NAME):
    await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
  return Handle(port, _address(config.host, port), server, health_servicer,
                batcher)


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
