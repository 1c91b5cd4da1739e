"""Giving each process of one host its own accelerators.

A TPU chip or a GPU can belong to one process only, and jax claims every
device it sees at import. So before jax is imported, the trainer and a judge
server in its own process are each given an environment that shows them only
their share: CUDA_VISIBLE_DEVICES on GPU, TPU_VISIBLE_CHIPS and the chip-bound
variables on TPU, a virtual device count on CPU.
"""

import os
import pathlib
from typing import Literal

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
