"""Who may call the judge: bearer tokens, TLS, mutual TLS.

The health service stays open without a token: load balancers, Kubernetes
gRPC probes and `docker HEALTHCHECK` cannot send one, and it tells only
SERVING or NOT_SERVING. Everything else, reflection and the HTTP face's
/get_reward included, needs one.

The token file is read again when it changes (TokenSet), so tokens rotate
without a restart.
"""

import hmac
import logging
import os
import pathlib
import ssl
import stat
import time
from typing import Callable, Iterator

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


def _parse_tokens(field: str, path: str, data: bytes) -> tuple[bytes, ...]:
  lines = data.decode("utf-8", "replace").splitlines()
  tokens = tuple(line.strip().encode() for line in lines
                 if line.strip() and not line.lstrip().startswith("#"))
  if not tokens:
    raise ConfigError(f"{field}: {path}: holds no token")
  return tokens


def load_tokens(auth: AuthConfig) -> tuple[bytes, ...]:
  """The tokens of auth.token_file (none when it is ""): one per line,
  blank lines and '#' comments skipped; ConfigError when it holds none."""
  if not auth.token_file:
    return ()
  field, path = "auth.token_file", auth.token_file
  return _parse_tokens(field, path, read_file(field, path))


LOGGER = logging.getLogger("grar.judge")
# How often a call may make the server look at the token file again.
CHECK_INTERVAL_S = 0.5
# A file read this soon after it last changed may change again within the
# file system's timestamp granularity, same size, without its stat showing
# it, so it is read again at each look until then (git's "racily clean").
_RACY_S = 2.0
_RELOAD = "read again as asked"


def _signature(st: os.stat_result) -> tuple:
  return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class TokenSet:
  """The bearer tokens of auth.token_file, read again when the file
  changes: a call looks at the file's inode, size and times when the last
  look is CHECK_INTERVAL_S old, so a token added or removed counts within
  that; `reload` (SIGHUP) reads it at once. A file that cannot be read or
  holds no token mid-run keeps the last good tokens and logs one warning,
  never lets everyone in. A token_file that is not a regular file (a pipe)
  is read at start only. Empty (false) when token_file is "": no auth.

  `current()` is what token_problem compares against; iterating gives the
  same tokens. Used from the server's event loop, which both faces share.
  """

  def __init__(self, auth: AuthConfig, *, clock=time.monotonic,
               interval_s: float = CHECK_INTERVAL_S):
    self._path = auth.token_file
    self._clock = clock
    self._interval_s = interval_s
    self._signature: tuple | None = None
    self._racy = False
    self._failing = ""  # the problem warned about; "" while the file is good
    self._next_check = clock() + interval_s
    st = None
    if self._path:
      try:  # before reading: a change in between is seen at the next look
        st = os.stat(self._path)
      except OSError:
        pass  # load_tokens says why
    self._tokens = load_tokens(auth)  # a bad file at start: ConfigError
    # A regular file; anything else (a pipe) is read at start only.
    self._watched = bool(self._path) and (st is None
                                          or stat.S_ISREG(st.st_mode))
    if st is not None and self._watched:
      self._seen(st)

  def __bool__(self) -> bool:
    return bool(self._path)

  def __iter__(self) -> Iterator[bytes]:
    return iter(self.current())

  def __len__(self) -> int:
    return len(self.current())

  def current(self) -> tuple[bytes, ...]:
    """The tokens now, after a look at the file if the last one is due."""
    if self._watched:
      now = self._clock()
      if now >= self._next_check:
        self._next_check = now + self._interval_s
        self._look(forced=False)
    return self._tokens

  def reload(self) -> None:
    """Reads the file now, changed or not (SIGHUP)."""
    if not self._path:
      return
    if not self._watched:
      LOGGER.warning("auth.token_file: %s: not a regular file, read at start "
                     "only; restart to change the tokens", self._path)
      return
    self._next_check = self._clock() + self._interval_s
    self._look(forced=True)

  def _seen(self, st: os.stat_result) -> None:
    self._signature = _signature(st)
    self._racy = time.time() - st.st_mtime_ns / 1e9 < _RACY_S

  def _look(self, forced: bool) -> None:
    field = "auth.token_file"
    try:
      st = os.stat(self._path)
      if not stat.S_ISREG(st.st_mode):  # a pipe would block the server
        return self._fail("not a regular file")
      if (not forced and not self._racy
          and _signature(st) == self._signature):
        return
      with open(self._path, "rb") as f:
        st = os.fstat(f.fileno())
        data = f.read()
    except OSError as e:
      return self._fail(f"cannot read: {e.strerror}")
    self._seen(st)  # a bad file is looked at again only once it changes
    try:
      tokens = _parse_tokens(field, self._path, data)
    except ConfigError:
      return self._fail("holds no token")
    changed, self._tokens = tokens != self._tokens, tokens
    if self._failing:
      self._failing = ""
      LOGGER.info("%s: %s: good again, now %d tokens", field, self._path,
                  len(tokens))
    elif changed or forced:
      LOGGER.info("%s: %s: %s, now %d tokens", field, self._path,
                  _RELOAD if forced else "changed", len(tokens))

  def _fail(self, problem: str) -> None:
    """Keeps the last good tokens; warns once until the file is good."""
    if self._failing:
      return
    self._failing = problem
    LOGGER.warning("auth.token_file: %s: %s; keeping the last %d tokens "
                   "read", self._path, problem, len(self._tokens))


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


def ssl_context(tls: TLSConfig) -> ssl.SSLContext | None:
  """The HTTP ports' TLS (the OpenRLHF face, metrics), as
  server_credentials is gRPC's: None for plaintext; client_ca_file makes
  client certificates required."""
  if not tls.cert_file:
    return None
  read_file("tls.cert_file", tls.cert_file)  # the same errors as gRPC's
  read_file("tls.key_file", tls.key_file)
  context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
  try:
    context.load_cert_chain(tls.cert_file, tls.key_file)
  except ssl.SSLError as e:
    raise ConfigError(f"tls.cert_file: {tls.cert_file} with tls.key_file: "
                      f"{tls.key_file}: not a PEM chain and its key: "
                      f"{e.reason or e}") from None
  if tls.client_ca_file:
    field = "tls.client_ca_file"
    try:
      context.load_verify_locations(cadata=read_file(
          field, tls.client_ca_file).decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as e:  # ValueError: an empty file
      raise ConfigError(f"{field}: {tls.client_ca_file}: not PEM "
                        f"certificates: {getattr(e, 'reason', '') or e}"
                        ) from None
    context.verify_mode = ssl.CERT_REQUIRED
  return context


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


def token_problem(tokens: "TokenSet | tuple[bytes, ...]", value) -> str:
  """Why an `authorization` value (None when absent) is refused, or "" when
  it is 'Bearer TOKEN' with one of `tokens` (a TokenSet's current ones),
  compared in constant time. The gRPC interceptor and the HTTP face both
  ask this."""
  if isinstance(tokens, TokenSet):
    tokens = tokens.current()
  if value is None:
    return f"{AUTHORIZATION}: missing; send 'Bearer TOKEN'"
  if not isinstance(value, str) or value[:len(_SCHEME)].lower() != _SCHEME:
    return f"{AUTHORIZATION}: expected 'Bearer TOKEN'"
  # Header bytes that are not UTF-8 reach here as surrogates (aiohttp):
  # a wrong token like any other.
  given = value[len(_SCHEME):].strip().encode("utf-8", "surrogateescape")
  valid = False
  for token in tokens:  # all of them, so the time says nothing
    valid |= hmac.compare_digest(token, given)
  return "" if valid else f"{AUTHORIZATION}: unknown bearer token"


class BearerAuth(grpc.aio.ServerInterceptor):
  """Lets a call through when its `authorization` metadata passes
  token_problem; otherwise answers UNAUTHENTICATED and calls
  `on_refused(method)`."""

  def __init__(self, tokens: "TokenSet | tuple[bytes, ...]",
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


def interceptors(tokens: "TokenSet | tuple[bytes, ...]",
                 on_refused: Callable[[str], None]) -> list[BearerAuth]:
  """The gRPC server's auth: none when `tokens` (a TokenSet, or
  load_tokens's) is empty."""
  return [BearerAuth(tokens, on_refused)] if tokens else []
