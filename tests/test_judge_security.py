"""Bearer tokens, TLS, mutual TLS and reflection on real judge servers on
loopback, with a throwaway CA made by the openssl CLI at test time.

The servers judge with the real openai backend pointed at a loopback port
where nothing listens: no jax, and a rollout that got past the security
layers comes back UNSCORABLE with an infrastructure reason, which is how
these tests see that it reached the backend."""

import json
import subprocess

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase)
import pytest

from judge_server import config as config_lib
from judge_server import server
from grar_config import strict
from judge_server.backends import openai_compat
from orchestrator import cli
from orchestrator.judge.channel import ChannelConfig, ChannelError, create
from orchestrator.judge.client import JudgeClient, JudgeRequestError
from protos import contract, judge_pb2, judge_pb2_grpc
import processes

TOKENS = ("old-token-3f9a", "new-token-c41d")


def _openssl(*args, cwd):
  subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(ca: str, name: str, usage: str, directory) -> None:
  """name.key and name.pem, signed by ca.pem/ca.key, for 127.0.0.1."""
  ext = directory / f"{name}.ext"
  ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                 f"extendedKeyUsage={usage}\n")
  _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
           "-subj", f"/CN={name}", cwd=directory)
  _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem",
           "-CAkey", f"{ca}.key", "-CAcreateserial", "-days", "1",
           "-out", f"{name}.pem", "-extfile", ext.name, cwd=directory)


def _ca(name: str, directory) -> None:
  _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
           "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
           "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}",
           "-addext", "basicConstraints=critical,CA:TRUE",
           "-addext", "keyUsage=critical,keyCertSign", cwd=directory)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
  """A CA with a server and a client certificate, and a rogue CA with a
  client certificate of its own; also the token file."""
  d = tmp_path_factory.mktemp("pki")
  _ca("ca", d)
  _ca("rogue", d)
  _issue("ca", "server", "serverAuth", d)
  _issue("ca", "client", "clientAuth", d)
  _issue("rogue", "intruder", "clientAuth", d)
  (d / "tokens").write_text(f"# rotating: both valid\n{TOKENS[0]}\n\n"
                            f"{TOKENS[1]}\n")
  for i, token in enumerate(TOKENS):
    (d / f"token{i}").write_text(token + "\n")
  (d / "wrong-token").write_text("not-a-token\n")
  return d


def _serve(**sections) -> server.ThreadedServer:
  config = strict.from_dict(config_lib.JudgeConfig, {
      "backend": {"kind": "openai", "openai": {
          "base_url": f"http://127.0.0.1:{processes.free_port()}/v1",
          "model": "nobody"},
          "resilience": {"max_retries": 0}},
      **sections})
  return server.run_in_thread(config, openai_compat.build(config.backend))


@pytest.fixture(scope="module")
def token_judge(pki):
  """Plaintext with bearer tokens."""
  judge = _serve(auth={"token_file": str(pki / "tokens")})
  yield judge
  judge.stop()


@pytest.fixture(scope="module")
def tls_judge(pki):
  """TLS with bearer tokens."""
  judge = _serve(auth={"token_file": str(pki / "tokens")},
                 tls={"cert_file": str(pki / "server.pem"),
                      "key_file": str(pki / "server.key")})
  yield judge
  judge.stop()


@pytest.fixture(scope="module")
def mtls_judge(pki):
  """Mutual TLS: a client certificate from ca is required; no tokens."""
  judge = _serve(tls={"cert_file": str(pki / "server.pem"),
                      "key_file": str(pki / "server.key"),
                      "client_ca_file": str(pki / "ca.pem")})
  yield judge
  judge.stop()


REQUEST = judge_pb2.ScoreRequest(rollout_id="r1", prompt="What is 2 + 2?",
                                 completion="<answer>4</answer>",
                                 rubric_id="math-solution")


def _calls(channel: grpc.Channel):
  """One call per JudgeService method and reflection, as (name, thunk)."""
  stub = judge_pb2_grpc.JudgeServiceStub(channel)
  return [
      ("GetInfo", lambda md: stub.GetInfo(judge_pb2.GetInfoRequest(),
                                          metadata=md, timeout=10)),
      ("ScoreBatch", lambda md: stub.ScoreBatch(
          judge_pb2.ScoreBatchRequest(requests=[REQUEST]), metadata=md,
          timeout=10)),
      ("Score", lambda md: list(stub.Score(iter([REQUEST]), metadata=md,
                                           timeout=10))),
      ("TokenLogprobs", lambda md: list(stub.TokenLogprobs(
          iter([judge_pb2.LogprobsRequest(rollout_id="r", prompt_tokens=[2],
                                          completion_tokens=[3])]),
          metadata=md, timeout=10))),
  ]


def _unauthenticated(judge: server.ThreadedServer) -> float:
  return judge.metrics.registry.get_sample_value(
      "grar_judge_errors_total", {"class": "unauthenticated"})


@pytest.mark.parametrize("metadata, details", [
    ((), "authorization: missing; send 'Bearer TOKEN'"),
    ((("authorization", "Bearer not-a-token"),),
     "authorization: unknown bearer token"),
    ((("authorization", f"Basic {TOKENS[0]}"),),
     "authorization: expected 'Bearer TOKEN'"),
    ((("authorization", f"Bearer {TOKENS[0]}x"),),
     "authorization: unknown bearer token"),
], ids=["missing", "unknown", "not-bearer", "token-plus-one"])
def test_every_method_refuses_a_bad_token(token_judge, metadata, details):
  before = _unauthenticated(token_judge)
  with grpc.insecure_channel(token_judge.address) as channel:
    calls = _calls(channel)
    for name, call in calls:
      with pytest.raises(grpc.RpcError) as e:
        call(metadata)
      assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
      assert e.value.details() == details, name
  assert _unauthenticated(token_judge) - before == len(calls)


def test_both_tokens_of_the_file_are_accepted(token_judge):
  with grpc.insecure_channel(token_judge.address) as channel:
    for token in TOKENS:
      for name, call in _calls(channel):
        try:
          call((("authorization", f"Bearer {token}"),))
        except grpc.RpcError as e:
          # Let in, the teacher finds no endpoint where this judge points.
          assert (name, e.code()) == ("TokenLogprobs",
                                      grpc.StatusCode.UNAVAILABLE), e
          assert "cannot read its tokenizer now" in e.details()
    # The scheme is case-insensitive (RFC 6750 uses RFC 7235's rules).
    _calls(channel)[0][1]((("authorization", f"bearer {TOKENS[1]}"),))


def test_unauthenticated_bytes_are_never_parsed(token_judge):
  """Garbage that is INVALID_ARGUMENT (not a ScoreBatchRequest) for a caller
  with a token is UNAUTHENTICATED for one without."""
  with grpc.insecure_channel(token_judge.address) as channel:
    call = channel.unary_unary("/grar.judge.v1.JudgeService/ScoreBatch")
    with pytest.raises(grpc.RpcError) as e:
      call(b"\xff\xff\xff\xff", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:
      call(b"\xff\xff\xff\xff", timeout=10,
           metadata=(("authorization", f"Bearer {TOKENS[0]}"),))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_health_is_open_without_a_token(token_judge):
  with grpc.insecure_channel(token_judge.address) as channel:
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=contract.SERVICE_NAME), timeout=10)
  assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_the_token_and_lists_the_services(token_judge, pki):
  with grpc.insecure_channel(token_judge.address) as channel:
    with pytest.raises(grpc.RpcError) as e:
      ProtoReflectionDescriptorDatabase(channel).get_services()
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
  with create(token_judge.address,
              ChannelConfig(token_file=str(pki / "token0"))) as channel:
    services = ProtoReflectionDescriptorDatabase(channel).get_services()
  assert {"grar.judge.v1.JudgeService", "grpc.health.v1.Health"} <= set(
      services)


def _reached_the_backend(result: judge_pb2.ScoreResult) -> None:
  assert result.status == judge_pb2.UNSCORABLE
  assert "infrastructure: " in result.reason, result.reason


def test_client_sends_the_token(token_judge, pki):
  with JudgeClient(token_judge.address, timeout_s=30, connection=ChannelConfig(
      token_file=str(pki / "token1"))) as client:
    client.wait_ready(10)
    assert client.info().backend == "openai"
    _reached_the_backend(client.score([REQUEST])["r1"])


def test_client_with_a_wrong_token_fails_at_once(token_judge, pki):
  with JudgeClient(token_judge.address, timeout_s=30, connection=ChannelConfig(
      token_file=str(pki / "wrong-token"))) as client:
    client.wait_ready(10)  # health is open
    with pytest.raises(JudgeRequestError,
                       match="authorization: unknown bearer token"):
      client.score([REQUEST])
    assert client.retries == 0


def test_client_names_an_unreadable_token_file(tmp_path):
  with pytest.raises(ChannelError, match=(
      f"token_file: {tmp_path}/none: cannot read: No such file")):
    JudgeClient("127.0.0.1:1", connection=ChannelConfig(
        token_file=str(tmp_path / "none")))


def _no_connection(address: str, connections) -> None:
  """Each of `connections` fails the TLS handshake: UNAVAILABLE."""
  for connection in connections:
    with create(address, connection) as channel:
      with pytest.raises(grpc.RpcError) as e:
        judge_pb2_grpc.JudgeServiceStub(channel).GetInfo(
            judge_pb2.GetInfoRequest(), timeout=10)
      assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_with_token(tls_judge, pki):
  good = ChannelConfig(token_file=str(pki / "token0"),
                       ca_file=str(pki / "ca.pem"))
  with JudgeClient(tls_judge.address, timeout_s=30, connection=good) as client:
    client.wait_ready(10)
    _reached_the_backend(client.score([REQUEST])["r1"])
  _no_connection(tls_judge.address, (
      ChannelConfig(token_file=str(pki / "token0")),  # plaintext
      ChannelConfig(token_file=str(pki / "token0"),  # a CA that did not sign
                    ca_file=str(pki / "rogue.pem"))))


def test_mutual_tls_needs_a_client_certificate_from_the_ca(mtls_judge, pki):
  ca = str(pki / "ca.pem")
  good = ChannelConfig(ca_file=ca, cert_file=str(pki / "client.pem"),
                       key_file=str(pki / "client.key"))
  with JudgeClient(mtls_judge.address, timeout_s=30, connection=good) as client:
    client.wait_ready(10)
    _reached_the_backend(client.score([REQUEST])["r1"])
  _no_connection(mtls_judge.address, (
      ChannelConfig(ca_file=ca),  # no client certificate
      ChannelConfig(ca_file=ca, cert_file=str(pki / "intruder.pem"),
                    key_file=str(pki / "intruder.key"))))


def test_grar_judge_score_over_tls_with_token(tls_judge, pki, tmp_path,
                                             capsys):
  path = tmp_path / "rollouts.jsonl"
  path.write_text(json.dumps({"prompt": "What is 2 + 2?", "completion": "4",
                              "rubric_id": "math-solution"}) + "\n")
  assert cli.main([
      "judge", "score", "--target", tls_judge.address, "--input", str(path),
      "--token-file", str(pki / "token0"),
      "--ca-file", str(pki / "ca.pem")]) == 0
  (line,) = capsys.readouterr().out.splitlines()
  assert json.loads(line)["status"] == "unscorable"
  assert "infrastructure: " in json.loads(line)["reason"]
  # Without the token the judge refuses: one line, exit 2.
  assert cli.main([
      "judge", "score", "--target", tls_judge.address, "--input", str(path),
      "--ca-file", str(pki / "ca.pem")]) == 2
  assert "authorization: missing" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, problem", [
    (["auth.token_file={d}/none"], "auth.token_file: {d}/none: cannot read"),
    (["auth.token_file={d}/empty"], "auth.token_file: {d}/empty: holds no "
     "token"),
    (["tls.cert_file={d}/server.pem", "tls.key_file={d}/none"],
     "tls.key_file: {d}/none: cannot read"),
    (["tls.client_ca_file={d}/ca.pem"],
     "tls.client_ca_file: mutual TLS needs cert_file and key_file too"),
], ids=["no-token-file", "empty-token-file", "no-key", "mtls-without-tls"])
def test_bad_security_config_names_the_field(pki, overrides, problem):
  (pki / "empty").write_text("# nothing yet\n\n")
  with pytest.raises(strict.ConfigError) as e:
    server.check(config_lib.load(None, [o.format(d=pki) for o in overrides]))
  assert str(e.value).startswith(problem.format(d=pki)), e.value
