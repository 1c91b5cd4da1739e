"""The judge server in its own process on this host, with its own devices.

The orchestrator starts `python -m judge_server` with an environment that
shows it only the judge's devices, waits until it listens and reports
healthy, and on exit stops it with SIGTERM (it finishes in-flight work).
Its output goes to RUN_DIR/judge.log.
"""

import contextlib
import dataclasses
import os
import pathlib
import selectors
import signal
import subprocess
import sys
import time

import yaml

from judge_server.config import JudgeConfig
from orchestrator import devices

READY_PREFIX = "grar-judge listening on "


class JudgeProcessError(RuntimeError):
  pass


def _wait_for_address(proc: subprocess.Popen, log: pathlib.Path,
                      timeout_s: float) -> str:
  deadline = time.monotonic() + timeout_s
  with selectors.DefaultSelector() as sel:
    sel.register(proc.stdout, selectors.EVENT_READ)
    while (left := deadline - time.monotonic()) > 0 and sel.select(left):
      line = proc.stdout.readline()
      if not line:
        break
      if line.startswith(READY_PREFIX):
        return line.split()[-1]
  proc.kill()
  proc.wait()
  raise JudgeProcessError(
      f"the judge process did not start within {timeout_s:g}s "
      f"(exit code {proc.returncode}); its log: {log}\n"
      + log.read_text()[-2000:])


@contextlib.contextmanager
def launched(server: JudgeConfig, platform: devices.Platform,
             first_device: int, run_dir: pathlib.Path, timeout_s: float):
  """Yields the address of a judge server process using devices
  first_device .. first_device + server.backend.mesh.size - 1."""
  config = dataclasses.replace(server, host="127.0.0.1", port=0)
  config_path = run_dir / "judge.yaml"
  config_path.write_text(yaml.safe_dump(dataclasses.asdict(config)))
  log = run_dir / "judge.log"
  env = devices.process_env(platform, first_device, config.backend.mesh.size,
                            tpu_port=devices.JUDGE_TPU_PORT)
  with open(log, "a") as stderr:
    proc = subprocess.Popen(
        [sys.executable, "-m", "judge_server", "--config", str(config_path)],
        stdout=subprocess.PIPE, stderr=stderr, text=True,
        env={**os.environ, **env})
  try:
    yield _wait_for_address(proc, log, timeout_s)
  finally:
    if proc.poll() is None:
      proc.send_signal(signal.SIGTERM)
      try:
        proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
