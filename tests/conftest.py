"""Every test process sees 8 virtual CPU devices: 4 policy + 4 judge, as in
the demo. Set before anything imports jax (nothing imported here does);
subprocesses inherit it. Also the fixtures that cost minutes and are shared
by several modules: the prepared Gemma-3-270M and a vLLM server of it."""

import os
import pathlib

import pytest
from xdist.scheduler import LoadScopeScheduling

from policy_worker import prepare
import vllm_server

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8")
# The many trainer and judge subprocesses compile the same programs; the
# persistent cache lets each compile once per test run.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(pathlib.Path(__file__).resolve().parent.parent / ".jax-cache"))


@pytest.fixture(scope="session")
def gemma3_270m_dir(tmp_path_factory) -> pathlib.Path:
  """The shipped Gemma-3-270M, prepared once per test run: the suite's xdist
  workers share the run's temporary root, and the first to get there
  prepares it while the other waits (preparing reuses a complete one)."""
  root = tmp_path_factory.getbasetemp()
  if "PYTEST_XDIST_WORKER" in os.environ:
    root = root.parent
  with vllm_server.exclusive(root / "gemma3-270m.lock"):
    return prepare.prepare_gemma3_270m(root / "models" / "gemma3-270m")


@pytest.fixture(scope="session")
def vllm(gemma3_270m_dir, tmp_path_factory) -> vllm_server.Server:
  """A vLLM server serving it (over a minute to start on 2 cores), one per
  test process: the modules that need one run on one worker (_VLLM_FILES),
  test_export.py's own server of an exported model first, as vllm_server
  runs one server at a time on the machine (each holds about 6 GB)."""
  with vllm_server.serving(gemma3_270m_dir,
                           tmp_path_factory.mktemp("vllm") / "vllm.log") as s:
    yield s


# Every module that starts a vLLM server, in the order they run: one worker
# takes them all, so the other never waits on the machine's vLLM lock and
# the shared server starts once. test_export.py serves a model of its own
# and comes first (collection order: the others sort after its name),
# before `vllm` holds the lock.
@pytest.fixture(scope="module")
def tunix_270m(gemma3_270m_dir):
  """(model, tokenizer, mesh): the shipped 270M as tunix runs it, on one
  device, for a module comparing it with vLLM."""
  import jax  # after the XLA_FLAGS above
  import numpy as np
  from grar_config.model import ModelSpec
  from policy_worker import models
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                           ("fsdp", "tp"))
  model, tokenizer = models.build_model(
      ModelSpec(family="gemma3", path=str(gemma3_270m_dir)), mesh)
  return model, tokenizer, mesh


_VLLM_FILES = ("test_export.py", "test_parity_vllm.py", "test_vllm_judge.py",
               "test_sft_distill.py", "test_vllm_teacher.py",
               "test_peft_adapter.py", "test_vllm_rollouts.py")


class _FileScheduling(LoadScopeScheduling):
  """xdist's --dist loadfile (a file's tests on one worker), with the vLLM
  modules as one unit."""

  def _split_scope(self, nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "vllm" if pathlib.PurePath(path).name in _VLLM_FILES else path


def pytest_xdist_make_scheduler(config, log):
  if config.getoption("dist") == "loadfile":
    return _FileScheduling(config, log)
  return None


# The fast tier (`make test-fast`: -m "not slow and not vllm and not ray and
# not e2e") must never start a vLLM server or prepare the 270M, whoever
# wrote the test: a test that uses these fixtures gets their markers even
# when its module forgot them. test_train_e2e.py's GRPO run is e2e.
_FIXTURE_MARKERS = {"vllm": ("vllm", "slow"), "gemma3_270m_dir": ("slow",)}
_E2E_FIXTURES = {"test_train_e2e.py": "run"}


# tryfirst: before pytest's own hook deselects by marker.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  for item in items:
    wanted = [m for fixture, marks in _FIXTURE_MARKERS.items()
              if fixture in item.fixturenames for m in marks]
    if _E2E_FIXTURES.get(item.path.name) in item.fixturenames:
      wanted.append("e2e")
    for name in wanted:
      if item.get_closest_marker(name) is None:
        item.add_marker(name)
