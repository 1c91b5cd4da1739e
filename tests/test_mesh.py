import os

# Before jax starts its backend; a no-op when the run already asked for
# devices, and these tests need only that there be at least 8.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grar_config.mesh import MeshShape
from orchestrator import mesh
from orchestrator.mesh import MeshPlanError, plan_meshes
from policy_worker import models
from policy_worker.tokenizer import VOCAB_SIZE
from grar_config.model import ModelSpec
from tunix.models.gemma3 import model as gemma3


@pytest.fixture
def devices():
  found = jax.devices()
  if len(found) < 8:
    pytest.skip(f"needs 8 devices, jax started with {len(found)}: set "
                "XLA_FLAGS=--xla_force_host_platform_device_count=8")
  return found[:8]


def _ids(m: jax.sharding.Mesh) -> list[int]:
  return [d.id for d in m.devices.flat]


def test_split_is_disjoint_and_in_order(devices):
  policy, judge = plan_meshes(devices, MeshShape(fsdp=1, tp=4),
                              MeshShape(tp=4), ModelSpec(), ModelSpec())
  assert policy.axis_names == judge.axis_names == ("fsdp", "tp")
  assert dict(policy.shape) == {"fsdp": 1, "tp": 4}
  assert dict(judge.shape) == {"fsdp": 1, "tp": 4}
  assert _ids(policy) == [d.id for d in devices[:4]]
  assert _ids(judge) == [d.id for d in devices[4:8]]


@pytest.mark.parametrize("policy,judge", [
    (MeshShape(1, 1), MeshShape(1, 1)), (MeshShape(2, 2), MeshShape(2, 2)),
    (MeshShape(4, 1), MeshShape(1, 2)), (MeshShape(1, 2), MeshShape(3, 2)),
    (MeshShape(2, 3), MeshShape(1, 2)), (MeshShape(1, 7), MeshShape(1, 1))])
def test_no_device_in_both_meshes(devices, policy, judge):
  policy_mesh, judge_mesh = plan_meshes(devices, policy, judge)
  assert policy_mesh.devices.size == policy.size
  assert judge_mesh.devices.size == judge.size
  both = ({id(d) for d in policy_mesh.devices.flat}
          & {id(d) for d in judge_mesh.devices.flat})
  assert not both
  assert not set(_ids(policy_mesh)) & set(_ids(judge_mesh))


def test_a_device_listed_twice_is_refused(devices):
  # Slicing a list that repeats a device would put it in both meshes.
  with pytest.raises(MeshPlanError, match="more than once"):
    plan_meshes(devices[:4] * 2, MeshShape(tp=4), MeshShape(tp=4))


def test_without_a_judge_mesh(devices):
  policy, judge = plan_meshes(devices, MeshShape(fsdp=2, tp=4), None,
                              judge_model=ModelSpec(num_heads=3,
                                                    num_kv_heads=1))
  assert judge is None
  assert policy.devices.size == 8


def test_too_few_devices_says_how_many_and_the_cpu_flag(devices):
  with pytest.raises(MeshPlanError) as e:
    plan_meshes(devices, MeshShape(fsdp=2, tp=4), MeshShape(tp=4))
  message = str(e.value)
  assert "policy mesh (fsdp=2, tp=4) needs 8" in message
  assert "judge mesh (fsdp=1, tp=4) needs 4, 12 in all" in message
  assert "this process has 8 cpu devices" in message
  assert "XLA_FLAGS=--xla_force_host_platform_device_count=12" in message


def test_no_devices_at_all():
  with pytest.raises(MeshPlanError,
                     match="needs 1, but this process has no devices"):
    plan_meshes([], MeshShape(), None)


@pytest.mark.parametrize("spec,shape,what", [
    (ModelSpec(num_heads=6, num_kv_heads=1), MeshShape(tp=4), "num_heads 6"),
    (ModelSpec(num_heads=4, num_kv_heads=2), MeshShape(tp=4),
     "num_kv_heads 2"),
    (ModelSpec(num_heads=8, num_kv_heads=8), MeshShape(tp=8),
     "vocabulary size (embedding rows) 260"),
    (ModelSpec(hidden_dim=130), MeshShape(tp=4), "hidden_dim 130"),
    (ModelSpec(), MeshShape(fsdp=3), "embed_dim 64"),
])
def test_axis_that_does_not_divide_the_model(devices, spec, shape, what):
  with pytest.raises(MeshPlanError) as e:
    plan_meshes(devices, shape, None, policy_model=spec)
  assert str(e.value).startswith("policy mesh: ")
  assert what in str(e.value)
  axis = "fsdp" if shape.fsdp > 1 else "tp"
  assert f"choose {axis} from 1, 2, " in str(e.value)
  # The check stands in for a real failure: tunix cannot place this model.
  grid = np.array(devices[:shape.size]).reshape(shape.fsdp, shape.tp)
  with pytest.raises(ValueError):
    models.build_model(spec, jax.sharding.Mesh(grid, mesh.AXES))


def test_the_judge_model_is_checked_on_the_judge_mesh(devices):
  spec = ModelSpec(num_heads=6, num_kv_heads=1)
  plan_meshes(devices, MeshShape(tp=2), MeshShape(tp=2), judge_model=spec)
  with pytest.raises(MeshPlanError, match="^judge mesh: tp=4 .* num_heads 6"):
    plan_meshes(devices, MeshShape(tp=2), MeshShape(tp=4), judge_model=spec)


def _params(model) -> dict[tuple, jax.Array]:
  return {path: var[...] for path, var in nnx.iter_graph(model)
          if isinstance(var, nnx.Param)}


@nnx.jit
def _logits(model, tokens):
  seq = tokens.shape[1]
  logits, _ = model(tokens, jnp.arange(seq)[None], None,
                    jnp.tril(jnp.ones((seq, seq), bool))[None])
  return logits


def test_one_kv_head_is_replicated_not_split(devices):
  spec = ModelSpec(num_heads=4, num_kv_heads=1)
  policy, _ = plan_meshes(devices, MeshShape(tp=4), None, spec)
  model, tokenizer = models.build_model(spec, policy)
  params = _params(model)
  policy_ids = sorted(_ids(policy))
  kv = {p: a for p, a in params.items() if p[-2] == "kv_einsum"}
  q = {p: a for p, a in params.items() if p[-2] == "q_einsum"}
  assert len(kv) == len(q) == spec.num_layers
  for path, a in params.items():
    # Every parameter lives on the policy mesh's four devices, none other.
    assert sorted(d.id for d in a.devices()) == policy_ids, path
  for path, a in kv.items():
    # (k and v, the one kv head, embed, head_dim): every device holds all
    # of it, the same values.
    assert a.shape == (2, 1, spec.embed_dim, spec.head_dim), path
    assert "tp" not in jax.tree.leaves(tuple(a.sharding.spec)), path
    shards = a.addressable_shards
    assert len(shards) == 4
    for shard in shards:
      assert shard.data.shape == a.shape, path
      np.testing.assert_array_equal(np.asarray(shard.data),
                                    np.asarray(shards[0].data))
  for path, a in q.items():
    # The query heads are split: one of the four heads per device.
    assert a.shape == (spec.num_heads, spec.embed_dim, spec.head_dim), path
    assert a.sharding.shard_shape(a.shape) == (1, spec.embed_dim,
                                               spec.head_dim), path
    heads = sorted(s.index[0].start for s in a.addressable_shards)
    assert heads == [0, 1, 2, 3], path
  # It runs on the mesh, and computes what the same weights compute
  # unsharded on one device (the random init depends on the seed only).
  tokens = jnp.asarray([[tokenizer.bos_id(), *tokenizer.encode("2 + 2 =")]],
                       jnp.int32)
  with jax.set_mesh(policy):
    sharded = np.asarray(_logits(model, tokens))
  one = jax.sharding.Mesh(np.array(devices[:1]).reshape(1, 1), mesh.AXES)
  single, _ = models.build_model(spec, one)
  with jax.set_mesh(one):
    reference = np.asarray(_logits(single, tokens))
  assert sharded.shape == (1, tokens.shape[1], VOCAB_SIZE)
  assert np.isfinite(sharded).all()
  np.testing.assert_allclose(sharded, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spec", [
    ModelSpec(), ModelSpec(num_kv_heads=4, num_layers=3),
    ModelSpec(num_kv_heads=2, hidden_dim=96, dtype="bfloat16")])
def test_estimate_matches_the_tunix_model(spec):
  abstract = nnx.eval_shape(
      lambda: gemma3.Gemma3(models._gemma3_config(spec), rngs=nnx.Rngs(0)))
  real = sum(x.size * x.dtype.itemsize
             for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  assert mesh.estimate_param_bytes(spec) == real


def test_memory_check_refuses_a_model_that_cannot_fit():
  spec = ModelSpec(num_layers=48, embed_dim=3840, hidden_dim=15360,
                   num_heads=16, head_dim=256, num_kv_heads=8,
                   dtype="bfloat16")
  total = mesh.estimate_param_bytes(spec)
  with pytest.raises(MeshPlanError) as e:
    mesh.check_memory("judge", spec, MeshShape(tp=4), total // 8)
  assert "give the judge at least 8 devices" in str(e.value)
  assert "run the judge remotely" in str(e.value)
  mesh.check_memory("judge", spec, MeshShape(tp=8), total // 8)
  mesh.check_memory("judge", spec, MeshShape(tp=1), None)


def test_cpu_devices_skip_the_memory_check(devices):
  huge = ModelSpec(num_layers=64, embed_dim=4096, hidden_dim=16384,
                   num_heads=32, head_dim=128, num_kv_heads=8)
  assert devices[0].memory_stats() is None
  plan_meshes(devices, MeshShape(tp=4), MeshShape(tp=4), huge, huge)
