"""Starting the real programs under test (the grar CLI, the judge server) as
subprocesses on loopback, and reading their output with deadlines."""

import os
import pathlib
import selectors
import socket
import subprocess
import sys
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
JUDGE_STARTUP_S = 120


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


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


def start_judge(config: dict, directory: pathlib.Path,
                env: dict | None = None) -> subprocess.Popen:
  path = directory / f"judge-{time.monotonic_ns()}.yaml"
  path.write_text(yaml.safe_dump(config))
  return subprocess.Popen(
      [sys.executable, "-m", "judge_server", "--config", str(path)],
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
