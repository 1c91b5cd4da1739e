"""The trainer as the driver of a Ray cluster.

`connected` joins the cluster at ray.address (a local one when empty) for
the length of a run. Actors get the share of the host that their
ActorResources ask for: Ray itself sets CUDA_VISIBLE_DEVICES and the TPU chip
variables for GPUs and TPU chips; an actor that asks for neither runs jax on
CPU with as many virtual devices as its mesh needs.
"""

import contextlib

import ray

from orchestrator import devices
from orchestrator.config import ActorResources, RayConfig

# Actors of one run live in the run's namespace, so a test or an operator
# can find a judge replica by name (ray.get_actor(name, namespace)).
NAMESPACE = "grar"


class RayClusterError(RuntimeError):
  """The cluster cannot be reached, or its actors did not start in time."""


def ready(refs: list, timeout_s: float, what: str) -> list:
  """ray.get with a deadline: an actor the cluster has no room for waits
  forever otherwise."""
  try:
    return ray.get(refs, timeout=timeout_s)
  except ray.exceptions.RayActorError as e:
    raise RayClusterError(f"{what} failed to start: {e}") from None
  except ray.exceptions.GetTimeoutError:
    raise RayClusterError(
        f"ray.startup_timeout_s: {what} not ready within {timeout_s:g}s; "
        "the cluster may lack the resources asked for (ray.rollout_worker, "
        f"ray.judge_replica), available: {ray.available_resources()}"
    ) from None


@contextlib.contextmanager
def connected(cfg: RayConfig):
  """Joins (or starts) the cluster; a caller already connected keeps its
  connection and owns its shutdown."""
  if ray.is_initialized():
    yield
    return
  try:
    ray.init(address=cfg.address or None, namespace=NAMESPACE,
             include_dashboard=False, log_to_driver=True)
  except (ConnectionError, ValueError) as e:
    raise RayClusterError(f"ray.address: cannot join {cfg.address!r}: {e}"
                          ) from None
  try:
    yield
  finally:
    ray.shutdown()


def actor_options(resources: ActorResources, device_count: int) -> dict:
  """Options for `ActorClass.options(...)`; device_count: devices its mesh
  uses, made visible as virtual CPU devices when the host has no others."""
  options = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus,
             "resources": dict(resources.resources)}
  if not resources.num_gpus and "TPU" not in resources.resources:
    options["runtime_env"] = {"env_vars": devices.process_env(
        "cpu", 0, device_count, tpu_port=0)}
  return options

