"""Starting the real programs under test (the grar CLI, the judge server) as
subprocesses on loopback, and reading their output with deadlines."""

import contextlib
import json
import os
import pathlib
import selectors
import signal
import socket
import subprocess
import sys
import time

import yaml

# The trainer's own, for the tests' servers too.
from orchestrator.rollouts.vllm_process import free_port  # noqa: F401

ROOT = pathlib.Path(__file__).resolve().parent.parent
JUDGE_STARTUP_S = 120


def grar(*args, timeout=600) -> subprocess.CompletedProcess:
  """Runs `grar ARGS` to completion."""
  return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args],
                        cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout)


def start_grar(*args) -> subprocess.Popen:
  """Starts `grar ARGS`; progress lines arrive on its stderr."""
  return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args],
                          cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


# The trainer's libraries: none of them is in the judge image.
JAX_FAMILY = ("jax", "jaxlib", "flax", "tunix", "qwix", "optax", "orbax")
# What a judge server with a remote backend (openai, gemini) must start
# without (../shared/ARCHITECTURE.md): the jax family, and the project's
# policy and trainer packages.
NOT_IN_JUDGE = JAX_FAMILY + ("policy_worker", "orchestrator")

_BLOCKER = """\
import importlib.abc as _abc, sys as _sys
_BLOCKED = frozenset({blocked!r})
_early = sorted(m for m in _sys.modules if m.split(".")[0] in _BLOCKED)
if _early:
  raise SystemExit(f"imported before the blocker was installed: {{_early}}")
class _Unimportable(_abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in _BLOCKED:
      raise ModuleNotFoundError(f"{{name}} is blocked: not installed here",
                                name=name)
    return None
_sys.meta_path.insert(0, _Unimportable())
del _abc, _early
"""


def without(blocked) -> str:
  """Python source that makes every module under the top-level names
  `blocked` unimportable (ModuleNotFoundError, as on a machine without
  them), refusing to start if one was imported already."""
  return _BLOCKER.format(blocked=tuple(sorted(blocked)))


def python_without(code: str, blocked=NOT_IN_JUDGE, *, args=(),
                   timeout=120, env: dict | None = None
                   ) -> subprocess.CompletedProcess:
  """Runs the Python snippet `code` (then `args` as sys.argv[1:]) in a
  fresh interpreter where the modules under `blocked` cannot be imported."""
  return subprocess.run(
      [sys.executable, "-c", without(blocked) + code, *args], cwd=ROOT,
      capture_output=True, text=True, timeout=timeout,
      env=dict(os.environ, **(env or {})))


def import_without(modules, blocked=NOT_IN_JUDGE
                   ) -> tuple[dict[str, str], list[str]]:
  """Imports each of `modules` in a subprocess where the `blocked`
  top-level packages cannot import: (module -> the last line of its import
  error, for those that failed; the file of every module it loaded)."""
  proc = python_without(f"""
import importlib, json, sys, traceback
failed = {{}}
for name in {list(modules)!r}:
  try:
    importlib.import_module(name)
  except BaseException as e:
    failed[name] = traceback.format_exception_only(e)[-1].strip()
files = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
print(json.dumps([failed, [f for f in files if f]]))
""", tuple(blocked))
  assert proc.returncode == 0, proc.stderr[-3000:]
  failed, files = json.loads(proc.stdout.splitlines()[-1])
  return failed, files


def start_judge(config: dict, directory: pathlib.Path,
                env: dict | None = None, blocked=()) -> subprocess.Popen:
  """Starts `python -m judge_server --config FILE` with `config`; with
  `blocked`, the modules under those names cannot be imported in it."""
  path = directory / f"judge-{time.monotonic_ns()}.yaml"
  path.write_text(yaml.safe_dump(config))
  if blocked:
    command = [sys.executable, "-c", without(blocked)
               + "import runpy; runpy.run_module('judge_server', "
                 "run_name='__main__', alter_sys=True)"]
  else:
    command = [sys.executable, "-m", "judge_server"]
  return subprocess.Popen(
      [*command, "--config", str(path)],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, **(env or {})))


def read_until(proc: subprocess.Popen, stream, needle: str,
               timeout_s: float) -> list[str]:
  """Lines of `stream` up to and including the first containing `needle`;
  kills the process and raises if it does not come in time."""
  lines = []
  deadline = time.monotonic() + timeout_s
  with selectors.DefaultSelector() as sel:
    sel.register(stream, selectors.EVENT_READ)
    while True:
      left = deadline - time.monotonic()
      if left <= 0 or not sel.select(left):
        proc.kill()
        raise AssertionError(f"no {needle!r} within {timeout_s}s; got "
                             f"{''.join(lines)[-3000:]}")
      line = stream.readline()
      if not line:
        raise AssertionError(f"process ended before {needle!r}: "
                             f"{''.join(lines)[-3000:]}")
      lines.append(line)
      if needle in line:
        return lines


def judge_address(proc: subprocess.Popen) -> str:
  """Waits for the judge's 'listening on HOST:PORT' line."""
  line = read_until(proc, proc.stdout, "grar-judge listening on ",
                    JUDGE_STARTUP_S)[-1]
  return line.split()[-1]


def stop(proc: subprocess.Popen) -> None:
  if proc.poll() is None:
    proc.kill()
  proc.communicate()


@contextlib.contextmanager
def ray_head(directory: pathlib.Path, env: dict, timeout_s: float = 120):
  """Yields the port of a Ray head node of 4 CPUs on loopback, started with
  `env` (its actors' processes inherit it) and logging into `directory`.
  Stopped by ending its process group: `ray stop` would stop every Ray
  cluster of this user."""
  port = free_port()
  log = directory / "head.log"
  with open(log, "w") as out:
    head = subprocess.Popen(
        [pathlib.Path(sys.executable).parent / "ray", "start", "--head",
         "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=4", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={directory}"],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        env=env)
  try:
    # Until its GCS accepts connections (its log lines are not a reliable
    # signal: they come late on a busy host).
    deadline = time.monotonic() + timeout_s
    while True:
      if head.poll() is not None:
        raise RuntimeError(f"ray head exited:\n{log.read_text()[-3000:]}")
      if time.monotonic() > deadline:
        raise TimeoutError(f"ray head not up in {timeout_s:g}s")
      with contextlib.suppress(OSError), socket.create_connection(
          ("127.0.0.1", port), timeout=1):
        break
      time.sleep(0.5)
    yield port
  finally:
    head.terminate()
    try:
      head.wait(timeout=60)
    finally:
      with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)  # what did not stop in time
