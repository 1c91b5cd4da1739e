"""Judge replicas: the real judge gRPC server, each in a Ray actor.

A replica builds its backend (on its own devices, or in front of an HTTP
endpoint) and serves on its node's address; the trainer reaches the replicas
over gRPC through orchestrator.judge.pool, exactly as it reaches any judge.
Ray restarts a replica whose process died (ray.judge_replica_restarts
times); it serves on a new port, which `Replicas.locate` finds.
"""

import contextlib
import dataclasses

import ray

from judge_server import server
from judge_server.config import JudgeConfig
from orchestrator.scaleout import cluster as ray_cluster
from orchestrator.config import RunConfig


@ray.remote
class JudgeReplica:

  def __init__(self, config: JudgeConfig):
    # The judge server's own entry point builds the backend the same way.
    from judge_server.backends import factory
    config = dataclasses.replace(
        config, host=ray.util.get_node_ip_address(), port=0)
    self._server = server.run_in_thread(config, factory.build(config.backend))

  def address(self) -> str:
    return self._server.address


def replica_name(run_name: str, index: int) -> str:
  return f"{run_name}-judge-{index}"


@dataclasses.dataclass(frozen=True)
class Replicas:
  """Serving replicas: `addresses` where each served once started,
  `locate` where one serves now."""
  actors: list
  addresses: list[str]

  def locate(self, index: int, timeout_s: float) -> str | None:
    """Replica `index`'s address; None while Ray restarts it, or once it
    has died for good."""
    try:
      return ray.get(self.actors[index].address.remote(), timeout=timeout_s)
    except (ray.exceptions.RayActorError,  # ActorUnavailableError too
            ray.exceptions.GetTimeoutError):
      return None


@contextlib.contextmanager
def started(cfg: RunConfig, run_name: str):
  """Yields the Replicas of cfg.ray.judge_replicas serving replicas, named
  replica_name(run_name, i) in ray_cluster.NAMESPACE."""
  options = ray_cluster.actor_options(cfg.ray.judge_replica,
                                      cfg.judge.server.backend.mesh.size)
  # A restart re-runs __init__ in a new process, serving on a new port.
  actors = [JudgeReplica.options(name=replica_name(run_name, i),
                                 namespace=ray_cluster.NAMESPACE,
                                 max_restarts=cfg.ray.judge_replica_restarts,
                                 **options)
            .remote(cfg.judge.server) for i in range(cfg.ray.judge_replicas)]
  try:
    yield Replicas(actors, ray_cluster.ready(
        [a.address.remote() for a in actors], cfg.ray.startup_timeout_s,
        "judge replicas"))
  finally:
    for actor in actors:
      ray.kill(actor)
