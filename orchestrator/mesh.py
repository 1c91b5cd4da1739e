"""Splitting the process's devices into a policy mesh and a judge mesh.

Both meshes have the axes ("fsdp", "tp") that tunix's Gemma sharding names.
The policy takes the first `policy.size` devices, the judge the next
`judge.size`, so the two can never share a device. A plan that cannot work
is refused before any model is built, with a message that says what to
change; the alternative is an IndivisibleError or an out-of-memory deep
inside model construction.
"""

from collections.abc import Callable, Sequence
import math

import jax
import numpy as np

from grar_config.mesh import MeshShape
from grar_config.model import ModelSpec

AXES = ("fsdp", "tp")
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


class MeshPlanError(ValueError):
  """A device plan that cannot work; the message says what to change."""


def estimate_param_bytes(spec: ModelSpec) -> int:
  """Bytes of the model's parameters (weights only: no optimizer state,
  activations or KV cache).

  Counts what tunix's Gemma-2 and Gemma-3 allocate: the embedding (vocab x
  embed_dim, tied with the output layer), per layer q, k, v and o
  projections, the gate, up and down MLP matrices, four embed_dim norms and,
  in Gemma-3 only, two head_dim norms (query and key), and the final norm.
  A checkpoint family's shapes come from its config.json.
  """
  dims = spec.dims()
  d, f, h = dims.embed_dim, dims.hidden_dim, dims.head_dim
  attention = (2 * dims.num_heads + 2 * dims.num_kv_heads) * d * h
  mlp = 3 * d * f
  norms = 4 * d + (0 if spec.family == "gemma2" else 2 * h)
  count = (dims.vocab_size * d + d
           + dims.num_layers * (attention + mlp + norms))
  return count * _DTYPE_BYTES[spec.dtype]


def _sharded_dims(spec: ModelSpec) -> list[tuple[str, int, str]]:
  """(what, size, mesh axis) for every parameter dimension tunix shards.

  Mirrors tunix's ShardingConfig, the same for Gemma-2 and Gemma-3:
  device_put refuses a dimension that the axis size does not divide. A
  single kv head is replicated, not split.
  """
  model = spec.dims()
  dims = [("vocabulary size (embedding rows)", model.vocab_size, "tp"),
          ("num_heads", model.num_heads, "tp"),
          ("hidden_dim", model.hidden_dim, "tp"),
          ("embed_dim (norm scales)", model.embed_dim, "tp"),
          ("embed_dim", model.embed_dim, "fsdp")]
  if model.num_kv_heads > 1:
    dims.append(("num_kv_heads", model.num_kv_heads, "tp"))
  return dims


def check_divisible(role: str, spec: ModelSpec, shape: MeshShape) -> None:
  """Raises MeshPlanError if `shape` cannot shard `spec`'s parameters."""
  sizes = {"fsdp": shape.fsdp, "tp": shape.tp}
  for what, size, axis in _sharded_dims(spec):
    if size % sizes[axis]:
      fits = [n for n in range(1, size + 1) if size % n == 0][:8]
      raise MeshPlanError(
          f"{role} mesh: {axis}={sizes[axis]} does not divide the model's "
          f"{what} {size}; choose {axis} from {', '.join(map(str, fits))}"
          f"{', ...' if len(fits) == 8 else ''}, or change the model")


def check_memory(role: str, spec: ModelSpec, shape: MeshShape,
                 bytes_limit: int | None) -> None:
  """Raises MeshPlanError if the parameters alone overflow the devices.

  bytes_limit: memory of the smallest device of the mesh, None where the
  platform does not say (CPU), which skips the check. The share per device
  assumes every parameter is split over the whole mesh, so this refuses only
  plans that cannot fit; passing it does not promise room for activations,
  the KV cache or optimizer state.
  """
  if bytes_limit is None:
    return
  need = math.ceil(estimate_param_bytes(spec) / shape.size)
  if need > bytes_limit:
    more = math.ceil(estimate_param_bytes(spec) / bytes_limit)
    remote = ", or run the judge remotely" if role == "judge" else ""
    raise MeshPlanError(
        f"{role} mesh: the model's parameters need {need / 2**30:.2f} GiB per "
        f"device over {shape.size} devices, but a device has "
        f"{bytes_limit / 2**30:.2f} GiB; give the {role} at least {more} "
        f"devices, or use a smaller model or dtype bfloat16{remote}")


def _describe(shape: MeshShape) -> str:
  return f"(fsdp={shape.fsdp}, tp={shape.tp})"


def _check_count(devices: Sequence[jax.Device], policy: MeshShape,
                 judge: MeshShape | None) -> None:
  needed = policy.size + (judge.size if judge is not None else 0)
  if len(devices) >= needed:
    return
  platform = devices[0].platform if devices else None
  wants = f"the policy mesh {_describe(policy)} needs {policy.size}"
  if judge is not None:
    wants += (f" and the judge mesh {_describe(judge)} needs {judge.size}, "
              f"{needed} in all")
  has = f"{len(devices)} {platform} devices" if devices else "no devices"
  if platform == "cpu":
    hint = ("set XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{needed} before jax starts, or shrink the meshes")
  else:
    hint = "use more devices or shrink the meshes"
    if judge is not None:
      hint += ", or run the judge as a separate or remote server"
  raise MeshPlanError(f"{wants}, but this process has {has}; {hint}")


def _mesh(devices: Sequence[jax.Device], shape: MeshShape) -> jax.sharding.Mesh:
  grid = np.array(list(devices)).reshape(shape.fsdp, shape.tp)
  return jax.sharding.Mesh(grid, AXES)


def _bytes_limit(devices) -> int | None:
  """The smallest device's memory, None if any device does not report it."""
  limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices]
  return None if None in limits else min(limits)


def plan_meshes(
    devices: Sequence[jax.Device], policy: MeshShape,
    judge: MeshShape | None, policy_model: ModelSpec | None = None,
    judge_model: ModelSpec | None = None,
) -> tuple[jax.sharding.Mesh, jax.sharding.Mesh | None]:
  """Returns (policy mesh, judge mesh), each with axes ("fsdp", "tp").

  devices: usually jax.devices(); taken in the given order, the policy's
  first. judge None means the judge does not run in this process (a separate
  or remote server): no judge mesh, and judge_model is not checked. A model
  given for a side is checked against that side's mesh (axis sizes, memory).
  Raises MeshPlanError for a plan that cannot work.
  """
  if len(set(devices)) != len(devices):
    raise MeshPlanError(
        "devices: the list names a device more than once; pass each device "
        "once (jax.devices())")
  _check_count(devices, policy, judge)
  # Disjoint by construction: consecutive slices of a duplicate-free list.
  policy_mesh = _mesh(devices[:policy.size], policy)
  judge_mesh = (None if judge is None else
                _mesh(devices[policy.size:policy.size + judge.size], judge))
  for role, mesh, shape, spec in (
      ("policy", policy_mesh, policy, policy_model),
      ("judge", judge_mesh, judge, judge_model)):
    if mesh is not None and spec is not None:
      check_divisible(role, spec, shape)
      check_memory(role, spec, shape, _bytes_limit(mesh.devices.flat))
  return policy_mesh, judge_mesh


def plan_for(cfg, devices: Sequence[jax.Device],
             say: Callable[[str], None] | None = None):
  """plan_meshes for a run's or an evaluation's config (model, mesh and
  judge sections): a judge mesh only when the judge runs in this process.
  say: where to tell the user the split."""
  judge_shape = cfg.mesh.judge if cfg.judge.placement == "in-process" else None
  meshes = plan_meshes(
      devices, cfg.mesh.policy, judge_shape, cfg.model,
      cfg.judge.server.backend.model if judge_shape else None)
  if say is not None:
    where = (f"judge mesh on the next {cfg.mesh.judge.size}" if judge_shape
             else f"judge {cfg.judge.placement}")
    say(f"{len(devices)} {devices[0].platform} devices: policy mesh on "
        f"{cfg.mesh.policy.size} (fsdp={cfg.mesh.policy.fsdp}, "
        f"tp={cfg.mesh.policy.tp}), {where}")
  return meshes
