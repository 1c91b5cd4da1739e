"""Bearer tokens rotated without a restart: the judge reads auth.token_file
again when it changes (at most CHECK_INTERVAL_S after a call finds it
changed) and on SIGHUP, for the gRPC interceptor and the OpenRLHF HTTP face
alike; a file that turns unreadable or empty keeps the last good tokens.

TokenSet's rules on a fake clock first, then a real `python -m judge_server`
process on loopback, judging with the openai backend pointed at a port where
nothing listens (no jax; these calls never reach a backend)."""

import json
import logging
import os
import pathlib
import signal
import threading
import time

import grpc
import httpx
import pytest

from grar_config.strict import ConfigError
from judge_server import security
from judge_server.config import AuthConfig
from protos import judge_pb2, judge_pb2_grpc
import processes

A, B, C = "token-a-5d01", "token-b-93e7", "token-c-0f4c"
# The promise: a token added or removed counts within a second.
WITHIN_S = 1.0


# --- TokenSet on a fake clock --------------------------------------------

class Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self) -> float:
    return self.now


def _tokens(path: pathlib.Path, clock: Clock) -> security.TokenSet:
  return security.TokenSet(AuthConfig(token_file=str(path)), clock=clock)


def test_a_change_counts_at_the_next_look(tmp_path):
  path, clock = tmp_path / "tokens", Clock()
  path.write_text(f"{A}\n")
  tokens = _tokens(path, clock)
  assert tokens.current() == (A.encode(),) and bool(tokens)
  # Rewritten in place: same inode and size, likely the same mtime tick.
  path.write_text(f"{B}\n")
  assert tokens.current() == (A.encode(),)  # not looked at yet
  clock.now += security.CHECK_INTERVAL_S
  assert tokens.current() == (B.encode(),)
  assert security.token_problem(tokens, f"Bearer {B}") == ""
  assert security.token_problem(tokens, f"Bearer {A}") == (
      "authorization: unknown bearer token")
  path.write_text(f"# rotating\n{B}\n\n{C}\n")
  tokens.reload()  # SIGHUP: at once
  assert tokens.current() == (B.encode(), C.encode())
  assert list(tokens) == [B.encode(), C.encode()] and len(tokens) == 2


def test_an_unreadable_or_empty_file_keeps_the_last_tokens_and_warns_once(
    tmp_path, caplog):
  path, clock = tmp_path / "tokens", Clock()
  path.write_text(f"{A}\n")
  tokens = _tokens(path, clock)
  caplog.set_level(logging.INFO, logger="grar.judge")

  def look() -> tuple[bytes, ...]:
    clock.now += security.CHECK_INTERVAL_S
    return tokens.current()

  path.write_text("# nothing but a comment\n\n")
  assert look() == (A.encode(),)
  path.unlink()
  assert look() == (A.encode(),)
  path.mkdir()  # unreadable, even for root
  assert look() == (A.encode(),)
  tokens.reload()
  assert look() == (A.encode(),)
  assert security.token_problem(tokens, None).startswith(
      "authorization: missing")
  warnings = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING]
  assert warnings == [f"auth.token_file: {path}: holds no token; keeping "
                      "the last 1 tokens read"]
  path.rmdir()
  path.write_text(f"{B}\n")
  assert look() == (B.encode(),)
  assert caplog.records[-1].getMessage() == (
      f"auth.token_file: {path}: good again, now 1 tokens")
  # A second bad spell warns again, once.
  path.write_text("")
  assert look() == look() == (B.encode(),)
  assert sum(r.levelno == logging.WARNING for r in caplog.records) == 2


def test_no_token_file_is_no_auth_and_a_bad_one_fails_at_start(tmp_path):
  tokens = security.TokenSet(AuthConfig())
  assert not tokens and tokens.current() == ()
  tokens.reload()  # nothing to read, nothing said
  assert security.interceptors(tokens, lambda method: None) == []
  (tmp_path / "empty").write_text("\n")
  with pytest.raises(ConfigError, match="holds no token"):
    _tokens(tmp_path / "empty", Clock())
  with pytest.raises(ConfigError, match="cannot read"):
    _tokens(tmp_path / "none", Clock())


def test_a_pipe_is_read_at_start_only(tmp_path, caplog):
  """A token_file that is a pipe (`<(cat secret)`) cannot be read twice
  and would block the server if looked at again."""
  path, clock = tmp_path / "fifo", Clock()
  os.mkfifo(path)
  writer = threading.Thread(target=path.write_text, args=(f"{A}\n",))
  writer.start()
  tokens = _tokens(path, clock)
  writer.join()
  clock.now += 10
  assert tokens.current() == (A.encode(),)
  caplog.set_level(logging.INFO, logger="grar.judge")
  tokens.reload()
  assert "not a regular file, read at start only" in caplog.text


# --- a real judge process --------------------------------------------------

class Judge:
  """The process, its gRPC target, its /get_reward URL and its log lines
  (stderr, JSON, drained by a thread so the pipe never fills)."""

  def __init__(self, proc, target: str, url: str):
    self.proc, self.target, self.url = proc, target, url
    self.lines: list[dict] = []
    self._drain = threading.Thread(target=self._read, daemon=True)
    self._drain.start()

  def _read(self) -> None:
    for line in self.proc.stderr:
      try:
        self.lines.append(json.loads(line))
      except json.JSONDecodeError:
        self.lines.append({"message": line.rstrip()})

  def stop(self) -> None:
    if self.proc.poll() is None:
      self.proc.kill()
    self.proc.wait()
    self._drain.join(timeout=10)
    self.proc.stdout.close()
    self.proc.stderr.close()

  def token_logs(self, since: int = 0) -> list[tuple[str, str]]:
    return [(e.get("level", ""), e["message"]) for e in self.lines[since:]
            if e.get("message", "").startswith("auth.token_file")]


@pytest.fixture(scope="module")
def token_path(tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp("auth") / "tokens"
  path.write_text(f"{A}\n")
  return path


@pytest.fixture(scope="module")
def judge(token_path, tmp_path_factory):
  http_port = processes.free_port()
  proc = processes.start_judge(
      {"backend": {"kind": "openai", "openai": {
          "base_url": f"http://127.0.0.1:{processes.free_port()}/v1",
          "model": "nobody"}, "resilience": {"max_retries": 0}},
       "auth": {"token_file": str(token_path)},
       "openrlhf": {"port": http_port},
       "log_format": "json"},
      tmp_path_factory.mktemp("judge"))
  target = processes.judge_address(proc)
  judge = Judge(proc, target, f"http://127.0.0.1:{http_port}/get_reward")
  yield judge
  judge.stop()


@pytest.fixture(scope="module")
def stub(judge):
  with grpc.insecure_channel(judge.target) as channel:
    yield judge_pb2_grpc.JudgeServiceStub(channel)


def grpc_ok(stub, token: str | None) -> bool:
  """True when GetInfo with `token` is answered; False when UNAUTHENTICATED."""
  metadata = (("authorization", f"Bearer {token}"),) if token else ()
  try:
    stub.GetInfo(judge_pb2.GetInfoRequest(), metadata=metadata, timeout=10)
  except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
    return False
  return True


def http_ok(judge: Judge, token: str | None) -> bool:
  """True when /get_reward with `token` answers 200; False when 401."""
  headers = {"authorization": f"Bearer {token}"} if token else {}
  response = httpx.post(judge.url, json={"query": [], "prompts": []},
                        headers=headers, timeout=10)
  assert response.status_code in (200, 401), response.text
  return response.status_code == 200


def accepted(stub, judge: Judge) -> dict[str, tuple[bool, bool]]:
  """{token: (gRPC answered, HTTP answered)} for A, B, C and none."""
  return {t: (grpc_ok(stub, t), http_ok(judge, t)) for t in (A, B, C, None)}


def wait_for(stub, judge: Judge, want: dict) -> float:
  """Seconds from now until the gRPC face accepts what `want` says, which
  must be within WITHIN_S; then both faces must accept exactly that."""
  start = time.monotonic()
  while True:
    got = {t: grpc_ok(stub, t) for t in want}  # cheap, so polled often
    elapsed = time.monotonic() - start
    if got == {t: grpc for t, (grpc, _) in want.items()}:
      break
    assert elapsed < WITHIN_S, f"after {elapsed:.2f} s: {got}, not {want}"
    time.sleep(0.01)
  assert accepted(stub, judge) == want
  return elapsed


YES, NO = (True, True), (False, False)


def rewrite(path: pathlib.Path, text: str, atomic: bool) -> None:
  """In place (same inode) or as editors and Kubernetes secrets do."""
  if atomic:
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    os.replace(new, path)
  else:
    path.write_text(text)


def test_rotation_on_both_faces_within_a_second(judge, stub, token_path):
  assert accepted(stub, judge) == {A: YES, B: NO, C: NO, None: NO}
  # The rotation the README gives: add the new token beside the old one...
  rewrite(token_path, f"{A}\n{B}\n", atomic=True)
  added = wait_for(stub, judge, {A: YES, B: YES, C: NO, None: NO})
  # ...then remove the old one; rewritten in place, same length as before.
  rewrite(token_path, f"{B}\n{C}\n", atomic=False)
  removed = wait_for(stub, judge, {A: NO, B: YES, C: YES, None: NO})
  rewrite(token_path, f"{B}\n", atomic=False)
  only_b = wait_for(stub, judge, {A: NO, B: YES, C: NO, None: NO})
  print(f"added in {added:.2f} s, removed in {removed:.2f} s and "
        f"{only_b:.2f} s")
  assert (("info", f"auth.token_file: {token_path}: changed, now 1 tokens")
          in judge.token_logs())


def test_an_unreadable_or_empty_file_keeps_the_last_good_tokens(
    judge, stub, token_path):
  rewrite(token_path, f"{B}\n", atomic=True)
  wait_for(stub, judge, {A: NO, B: YES, C: NO, None: NO})
  mark = len(judge.lines)
  keep = {A: NO, B: YES, C: NO, None: NO}
  for bad in ("empty", "comments", "gone", "directory"):
    if bad == "empty":
      token_path.write_text("")
    elif bad == "comments":
      token_path.write_text("# all retired\n\n")
    elif bad == "gone":
      token_path.unlink()
    else:
      token_path.mkdir()
    # Over two looks at it, and nobody let in without a token.
    deadline = time.monotonic() + 2 * security.CHECK_INTERVAL_S + 0.1
    while time.monotonic() < deadline:
      assert accepted(stub, judge) == keep, bad
      time.sleep(0.05)
  token_path.rmdir()
  rewrite(token_path, f"{C}\n", atomic=False)
  wait_for(stub, judge, {A: NO, B: NO, C: YES, None: NO})
  assert judge.proc.poll() is None  # never crashed
  logs = judge.token_logs(mark)
  assert [level for level, _ in logs] == ["warning", "info"], logs
  assert logs[0][1] == (f"auth.token_file: {token_path}: holds no token; "
                        "keeping the last 1 tokens read")
  assert logs[1][1] == f"auth.token_file: {token_path}: good again, now 1 tokens"


def test_sighup_reads_the_file_at_once(judge, stub, token_path):
  rewrite(token_path, f"{C}\n", atomic=True)
  wait_for(stub, judge, {A: NO, B: NO, C: YES, None: NO})
  mark = len(judge.lines)
  # No call between the change and the signal, so no look at the file: only
  # the SIGHUP can make the judge read it.
  rewrite(token_path, f"{A}\n", atomic=True)
  judge.proc.send_signal(signal.SIGHUP)
  deadline = time.monotonic() + WITHIN_S
  want = ("info", f"auth.token_file: {token_path}: read again as asked, "
          "now 1 tokens")
  while want not in judge.token_logs(mark):
    assert time.monotonic() < deadline, judge.token_logs(mark)
    time.sleep(0.01)
  assert accepted(stub, judge) == {A: YES, B: NO, C: NO, None: NO}
  # A second SIGHUP with nothing changed: still serving, same tokens.
  judge.proc.send_signal(signal.SIGHUP)
  time.sleep(0.2)
  assert judge.proc.poll() is None
  assert accepted(stub, judge) == {A: YES, B: NO, C: NO, None: NO}
