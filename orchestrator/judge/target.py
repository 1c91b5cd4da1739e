"""Where a run's judge is, by `judge.placement`, and a client that is ready
to use it: what GRPO and evaluation both start with.

in-process: the backend on this process's judge mesh behind a loopback gRPC
server; subprocess: the judge server launched on the next devices; ray: its
replicas as actors; remote: only the address.
"""

import contextlib
import dataclasses
import pathlib
import time
from typing import Callable

import jax

from judge_server import server as judge_server_lib
from judge_server.backends import factory as backend_factory
from orchestrator.judge import client as judge_client_lib
from orchestrator.judge import pool as judge_pool
from orchestrator.judge import process as judge_process

_PLATFORMS = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "tpu": "tpu"}


class JudgeNotReady(RuntimeError):
  """The judge did not answer its health check in judge.timeout_s."""


@contextlib.contextmanager
def judge_target(cfg, judge_mesh, run_dir: pathlib.Path):
  """Yields the judge's address, starting the judge first unless remote;
  placement ray: its replicas (replicas.Replicas). cfg: a config with model,
  mesh and judge sections (a run's or an evaluation's)."""
  if cfg.judge.placement == "remote":
    yield cfg.judge.target
    return
  if cfg.judge.placement == "ray":
    from orchestrator.judge import replicas  # ray only where a run uses it
    with replicas.started(cfg, run_dir.name) as serving:
      yield serving
    return
  server_cfg = cfg.judge.server
  if cfg.judge.placement == "subprocess":
    backend_cfg = dataclasses.replace(server_cfg.backend, mesh=cfg.mesh.judge)
    with judge_process.launched(
        dataclasses.replace(server_cfg, backend=backend_cfg),
        _PLATFORMS[jax.devices()[0].platform],
        first_device=cfg.mesh.policy.size, run_dir=run_dir,
        timeout_s=cfg.judge.startup_timeout_s) as address:
      yield address
    return
  backend = backend_factory.build(server_cfg.backend, judge_mesh)
  with judge_server_lib.on_loopback(server_cfg, backend) as address:
    yield address


def judge_client(cfg, target):
  """The client of judge_target's target: a pool over Ray replicas, each
  found anew when Ray restarts it."""
  if cfg.judge.placement == "ray":
    return judge_pool.JudgePool(target.addresses, cfg.judge.timeout_s,
                                cfg.judge.client, locate=target.locate)
  return judge_client_lib.JudgeClient(target, cfg.judge.timeout_s,
                                      cfg.judge.client)


@contextlib.contextmanager
def connected(cfg, judge_mesh, run_dir: pathlib.Path,
              say: Callable[[str], None]):
  """Yields a client of the run's judge once it answers; raises
  JudgeNotReady when it does not within judge.timeout_s."""
  t0 = time.monotonic()
  with judge_target(cfg, judge_mesh, run_dir) as target, \
      judge_client(cfg, target) as client:
    try:
      client.wait_ready(cfg.judge.timeout_s)
    except TimeoutError as e:
      raise JudgeNotReady(f"{e}; start the judge server or fix judge.target"
                          ) from None
    say(f"judge ready at {client.target} ({time.monotonic() - t0:.0f} s)")
    yield client
