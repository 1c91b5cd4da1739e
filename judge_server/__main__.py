"""`python -m judge_server --config FILE [--set key=value ...]`.

Prints `grar-judge listening on HOST:PORT` once serving; SIGTERM or SIGINT
stops it after in-flight work is done; SIGHUP reads auth.token_file again.
Bad configuration: one line on stderr, exit code 2.
"""

import argparse
import asyncio
import signal
import sys

from judge_server import config as config_lib
from judge_server import http_face
from judge_server import observability
from judge_server import server
from judge_server.backends import factory
from judge_server.backends.base import Backend
from protos.rubric import RubricError
from grar_config.strict import ConfigError

SHUTDOWN_GRACE_S = 30.0


async def _serve(config: config_lib.JudgeConfig, backend: Backend) -> None:
  try:
    handle = await server.start(config, backend)
    loop = asyncio.get_running_loop()
    # Before the "listening" line, so a SIGHUP after it never kills.
    loop.add_signal_handler(signal.SIGHUP, handle.reload_tokens)
    if handle.openrlhf_port:
      # stderr: stdout's one line is the "listening" line callers wait for.
      scheme = "https" if config.tls.cert_file else "http"
      print(f"grar-judge: openrlhf reward model on {scheme}://"
            f"{config.openrlhf.host}:{handle.openrlhf_port}{http_face.PATH}",
            file=sys.stderr, flush=True)
    print(f"grar-judge listening on {handle.address}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
      loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # A second signal during the graceful stop ends the process at once.
    for sig in (signal.SIGTERM, signal.SIGINT):
      loop.remove_signal_handler(sig)
    await handle.stop(SHUTDOWN_GRACE_S)
  finally:
    await backend.close()


def serve(config: config_lib.JudgeConfig) -> int:
  """Runs the judge until SIGTERM/SIGINT; returns the process exit code."""
  observability.configure_logging(config.log_format)
  try:
    server.check(config)  # fail before a slow backend build
    asyncio.run(_serve(config, factory.build(config.backend)))
  except (ConfigError, RubricError) as e:
    print(f"grar-judge: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    print(f"grar-judge: {e}", file=sys.stderr)
    return 1
  return 0


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m judge_server", description="The grar judge server.")
  parser.add_argument("--config", metavar="FILE",
                      help="YAML config (default: all defaults)")
  parser.add_argument("--set", metavar="KEY=VALUE", action="append",
                      default=[], help="override a config key, e.g. port=50051")
  args = parser.parse_args(argv)
  try:
    config = config_lib.load(args.config, args.set)
  except ConfigError as e:
    print(f"grar-judge: {e}", file=sys.stderr)
    return 2
  return serve(config)


if __name__ == "__main__":
  sys.exit(main())
