"""jax's persistent compilation cache, on by default under $GRAR_CACHE
(orchestrator/devices.py): a second process loads what the first compiled
instead of compiling it again, GRAR_COMPILE_CACHE=0 writes nothing, a user's
own JAX_COMPILATION_CACHE_DIR wins, and an entry compiled for one device
count is not used for another. Each run is a fresh interpreter, since jax
reads these settings as it loads; hits and misses are jax's own monitoring
events."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import processes
from orchestrator import devices

# The variables these tests set themselves: conftest.py gives the suite a
# cache of its own (JAX_COMPILATION_CACHE_DIR), which must not leak in.
_OURS = ("GRAR_CACHE", "GRAR_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR",
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
         "JAX_ENABLE_COMPILATION_CACHE", "XLA_FLAGS")

# Before jax loads, as the CLI does (IMPORT_JAX_FIRST: as `grar pipeline`
# and `grar eval` do, whose stage modules import jax before devices are
# claimed). Then a small jitted program, and what jax's cache did.
_PROGRAM = """
import json, os, sys
if os.environ.get("IMPORT_JAX_FIRST"):
  import jax
from orchestrator import devices
directory = devices.use_compile_cache()
import jax, jax.numpy as jnp
from jax._src import monitoring
events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))

@jax.jit
def f(x):
  for i in range(8):
    x = jnp.tanh(x @ x.T) + i
  return x.sum()

value = float(f(jnp.arange(64.0).reshape(8, 8) / 64))
print(json.dumps({
    "value": value, "directory": directory,
    "config_dir": jax.config.jax_compilation_cache_dir,
    "min_compile_s": jax.config.jax_persistent_cache_min_compile_time_secs,
    "devices": len(jax.devices()),
    "hits": events.count("/jax/compilation_cache/cache_hits"),
    "misses": events.count("/jax/compilation_cache/cache_misses"),
    "requests": events.count(
        "/jax/compilation_cache/compile_requests_use_cache")}))
"""


def _run(cache: pathlib.Path, device_count: int = 1, **env) -> dict:
  base = {k: v for k, v in os.environ.items() if k not in _OURS}
  proc = subprocess.run(
      [sys.executable, "-c", _PROGRAM], cwd=processes.ROOT,
      capture_output=True, text=True, timeout=120,
      env={**base, "JAX_PLATFORMS": "cpu", "GRAR_CACHE": str(cache),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count="
                        f"{device_count}", **env})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.splitlines()[-1])


def _entries(directory: pathlib.Path) -> set[str]:
  return ({p.name for p in directory.iterdir() if p.name.endswith("-cache")}
          if directory.is_dir() else set())


def _all_files(root: pathlib.Path) -> list[pathlib.Path]:
  return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("jax_first", [False, True],
                         ids=["before-jax", "jax-already-loaded"])
def test_second_process_loads_what_the_first_compiled(tmp_path, jax_first):
  env = {"IMPORT_JAX_FIRST": "1"} if jax_first else {}
  cache = tmp_path / "grar"
  directory = cache / "jax-compile"
  first = _run(cache, **env)
  assert first["directory"] == first["config_dir"] == str(directory)
  assert first["min_compile_s"] == 0
  written = _entries(directory)
  assert first["misses"] >= 1 and first["hits"] == 0, first
  assert any(name.startswith("jit_f-") for name in written), written
  assert len(written) == first["misses"]

  second = _run(cache, **env)
  assert second["value"] == first["value"]
  # Everything the second process compiled came from the cache, and it
  # added nothing.
  assert second["hits"] == second["requests"] == first["requests"], second
  assert second["misses"] == 0, second
  assert _entries(directory) == written


@pytest.mark.parametrize("setting", ["0", "", "off"])
def test_turned_off_writes_nothing(tmp_path, setting):
  result = _run(tmp_path, GRAR_COMPILE_CACHE=setting)
  assert result["directory"] is None and result["config_dir"] is None
  assert result["hits"] == result["misses"] == 0, result
  assert _all_files(tmp_path) == []


def test_a_named_directory(tmp_path):
  elsewhere = tmp_path / "compiled"
  result = _run(tmp_path / "grar", GRAR_COMPILE_CACHE=str(elsewhere))
  assert result["directory"] == str(elsewhere)
  assert len(_entries(elsewhere)) == result["misses"] >= 1
  assert not (tmp_path / "grar").exists()


def test_a_users_own_jax_cache_wins(tmp_path):
  theirs = tmp_path / "theirs"
  result = _run(tmp_path / "grar", JAX_COMPILATION_CACHE_DIR=str(theirs))
  assert result["directory"] == result["config_dir"] == str(theirs)
  assert not (tmp_path / "grar").exists()
  # Their jax settings as they are: jax's own 1 s floor, not grar's 0.
  assert result["min_compile_s"] == 1.0


def test_another_device_count_compiles_again(tmp_path):
  """An executable made in a 1-device process is not loaded by a 2-device
  one (jax keys entries on the device topology, though it leaves the
  device-count flag out of the key), and each count then hits its own."""
  directory = tmp_path / "jax-compile"
  one = _run(tmp_path, device_count=1)
  after_one = _entries(directory)
  two = _run(tmp_path, device_count=2)
  assert two["devices"] == 2 and two["value"] == one["value"]
  assert two["hits"] == 0 and two["misses"] >= 1, two
  assert len(_entries(directory) - after_one) == two["misses"]
  assert _run(tmp_path, device_count=1)["misses"] == 0
  assert _run(tmp_path, device_count=2)["misses"] == 0


def test_settings(monkeypatch):
  for name in _OURS:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("GRAR_CACHE", "/c")

  def env(**settings):
    for name, value in settings.items():
      monkeypatch.setenv(name, value)
    found = devices.compile_cache_env()
    for name in settings:
      monkeypatch.delenv(name)
    return found

  assert env() == {
      "JAX_COMPILATION_CACHE_DIR": "/c/jax-compile",
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
  for on in ("1", "on", "TRUE", " yes "):
    assert env(GRAR_COMPILE_CACHE=on)[
        "JAX_COMPILATION_CACHE_DIR"] == "/c/jax-compile"
  for off in ("0", "", "off", "False", "no"):
    assert env(GRAR_COMPILE_CACHE=off) == {}
  assert env(GRAR_COMPILE_CACHE="/x/y")["JAX_COMPILATION_CACHE_DIR"] == "/x/y"
  # The user's own jax settings are kept, each of them.
  assert env(JAX_COMPILATION_CACHE_DIR="/mine") == {}
  kept = env(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="2")
  assert "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in kept
  assert kept["JAX_COMPILATION_CACHE_DIR"] == "/c/jax-compile"


_CLI_PROBE = """
import json, os, sys
from orchestrator import cli
from orchestrator.stages import pipeline
cfg = pipeline.load(sys.argv[1], [])
cli._claim_devices(cfg)
import jax
print(json.dumps({"env": os.environ.get("JAX_COMPILATION_CACHE_DIR"),
                  "config": jax.config.jax_compilation_cache_dir}))
"""


def test_the_cli_claims_it_for_itself_and_its_judge(tmp_path):
  """`grar pipeline` imports jax before it claims devices: the cache is
  still its jax's, and in the environment the judge's process inherits
  (orchestrator/judge/process.py starts it with os.environ)."""
  base = {k: v for k, v in os.environ.items() if k not in _OURS}
  proc = subprocess.run(
      [sys.executable, "-c", _CLI_PROBE,
       str(processes.ROOT / "configs" / "pipeline-tiny.yaml")],
      cwd=processes.ROOT, capture_output=True, text=True, timeout=120,
      env={**base, "JAX_PLATFORMS": "cpu", "GRAR_CACHE": str(tmp_path)})
  assert proc.returncode == 0, proc.stderr[-3000:]
  seen = json.loads(proc.stdout.splitlines()[-1])
  assert seen == {"env": str(tmp_path / "jax-compile"),
                  "config": str(tmp_path / "jax-compile")}
