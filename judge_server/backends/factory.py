"""The one place a backend config becomes a backend.

Only the jax and reward_model kinds import jax (and policy_worker's model
code): a judge with a remote backend starts on a machine that has neither.
"""

from judge_server import observability
from judge_server.backends import gemini, openai_compat
from judge_server.backends.base import Backend
from judge_server.config import BackendConfig
from grar_config.strict import ConfigError


def _jax_mesh(cfg: BackendConfig):
  """The first fsdp x tp devices this process sees, as the judge mesh."""
  import jax
  import numpy as np
  devices = jax.devices()
  if len(devices) < cfg.mesh.size:
    raise ConfigError(
        f"backend.mesh: fsdp={cfg.mesh.fsdp} x tp={cfg.mesh.tp} needs "
        f"{cfg.mesh.size} devices, this process sees {len(devices)}")
  observability.LOGGER.info(
      f"jax backend on {cfg.mesh.size} of {len(devices)} "
      f"{devices[0].platform} devices (fsdp={cfg.mesh.fsdp}, tp={cfg.mesh.tp})")
  return jax.sharding.Mesh(
      np.array(devices[:cfg.mesh.size]).reshape(cfg.mesh.fsdp, cfg.mesh.tp),
      ("fsdp", "tp"))


def _local(cfg: BackendConfig, mesh) -> Backend:
  """The backends that run a tunix model in this process, on `mesh`."""
  if cfg.kind == "reward_model":
    from judge_server.backends import reward_model
    return reward_model.build(cfg, mesh)
  from judge_server.backends import jax_local
  return jax_local.build(cfg, mesh)


def build(cfg: BackendConfig, mesh=None) -> Backend:
  """The backend `cfg` names. mesh: the jax and reward_model kinds' devices
  (the trainer's judge mesh); None takes the first ones this process sees.
  The remote kinds ignore it."""
  if cfg.kind in ("jax", "reward_model"):
    return _local(cfg, mesh if mesh is not None else _jax_mesh(cfg))
  if cfg.kind == "openai":
    return openai_compat.build(cfg)
  return gemini.build(cfg)
