"""A local stand-in for the Gemini API, on 127.0.0.1: the Gemini API cannot
be reached from here, so the gemini backend is tested against this server,
which speaks the same REST shape (`POST /v1beta/models/{model}:
generateContent`, key in `x-goog-api-key`, the answer in
candidates[0].content.parts and, when asked, the top alternatives of the
first token in candidates[0].logprobsResult.topCandidates[0]).

It is Vertex AI's generateContent too (`POST /v1beta1/projects/{project}/
locations/{location}/publishers/google/models/{model}:generateContent`, an
OAuth access token in `authorization: Bearer`), and the OAuth token
endpoint (`POST /token`) that the service account credentials written by
`adc_file` get their token from, so the Vertex AI path runs as on a VM with no
Google server reached.

Its answer is a fixed distribution over the score digits (`DIGITS`). Tests
queue faults with `fail`: an HTTP status (with optional headers), a delay
before answering, a blocked prompt or an answer of another shape; each
queued fault serves one request, then answers are normal again. Every
request is recorded.

A test module imports the fixtures `standin` (one stand-in per module) and
`fresh` (autouse: each test starts with no faults or records, and the key
in KEY_ENV), and builds configs with `backend_config`.
"""

import contextlib
import dataclasses
import http.server
import json
import math
import re
import threading
import time
from typing import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from judge_server import config as config_lib

MODEL = "gemini-standin"
KEY = "standin-key"
KEY_ENV = "GRAR_TEST_GEMINI_KEY"  # where the tests put KEY (api_key_env)
# The judge's distribution over its first token: 7 most likely.
DIGITS = {"7": 0.6, " 8": 0.25, "3": 0.05, "The": 0.1}
EXPECTED = (7 * 0.6 + 8 * 0.25 + 3 * 0.05) / (0.9 * 9)
SCALE = config_lib.CriteriaConfig(format="scale", few_shot=False)
PROJECT, LOCATION = "standin-project", "standin-region"
TOKEN = "standin-access-token"  # what /token hands out
_PATH = re.compile(r"^/v1beta/models/([^/:]+):generateContent$")
_VERTEX_PATH = re.compile(
    rf"^/v1beta1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/"
    r"models/([^/:]+):generateContent$")


@dataclasses.dataclass(frozen=True)
class Fault:
  status: int = 200
  headers: tuple[tuple[str, str], ...] = ()
  delay_s: float = 0.0
  blocked: bool = False
  body: dict | None = None  # answered (200) in place of the normal answer


@dataclasses.dataclass(frozen=True)
class Request:
  path: str
  headers: dict[str, str]
  body: dict
  arrived: float  # time.monotonic()


def answer(body: dict, text: str = "7") -> dict:
  """A generateContent answer in the API's shape."""
  candidate = {"content": {"role": "model", "parts": [{"text": text}]},
               "finishReason": "STOP", "index": 0}
  generation = body.get("generationConfig", {})
  if generation.get("responseLogprobs"):
    tops = sorted(DIGITS.items(), key=lambda kv: -kv[1])
    tops = tops[:generation.get("logprobs", len(tops))]
    candidate["logprobsResult"] = {
        "topCandidates": [{"candidates": [
            {"token": t, "logProbability": math.log(p)} for t, p in tops]}],
        "chosenCandidates": [{"token": text,
                              "logProbability": math.log(0.6)}]}
  return {"candidates": [candidate],
          "usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 11}}


class StandIn(http.server.ThreadingHTTPServer):
  daemon_threads = True

  def __init__(self):
    super().__init__(("127.0.0.1", 0), _Handler)
    self.faults: list[Fault] = []
    self.requests: list[Request] = []
    self.text = "7"  # what the model writes
    self.tokens_issued = 0
    self.in_flight = self.peak = 0
    self.lock = threading.Lock()

  @property
  def base_url(self) -> str:
    return f"http://127.0.0.1:{self.server_address[1]}"

  def fail(self, *faults: Fault) -> None:
    with self.lock:
      self.faults.extend(faults)

  def reset(self) -> None:
    with self.lock:
      self.faults.clear()
      self.requests.clear()
      self.text = "7"
      self.tokens_issued = 0
      self.peak = 0


class _Handler(http.server.BaseHTTPRequestHandler):
  server: StandIn
  protocol_version = "HTTP/1.1"

  def log_message(self, *args) -> None:
    pass

  def _send(self, status: int, payload: dict, headers=()) -> None:
    data = json.dumps(payload).encode()
    self.send_response(status)
    self.send_header("content-type", "application/json")
    self.send_header("content-length", str(len(data)))
    for k, v in headers:
      self.send_header(k, v)
    self.end_headers()
    try:
      self.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up
      pass

  def _authorized(self, vertex: bool) -> bool:
    if vertex:
      return self.headers.get("authorization") == f"Bearer {TOKEN}"
    return self.headers.get("x-goog-api-key") == KEY

  def do_POST(self) -> None:
    raw = self.rfile.read(int(self.headers["content-length"]))
    s = self.server
    if self.path == "/token":  # a form, not JSON: a signed token request
      with s.lock:
        s.tokens_issued += 1
      self._send(200, {"access_token": TOKEN, "expires_in": 3600,
                       "token_type": "Bearer"})
      return
    body = json.loads(raw)
    with s.lock:
      s.requests.append(Request(self.path, {k.lower(): v for k, v in
                                            self.headers.items()},
                                body, time.monotonic()))
      fault = s.faults.pop(0) if s.faults else Fault()
      s.in_flight += 1
      s.peak = max(s.peak, s.in_flight)
    try:
      time.sleep(fault.delay_s)
      vertex = _VERTEX_PATH.match(self.path)
      m = vertex or _PATH.match(self.path)
      if not self._authorized(vertex is not None):
        self._send(403, {"error": {"code": 403, "status": "PERMISSION_DENIED",
                                   "message": "API key not valid"}})
      elif m is None or m.group(1) != MODEL:
        self._send(404, {"error": {"code": 404, "status": "NOT_FOUND",
                                   "message": f"no model at {self.path}"}})
      elif fault.status != 200:
        self._send(fault.status, {"error": {"code": fault.status,
                                            "message": "injected"}},
                   fault.headers)
      elif fault.body is not None:
        self._send(200, fault.body)
      elif fault.blocked:
        self._send(200, {"promptFeedback": {"blockReason": "SAFETY"}})
      else:
        self._send(200, answer(body, s.text))
    finally:
      with s.lock:
        s.in_flight -= 1


@contextlib.contextmanager
def serving() -> Iterator[StandIn]:
  server = StandIn()
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield server
  finally:
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
  with serving() as s:
    yield s


@pytest.fixture(autouse=True)
def fresh(standin, monkeypatch) -> None:
  standin.reset()
  monkeypatch.setenv(KEY_ENV, KEY)


def adc_file(standin: StandIn, folder) -> str:
  """Application Default Credentials of a service account (a key file, as
  the account a VM runs as), with a key made here, that get their access
  token from `standin`: the path to put in GOOGLE_APPLICATION_CREDENTIALS."""
  key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
  pem = key.private_bytes(serialization.Encoding.PEM,
                          serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()).decode()
  path = folder / "adc.json"
  path.write_text(json.dumps({
      "type": "service_account", "project_id": PROJECT,
      "private_key_id": "standin", "private_key": pem,
      "client_email": "judge@standin-project.iam.gserviceaccount.com",
      "client_id": "1", "token_uri": f"{standin.base_url}/token"}))
  return str(path)


def backend_config(standin: StandIn,
                   resilience=config_lib.ResilienceConfig(),
                   **gemini_fields) -> config_lib.BackendConfig:
  """The gemini backend pointed at `standin`, asking on the 0-9 scale
  zero-shot: the stand-in answers digits."""
  return config_lib.BackendConfig(
      kind="gemini", resilience=resilience, criteria=SCALE,
      gemini=config_lib.GeminiConfig(
          base_url=standin.base_url, model=MODEL, api_key_env=KEY_ENV,
          **gemini_fields))
