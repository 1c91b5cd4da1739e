"""Giving each process of one host its own accelerators.

A TPU chip or a GPU can belong to one process only, and jax claims every
device it sees at import. So before jax is imported, the trainer and a judge
server in its own process are each given an environment that shows them only
their share: CUDA_VISIBLE_DEVICES on GPU, TPU_VISIBLE_CHIPS and the chip-bound
variables on TPU, a virtual device count on CPU.
"""

import os
import pathlib
import sys
from typing import Literal

from grar_config import model as model_config

Platform = Literal["cpu", "gpu", "tpu"]

# A TPU v5e-8 host is a 2x4 grid of chips; a process may own any
# rectangle of it. Chips per process -> TPU_CHIPS_PER_PROCESS_BOUNDS.
_TPU_BOUNDS = {1: "1,1,1", 2: "1,2,1", 4: "2,2,1", 8: "2,4,1"}
# Each TPU process of one host needs its own runtime port.
TRAINER_TPU_PORT, JUDGE_TPU_PORT = 8476, 8477


def detect_platform() -> Platform:
  """The host's accelerator, found without importing jax."""
  forced = os.environ.get("JAX_PLATFORMS", "").split(",")[0].strip()
  if forced in ("cpu", "tpu"):
    return forced
  if forced in ("cuda", "gpu"):
    return "gpu"
  if list(pathlib.Path("/dev").glob("accel*")) or pathlib.Path(
      "/dev/vfio").is_dir() and any(pathlib.Path("/dev/vfio").iterdir()):
    return "tpu"
  if pathlib.Path("/dev/nvidia0").exists():
    return "gpu"
  return "cpu"


def process_env(platform: Platform, first: int, count: int,
                tpu_port: int) -> dict[str, str]:
  """Environment variables that show a process devices first..first+count-1
  (tpu_port: its TPU runtime port, used on TPU only)."""
  if count < 1:
    raise ValueError("count: a process needs at least one device")
  ids = ",".join(str(i) for i in range(first, first + count))
  if platform == "cpu":
    flags = " ".join(
        f for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count"))
    return {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": (
        f"{flags} --xla_force_host_platform_device_count={count}").strip()}
  if platform == "gpu":
    return {"CUDA_VISIBLE_DEVICES": ids}
  if count not in _TPU_BOUNDS:
    raise ValueError(f"count: a TPU process takes 1, 2, 4 or 8 chips, not "
                     f"{count}")
  return {"TPU_VISIBLE_CHIPS": ids,
          "TPU_CHIPS_PER_PROCESS_BOUNDS": _TPU_BOUNDS[count],
          "TPU_PROCESS_BOUNDS": "1,1,1",
          "TPU_PROCESS_PORT": str(tpu_port),
          "TPU_PROCESS_ADDRESSES": f"localhost:{tpu_port}"}


def ask_cpu_devices(needed: int) -> None:
  """Asks for `needed` virtual devices should this be a CPU host, unless
  XLA_FLAGS already sets a count; must run before jax loads."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (
        f"{flags} --xla_force_host_platform_device_count={needed}".strip())


# jax's persistent compilation cache: every new process would otherwise
# compile generation, scoring and the update again (minutes on a CPU host).
# Set as environment variables before jax loads, so the judge server's
# process (which inherits this environment) uses the same cache.
COMPILE_CACHE_VAR = "GRAR_COMPILE_CACHE"
_OFF = ("", "0", "off", "false", "no")
_ON = ("1", "on", "true", "yes")
_JAX_TYPES = {"JAX_COMPILATION_CACHE_DIR": str,
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": float,
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": int}


def compile_cache_env() -> dict[str, str]:
  """The jax variables that turn on its persistent compilation cache in
  $GRAR_CACHE/jax-compile, or in GRAR_COMPILE_CACHE when that names a
  directory; none when GRAR_COMPILE_CACHE is 0 (or off, false, no, empty)
  or the user set JAX_COMPILATION_CACHE_DIR (jax uses theirs as it is).

  Every program is cached, however quickly it compiled: on a CPU host a
  read is faster than even a small compile. jax keys an entry on the
  program, the jax and XLA versions, the XLA flags and the devices (their
  number and kind too), so an entry made for another device count or model
  is never used, only left unused; the directory is safe to delete.
  """
  environ = os.environ
  if "JAX_COMPILATION_CACHE_DIR" in environ:
    return {}
  setting = environ.get(COMPILE_CACHE_VAR)
  if setting is not None and setting.strip().lower() in _OFF:
    return {}
  if setting is None or setting.strip().lower() in _ON:
    directory = model_config.cache_dir() / "jax-compile"
  else:
    directory = pathlib.Path(setting.strip()).expanduser()
  wanted = {"JAX_COMPILATION_CACHE_DIR": str(directory),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            # -1: no size floor, and jax does not pick one of its own.
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
  return {k: v for k, v in wanted.items() if k not in environ}


def use_compile_cache() -> str | None:
  """Turns on jax's persistent compilation cache for this process and the
  processes it starts (compile_cache_env). Best before jax loads, since jax
  reads these variables as it loads; should it be loaded already, they are
  given to its config as well. Returns the cache directory jax will use,
  None when there is none."""
  env = compile_cache_env()
  os.environ.update(env)
  jax = sys.modules.get("jax")
  if jax is not None:
    for name, value in env.items():
      jax.config.update(name.lower(), _JAX_TYPES[name](value))
  return os.environ.get("JAX_COMPILATION_CACHE_DIR") or None
