"""How the trainer and `grar judge score` reach a judge server: plaintext or
TLS (mutual TLS with a client certificate), a bearer token on every call,
and the judge's hint of when to come back after RESOURCE_EXHAUSTED."""

import pathlib
import time

import grpc

from grar_config import strict
from protos.contract import AUTHORIZATION, MAX_MESSAGE_BYTES, RETRY_AFTER_KEY


class ChannelError(ValueError):
  """A channel setting that cannot be used; the message names the field."""


@strict.config
class ChannelConfig:
  """token_file: a file whose first line is the judge's bearer token; ""
  sends none. TLS is on with ca_file (the CA that signed the judge's
  certificate) or tls: true (the CAs gRPC ships); cert_file and key_file
  add a client certificate (mutual TLS). server_name: the name to check
  the judge's certificate against when it is not the target's host."""
  token_file: str = ""
  tls: bool = False
  ca_file: str = ""
  cert_file: str = ""
  key_file: str = ""
  server_name: str = ""

  def __post_init__(self):
    if self.cert_file and not self.key_file:
      raise ValueError("key_file: required with cert_file")
    if self.key_file and not self.cert_file:
      raise ValueError("cert_file: required with key_file")
    for name in ("cert_file", "server_name"):
      if getattr(self, name) and not self.secure:
        raise ValueError(f"{name}: needs TLS (ca_file, or tls: true)")

  @property
  def secure(self) -> bool:
    return self.tls or bool(self.ca_file)


def _read(field: str, path: str) -> bytes:
  try:
    return pathlib.Path(path).read_bytes()
  except OSError as e:
    raise ChannelError(f"{field}: {path}: cannot read: {e.strerror}") from None


def _token(path: str) -> str:
  lines = _read("token_file", path).decode("utf-8", "replace").splitlines()
  if not lines or not lines[0].strip():
    raise ChannelError(f"token_file: {path}: the first line holds no token")
  return lines[0].strip()


class _Details(grpc.ClientCallDetails):
  def __init__(self, details: grpc.ClientCallDetails, metadata):
    self.method = details.method
    self.timeout = details.timeout
    self.credentials = details.credentials
    self.wait_for_ready = details.wait_for_ready
    self.compression = details.compression
    self.metadata = metadata


class _BearerToken(grpc.UnaryUnaryClientInterceptor,
                   grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor,
                   grpc.StreamStreamClientInterceptor):
  """Adds `authorization: Bearer TOKEN` to every call; an interceptor rather
  than call credentials, which gRPC sends only over TLS, so plaintext on
  loopback works the same."""

  def __init__(self, token: str):
    self._header = (AUTHORIZATION, f"Bearer {token}")

  def _with_token(self, details):
    return _Details(details, [*(details.metadata or ()), self._header])

  def intercept_unary_unary(self, continuation, details, request):
    return continuation(self._with_token(details), request)

  def intercept_unary_stream(self, continuation, details, request):
    return continuation(self._with_token(details), request)

  def intercept_stream_unary(self, continuation, details, requests):
    return continuation(self._with_token(details), requests)

  def intercept_stream_stream(self, continuation, details, requests):
    return continuation(self._with_token(details), requests)


def create(target: str, config: ChannelConfig = ChannelConfig()
           ) -> grpc.Channel:
  """A channel to the judge at HOST:PORT; ChannelError for a file that
  cannot be read."""
  options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
             ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
  token = _token(config.token_file) if config.token_file else ""
  if config.secure:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(_read("ca_file", config.ca_file)
                           if config.ca_file else None),
        private_key=(_read("key_file", config.key_file)
                     if config.key_file else None),
        certificate_chain=(_read("cert_file", config.cert_file)
                           if config.cert_file else None))
    if config.server_name:
      options.append(("grpc.ssl_target_name_override", config.server_name))
    channel = grpc.secure_channel(target, credentials, options)
  else:
    channel = grpc.insecure_channel(target, options)
  return grpc.intercept_channel(channel, _BearerToken(token)) if token else (
      channel)


def retry_after_s(error: grpc.RpcError) -> float:
  """The wait the judge asked for with RESOURCE_EXHAUSTED; 0 when none."""
  for key, value in error.trailing_metadata() or ():
    if key == RETRY_AFTER_KEY:
      try:
        return max(float(value), 0.0) / 1000
      except ValueError:
        return 0.0
  return 0.0


class Resends:
  """The deadline of one score() call and the pauses between its re-sends:
  doubling from 0.2 s up to 5 s, or what the judge asked for, never past
  the deadline. The client and the replica pool re-send the same way."""
  FIRST_S, MAX_S = 0.2, 5.0

  def __init__(self, timeout_s: float):
    self.deadline = time.monotonic() + timeout_s
    self._next = self.FIRST_S

  def left(self) -> float:
    return self.deadline - time.monotonic()

  def pause(self, asked_s: float = 0.0) -> None:
    """Sleeps before the next re-send: asked_s when the judge said so."""
    time.sleep(min(asked_s or self._next, max(self.left(), 0)))
    self._next = min(self._next * 2, self.MAX_S)
