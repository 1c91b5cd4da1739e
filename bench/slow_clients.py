"""What clients that trickle their requests cost the OpenRLHF face: --clients
connections (half sending their header, half their body after a whole
header) each send one byte every --trickle-s, the pace at which a timeout
per read never fires. openrlhf.header_deadline_s must close every one of
them within the deadline (+ --slack-s), and real /get_reward requests
beside them must be answered about as fast as without them.

The judge server runs in its own process (as a standalone judge does) with
judge_capacity's InstantStandIn backend, NOT a judge: it answers at once,
so the latency is the serving path's, which is what the tricklers could
slow. max_connections is above --clients, so the deadline, not the cap,
has to deal with them, and keepalive_timeout_s is the deadline, so that
none is let go sooner (aiohttp's keep-alive timer also closes a connection
whose header is still arriving). Each real request is a fresh rollout (no cache
hits), one at a time on a kept-alive connection: --requests of them
before, while and after the tricklers are connected. Prints a table and a
last line of name=value pairs.

  .venv/bin/python bench/slow_clients.py [--clients 1000] [--deadline-s 10]
"""

import argparse
import asyncio
import dataclasses
import multiprocessing
import pathlib
import resource
import selectors
import socket
import statistics
import sys
import threading
import time
import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent
                       / "tests"))
import processes  # noqa: E402
from judge_capacity import InstantStandIn  # noqa: E402
from judge_server import server  # noqa: E402
from judge_server.config import (  # noqa: E402
    JudgeConfig, Limits, MetricsConfig, OpenRLHFConfig)

HEADER = (b"POST /get_reward HTTP/1.1\r\nhost: judge\r\n"
          b"content-type: application/json\r\n")


def _serve(config: JudgeConfig, ready: multiprocessing.Queue) -> None:
  async def run():
    await server.start(config, InstantStandIn())
    ready.put(True)
    await asyncio.Event().wait()  # until the parent terminates this process
  asyncio.run(run())


@dataclasses.dataclass
class Trickler:
  sock: socket.socket
  body: bool  # trickling its body after a whole header; else its header
  opened: float
  closed: float | None = None


def _open(port: int, body: bool) -> Trickler:
  sock = socket.create_connection(("127.0.0.1", port), 30)
  sock.setblocking(False)
  opened = time.monotonic()
  sock.send(HEADER + b"content-length: 1000000\r\n\r\n" if body
            else HEADER[:10])
  return Trickler(sock, body, opened)


def _trickle(tricklers: list[Trickler], every_s: float,
             until: float) -> None:
  """A byte to each open trickler every `every_s`; notes when the server
  closes each, until all are closed or `until` (monotonic)."""
  with selectors.DefaultSelector() as sel:
    for t in tricklers:
      sel.register(t.sock, selectors.EVENT_READ, t)
    next_byte = time.monotonic() + every_s
    while sel.get_map() and time.monotonic() < until:
      if time.monotonic() >= next_byte:
        for key in list(sel.get_map().values()):
          try:
            key.fileobj.send(b"a")
          except OSError:
            pass  # closed: the read below sees it
        next_byte += every_s
      for key, _ in sel.select(max(0.0, next_byte - time.monotonic())):
        try:
          data = key.fileobj.recv(4096)
        except (ConnectionResetError, BlockingIOError):
          data = b""
        key.data.closed = time.monotonic()
        sel.unregister(key.fileobj)
        assert data == b"", f"a trickler was answered: {data[:80]!r}"


def _latencies(client: httpx.Client, n: int) -> list[float]:
  times = []
  for _ in range(n):
    payload = {"query": [f"What is 2 + 2?<answer>4</answer> {uuid.uuid4()}"],
               "prompts": ["What is 2 + 2?"], "labels": ["4"]}
    start = time.perf_counter()
    response = client.post("/get_reward", json=payload)
    times.append(time.perf_counter() - start)
    assert response.status_code == 200, response.text
    assert response.json()["unscorable"] == [], response.text
  return times


def _dropped(metrics_url: str) -> dict[str, int]:
  """grar_judge_http_connections_dropped_total by reason."""
  text = httpx.get(metrics_url, timeout=30).text
  return {s.labels["reason"]: int(s.value)
          for family in text_string_to_metric_families(text)
          if family.name == "grar_judge_http_connections_dropped"
          for s in family.samples if s.name.endswith("_total")}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--clients", type=int, default=1000)
  p.add_argument("--trickle-s", type=float, default=1.0,
                 help="seconds between a trickler's bytes")
  p.add_argument("--deadline-s", type=float, default=10.0,
                 help="openrlhf.header_deadline_s (its default: 10)")
  p.add_argument("--slack-s", type=float, default=1.0)
  p.add_argument("--requests", type=int, default=40,
                 help="real requests in each phase")
  args = p.parse_args(argv)

  # Each trickler is a socket here and one in the judge's process.
  soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
  if soft < 2 * args.clients + 256:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
  face_port = processes.free_port()
  metrics_port = processes.free_port()
  config = JudgeConfig(
      limits=Limits(max_queue_depth=1 << 30),
      metrics=MetricsConfig(port=metrics_port),
      openrlhf=OpenRLHFConfig(
          port=face_port, header_deadline_s=args.deadline_s,
          keepalive_timeout_s=args.deadline_s,
          max_connections=args.clients + 64))
  ctx = multiprocessing.get_context("spawn")
  ready = ctx.Queue()
  proc = ctx.Process(target=_serve, args=(config, ready), daemon=True)
  proc.start()
  tricklers: list[Trickler] = []
  try:
    ready.get(timeout=120)
    with httpx.Client(base_url=f"http://127.0.0.1:{face_port}",
                      timeout=60) as client:
      _latencies(client, 10)  # warm
      before = _latencies(client, args.requests)
      start = time.monotonic()
      tricklers = [_open(face_port, body=i % 2 == 1)
                   for i in range(args.clients)]
      opening_s = time.monotonic() - start
      thread = threading.Thread(target=_trickle, args=(
          tricklers, args.trickle_s,
          time.monotonic() + args.deadline_s + 10 * args.slack_s))
      thread.start()
      during = _latencies(client, args.requests)
      connected = sum(t.closed is None for t in tricklers)
      thread.join()
      after = _latencies(client, args.requests)
    dropped = _dropped(f"http://127.0.0.1:{metrics_port}/metrics")
  finally:
    for t in tricklers:
      t.sock.close()
    proc.terminate()
    proc.join()

  held = [t.closed - t.opened for t in tricklers if t.closed is not None]
  within = sum(h <= args.deadline_s + args.slack_s for h in held)
  medians = {name: statistics.median(times) for name, times in
             (("before", before), ("during", during), ("after", after))}
  print(f"{args.clients} trickling connections (a byte every "
        f"{args.trickle_s:g} s), header_deadline_s={args.deadline_s:g}, "
        f"{args.requests} real requests per phase, instant stand-in backend")
  print(f"  {'phase':8s} {'median ms':>10s} {'p90 ms':>8s} {'max ms':>8s}")
  for name, times in (("before", before), ("during", during),
                      ("after", after)):
    p90 = statistics.quantiles(times, n=10)[-1]
    print(f"  {name:8s} {medians[name] * 1000:10.2f} {p90 * 1000:8.2f} "
          f"{max(times) * 1000:8.2f}")
  print(f"  opening the tricklers took {opening_s:.2f} s; still connected "
        f"when the 'during' requests were done: {connected}")
  print(f"  closed by the server: {len(held)}, within deadline + "
        f"{args.slack_s:g} s: {within}")
  for body, what in ((False, "header"), (True, "body")):
    kind = [t.closed - t.opened for t in tricklers
            if t.body == body and t.closed is not None]
    if kind:
      print(f"    trickling their {what}: {len(kind)} held "
            f"{min(kind):.2f} to {max(kind):.2f} s (median "
            f"{statistics.median(kind):.2f} s)")
  # A header still arriving is idle to aiohttp, whose keep-alive timer
  # (keepalive_timeout_s) may close it as the deadline does.
  print(f"  closed by reason (metric): {dropped}, by aiohttp's keep-alive "
        f"timer: {len(held) - sum(dropped.values())}")
  print(f"trickling={args.clients} closed_within_deadline={within} "
        f"connected_during={connected} "
        f"latency_ratio={medians['during'] / medians['before']:.2f} "
        f"median_before_ms={medians['before'] * 1000:.2f} "
        f"median_during_ms={medians['during'] * 1000:.2f} "
        f"median_after_ms={medians['after'] * 1000:.2f} "
        f"max_held_s={max(held, default=0):.2f} "
        f"dropped_deadline={dropped.get('deadline', 0)} "
        f"dropped_max_connections={dropped.get('max_connections', 0)}")
  return 0 if within == args.clients else 1


if __name__ == "__main__":
  raise SystemExit(main())
