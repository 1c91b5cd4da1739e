"""Who may call the judge: bearer tokens, TLS, mutual TLS.

The health service stays open without a token: load balancers, Kubernetes
gRPC probes and `docker HEALTHCHECK` cannot send one, and it tells only
SERVING or NOT_SERVING. Everything else, reflection and the HTTP face's
/get_reward included, needs one.
"""

import hmac
import pathlib
from typing import Callable

import grpc

from grar_config.strict import ConfigError
from judge_server.config import AuthConfig, TLSConfig
from protos.contract import AUTHORIZATION

_SCHEME = "bearer "
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check",
                          "/grpc.health.v1.Health/Watch"})


def read_file(field: str, path: str) -> bytes:
  try:
    return pathlib.Path(path).read_bytes()
  except OSError as e:
    raise ConfigError(f"{field}: {path}: cannot read: {e.strerror}") from None


def load_tokens(auth: AuthConfig) -> tuple[bytes, ...]:
  """The tokens of auth.token_file (none when it is ""): one per line,
  blank lines and '#' comments skipped; ConfigError when it holds none."""
  if not auth.token_file:
    return ()
  field, path = "auth.token_file", auth.token_file
  lines = read_file(field, path).decode("utf-8", "replace").splitlines()
  tokens = tuple(line.strip().encode() for line in lines
                 if line.strip() and not line.lstrip().startswith("#"))
  if not tokens:
    raise ConfigError(f"{field}: {path}: holds no token")
  return tokens


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials | None:
  """None for plaintext; client_ca_file makes client certificates required."""
  if not tls.cert_file:
    return None
  chain = read_file("tls.cert_file", tls.cert_file)
  key = read_file("tls.key_file", tls.key_file)
  client_ca = (read_file("tls.client_ca_file", tls.client_ca_file)
               if tls.client_ca_file else None)
  return grpc.ssl_server_credentials(
      [(key, chain)], root_certificates=client_ca,
      require_client_auth=client_ca is not None)


def _refusal(handler: grpc.RpcMethodHandler,
             details: str) -> grpc.RpcMethodHandler:
  """A handler of `handler`'s kind that refuses the call unread: no
  deserializer, so an unauthenticated caller's bytes are never parsed."""
  async def refuse(request, context):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, details)
  kind = {(False, False): grpc.unary_unary_rpc_method_handler,
          (False, True): grpc.unary_stream_rpc_method_handler,
          (True, False): grpc.stream_unary_rpc_method_handler,
          (True, True): grpc.stream_stream_rpc_method_handler}
  return kind[handler.request_streaming, handler.response_streaming](refuse)


def token_problem(tokens: tuple[bytes, ...], value) -> str:
  """Why an `authorization` value (None when absent) is refused, or "" when
  it is 'Bearer TOKEN' with one of `tokens`, compared in constant time.
  The gRPC interceptor and the HTTP face both ask this."""
  if value is None:
    return f"{AUTHORIZATION}: missing; send 'Bearer TOKEN'"
  if not isinstance(value, str) or value[:len(_SCHEME)].lower() != _SCHEME:
    return f"{AUTHORIZATION}: expected 'Bearer TOKEN'"
  given = value[len(_SCHEME):].strip().encode()
  valid = False
  for token in tokens:  # all of them, so the time says nothing
    valid |= hmac.compare_digest(token, given)
  return "" if valid else f"{AUTHORIZATION}: unknown bearer token"


class BearerAuth(grpc.aio.ServerInterceptor):
  """Lets a call through when its `authorization` metadata passes
  token_problem; otherwise answers UNAUTHENTICATED and calls
  `on_refused(method)`."""

  def __init__(self, tokens: tuple[bytes, ...],
               on_refused: Callable[[str], None]):
    self._tokens = tokens
    self._on_refused = on_refused

  async def intercept_service(self, continuation, handler_call_details):
    method = handler_call_details.method
    problem = ""
    if method not in OPEN_METHODS:
      values = [v for k, v in handler_call_details.invocation_metadata or ()
                if k == AUTHORIZATION]
      problem = token_problem(self._tokens, values[0] if values else None)
    handler = await continuation(handler_call_details)
    if not problem or handler is None:
      return handler
    self._on_refused(method)
    return _refusal(handler, problem)


def interceptors(tokens: tuple[bytes, ...],
                 on_refused: Callable[[str], None]) -> list[BearerAuth]:
  """The gRPC server's auth: none when `tokens` (load_tokens) is empty."""
  return [BearerAuth(tokens, on_refused)] if tokens else []
