"""`grar --version` and the version each run directory's config copy
records: the installed package's, or pyproject.toml's in a checkout that
was never installed."""

import dataclasses
import importlib.metadata
import subprocess
import sys

from orchestrator import config as config_lib
from orchestrator.rundir import layout
import processes

INSTALLED = importlib.metadata.version("grar")


def test_grar_version_prints_the_installed_version():
  done = processes.grar("--version", timeout=60)
  assert done.returncode == 0, done.stderr
  assert done.stdout == f"grar {INSTALLED}\n"


def test_a_checkout_never_installed_reads_pyproject(tmp_path):
  """A tree with the module and pyproject.toml and no package metadata (no
  egg-info beside it, no site-packages: -S), as a checkout never installed
  is; the fallback gives the installed version."""
  for name in ("pyproject.toml", "orchestrator/__init__.py",
               "orchestrator/version.py"):
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_bytes((processes.ROOT / name).read_bytes())
  done = subprocess.run([sys.executable, "-S", "-c", """
import importlib.metadata
try:
  importlib.metadata.version("grar")
except importlib.metadata.PackageNotFoundError:
  print("not installed")
from orchestrator.version import version
print(version())
"""], cwd=tmp_path, capture_output=True, text=True, timeout=60)
  assert done.returncode == 0, done.stderr
  assert done.stdout.splitlines() == ["not installed", INSTALLED]


def test_the_config_copy_records_the_version_and_still_loads(tmp_path):
  """The version is a comment heading the copy: --resume loads the copy as
  the run's config, and unknown keys are errors."""
  cfg = config_lib.load(processes.ROOT / "configs" / "cpu-tiny.yaml")
  run_dir = layout.create(str(tmp_path), "r", dataclasses.asdict(cfg))
  copy = run_dir / layout.CONFIG
  assert copy.read_text().splitlines()[0] == f"# written by grar {INSTALLED}"
  assert config_lib.load(copy) == cfg
