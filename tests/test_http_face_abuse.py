"""What a client can hold of the OpenRLHF face (POST /get_reward): clients
that trickle their requests, kept-alive connections, too many connections,
and the face and the metrics port over TLS. Real sockets against in-process
judges on loopback that judge with the Gemini stand-in
(tests/gemini_standin.py); certificates from test_judge_security's
throwaway CA."""

import concurrent.futures
import dataclasses
import selectors
import socket
import ssl
import statistics
import time
import uuid

import httpx
import pytest

from judge_server import config as config_lib
from judge_server import server
from judge_server.backends import gemini
from grar_config import strict
from gemini_standin import (  # noqa: F401 (fixtures)
    EXPECTED, backend_config, fresh, standin)
from test_judge_security import pki  # noqa: F401 (fixture)
import processes

DEADLINE_S = 1.0
SLACK_S = 1.0  # a loaded 2-core machine's share of "at once"
TRICKLE_S = 0.2  # a byte per trickling connection this often


def face_judge(standin, tls=config_lib.TLSConfig(), metrics_port=0,
               **openrlhf) -> server.ThreadedServer:
  """A judge serving the HTTP face with `openrlhf` settings (the deadline
  DEADLINE_S unless given), no tokens."""
  openrlhf.setdefault("header_deadline_s", DEADLINE_S)
  openrlhf.setdefault("keepalive_timeout_s", openrlhf["header_deadline_s"])
  cfg = backend_config(standin)
  return server.run_in_thread(config_lib.JudgeConfig(
      backend=cfg, tls=tls,
      limits=config_lib.Limits(max_queue_depth=1 << 16),
      metrics=config_lib.MetricsConfig(port=metrics_port),
      openrlhf=config_lib.OpenRLHFConfig(port=processes.free_port(),
                                         **openrlhf)),
      gemini.build(cfg))


def payload() -> dict:
  """A rollout no other judged, so the stand-in judges it (no cache)."""
  return {"query": [f"What is 2 + 2?<answer>4</answer> {uuid.uuid4()}"],
          "prompts": ["What is 2 + 2?"],
          "labels": [{"reference_answer": "4", "aggregation": "implicit"}]}


def dropped(handle, reason: str) -> float:
  return handle.metrics.registry.get_sample_value(
      "grar_judge_http_connections_dropped_total", {"reason": reason})


def open_connections(handle) -> float:
  return handle.metrics.registry.get_sample_value(
      "grar_judge_http_connections")


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
  """True when the server closes `sock` (EOF or reset) within `timeout`."""
  sock.settimeout(timeout)
  try:
    return sock.recv(4096) == b""
  except ConnectionResetError:
    return True
  except TimeoutError:
    return False


def median_latency(client: httpx.Client, n: int) -> float:
  times = []
  for _ in range(n):
    start = time.perf_counter()
    response = client.post("/get_reward", json=payload())
    times.append(time.perf_counter() - start)
    assert response.status_code == 200, response.text
    assert response.json()["rewards"] == [pytest.approx(EXPECTED)]
  return statistics.median(times)


HEADER = (b"POST /get_reward HTTP/1.1\r\nhost: judge\r\n"
          b"content-type: application/json\r\n")


@dataclasses.dataclass
class Trickler:
  """A connection sending one byte every TRICKLE_S: of its header (`body`
  False), or of its body after a whole header."""
  sock: socket.socket
  opened: float
  closed: float | None = None

  @classmethod
  def open(cls, port: int, body: bool) -> "Trickler":
    sock = socket.create_connection(("127.0.0.1", port), 10)
    opened = time.monotonic()
    sock.sendall(HEADER + b"content-length: 100000\r\n\r\n" if body
                 else HEADER[:10])
    return cls(sock, opened)


def trickle(tricklers: list[Trickler], until: float) -> None:
  """Sends each open trickler a byte every TRICKLE_S and notes when the
  server closes it, until all are closed or `until` (monotonic)."""
  with selectors.DefaultSelector() as sel:
    for t in tricklers:
      sel.register(t.sock, selectors.EVENT_READ, t)
    next_byte = time.monotonic()
    while sel.get_map() and time.monotonic() < until:
      now = time.monotonic()
      if now >= next_byte:
        for key in list(sel.get_map().values()):
          try:
            key.fileobj.send(b"a")
          except OSError:
            pass  # closed: the read below sees it
        next_byte = now + TRICKLE_S
      for key, _ in sel.select(max(0.0, next_byte - time.monotonic())):
        try:
          data = key.fileobj.recv(4096)
        except ConnectionResetError:
          data = b""
        assert data == b"", f"answered a trickler: {data[:80]!r}"
        key.data.closed = time.monotonic()
        sel.unregister(key.fileobj)


def test_tricklers_are_closed_at_the_deadline_and_others_answered_meanwhile(
    standin):
  """Half trickle their header, half their body; all are closed
  DEADLINE_S after they connected, and a real request beside them is
  answered about as fast as without them."""
  n = 50
  handle = face_judge(standin)
  url = f"http://127.0.0.1:{handle.openrlhf_port}"
  tricklers = []
  try:
    with httpx.Client(base_url=url, timeout=30) as client, \
        concurrent.futures.ThreadPoolExecutor(1) as pool:
      median_latency(client, 3)  # warm
      alone = median_latency(client, 5)
      tricklers = [Trickler.open(handle.openrlhf_port, body=i % 2 == 1)
                   for i in range(n)]
      trickling = pool.submit(trickle, tricklers,
                              time.monotonic() + DEADLINE_S + 5 * SLACK_S)
      beside = median_latency(client, 5)
      connected = sum(t.closed is None for t in tricklers)
      trickling.result()
  finally:
    for t in tricklers:
      t.sock.close()
    handle.stop()
  late = [t.closed - t.opened if t.closed else None for t in tricklers
          if t.closed is None or t.closed - t.opened > DEADLINE_S + SLACK_S]
  assert late == [], f"{len(late)} of {n} closed late or never: {late[:5]}"
  assert connected == n, "the requests were not made beside the tricklers"
  assert beside <= 3 * alone + 0.5, (alone, beside)
  # Only the deadline closes a connection whose header arrived; aiohttp's
  # keep-alive timer may beat it to the others.
  assert n // 2 <= dropped(handle, "deadline") <= n


def test_a_kept_alive_connection_gets_the_deadline_again_and_a_last_answer(
    standin):
  """After an answer, the next request has DEADLINE_S to arrive; the
  answer to request max_requests_per_connection closes the connection."""
  handle = face_judge(standin, max_requests_per_connection=3)
  port = handle.openrlhf_port
  try:
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
      sock.sendall(b"GET /health HTTP/1.1\r\nhost: judge\r\n\r\n")
      assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
      answered = time.monotonic()
      # The second request's header, then only part of its body.
      sock.sendall(HEADER + b"content-length: 100\r\n\r\n{")
      assert closed_by_server(sock, DEADLINE_S + SLACK_S)
      assert time.monotonic() - answered > DEADLINE_S * 0.9
    assert dropped(handle, "deadline") == 1
    with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                      timeout=30) as client:
      said = [client.post("/get_reward", json=payload()).headers.get(
          "connection") for _ in range(4)]
    # The 4th on a new connection, which has 2 more to go.
    assert said == [None, None, "close", None]
  finally:
    handle.stop()


def test_a_connection_past_max_connections_is_closed_and_counted(standin):
  handle = face_judge(standin, max_connections=3, header_deadline_s=30.0)
  port = handle.openrlhf_port
  held = [socket.create_connection(("127.0.0.1", port), 10) for _ in range(3)]
  try:
    deadline = time.monotonic() + 10
    while open_connections(handle) < 3:
      assert time.monotonic() < deadline
      time.sleep(0.01)
    with socket.create_connection(("127.0.0.1", port), 10) as extra:
      assert closed_by_server(extra, 5)
    assert dropped(handle, "max_connections") == 1
    assert open_connections(handle) == 3
    held.pop().close()
    while open_connections(handle) > 2:
      assert time.monotonic() < deadline
      time.sleep(0.01)
    response = httpx.post(f"http://127.0.0.1:{port}/get_reward",
                          json=payload(), timeout=30)
    assert response.status_code == 200, response.text
  finally:
    for sock in held:
      sock.close()
    handle.stop()
  assert dropped(handle, "max_connections") == 1
  assert dropped(handle, "deadline") == 0


def tls_judge(standin, pki, mutual: bool,
              metrics_port: int) -> server.ThreadedServer:
  return face_judge(
      standin, metrics_port=metrics_port,
      tls=config_lib.TLSConfig(
          cert_file=str(pki / "server.pem"), key_file=str(pki / "server.key"),
          client_ca_file=str(pki / "ca.pem") if mutual else ""))


def client_context(pki, cert: str = "") -> ssl.SSLContext:
  context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
  if cert:
    context.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}.key")
  return context


def test_tls_face_and_metrics(standin, pki):
  """HTTPS on both ports; plain HTTP to them gets no answer; a client that
  never finishes its handshake with the metrics port holds up no one."""
  metrics_port = processes.free_port()
  handle = tls_judge(standin, pki, mutual=False, metrics_port=metrics_port)
  face = f"127.0.0.1:{handle.openrlhf_port}"
  metrics = f"127.0.0.1:{metrics_port}"
  try:
    with socket.create_connection(("127.0.0.1", metrics_port), 10), \
        httpx.Client(verify=client_context(pki), timeout=30) as client:
      response = client.post(f"https://{face}/get_reward", json=payload())
      assert response.status_code == 200, response.text
      assert response.json()["rewards"] == [pytest.approx(EXPECTED)]
      scraped = client.get(f"https://{metrics}/metrics")
      assert scraped.status_code == 200
      assert "grar_judge_http_connections " in scraped.text
    for address in (face, metrics):
      with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{address}/health", timeout=10)
  finally:
    handle.stop()


def test_mutual_tls_needs_a_client_certificate_from_the_ca(standin, pki):
  metrics_port = processes.free_port()
  handle = tls_judge(standin, pki, mutual=True, metrics_port=metrics_port)
  try:
    for address in (f"127.0.0.1:{handle.openrlhf_port}/health",
                    f"127.0.0.1:{metrics_port}/metrics"):
      for cert in ("", "intruder"):
        with pytest.raises(httpx.TransportError):
          httpx.get(f"https://{address}", timeout=10,
                    verify=client_context(pki, cert))
      good = httpx.get(f"https://{address}", timeout=10,
                       verify=client_context(pki, "client"))
      assert good.status_code == 200, address
  finally:
    handle.stop()


@pytest.mark.parametrize("override, message", [
    ("openrlhf.header_deadline_s=0", "openrlhf.header_deadline_s: must be a "
     "finite number > 0"),
    ("openrlhf.max_connections=0", "openrlhf.max_connections: must be >= 1"),
    ("openrlhf.max_requests_per_connection=0",
     "openrlhf.max_requests_per_connection: must be >= 1"),
    ("openrlhf.keepalive_timeout_s=30", "openrlhf.keepalive_timeout_s: 30.0, "
     "more than header_deadline_s=10.0, which closes an idle connection "
     "first"),
])
def test_config_is_checked(override, message):
  with pytest.raises(strict.ConfigError) as e:
    config_lib.load(None, [override])
  assert str(e.value) == message


@pytest.mark.parametrize("tls, problem", [
    ({"cert_file": "server.pem", "key_file": "client.key"},
     "tls.cert_file: {d}/server.pem with tls.key_file: {d}/client.key: not "
     "a PEM chain and its key: KEY_VALUES_MISMATCH"),
    ({"cert_file": "server.pem", "key_file": "server.key",
      "client_ca_file": "empty-ca.pem"},
     "tls.client_ca_file: {d}/empty-ca.pem: not PEM certificates"),
], ids=["key-of-another", "empty-client-ca"])
def test_tls_files_the_http_ports_cannot_use_are_refused_up_front(
    pki, tls, problem):
  (pki / "empty-ca.pem").write_text("")
  config = strict.from_dict(config_lib.JudgeConfig, {
      "tls": {k: str(pki / v) for k, v in tls.items()}})
  with pytest.raises(strict.ConfigError) as e:
    server.check(config)
  assert str(e.value).startswith(problem.format(d=pki)), e.value
