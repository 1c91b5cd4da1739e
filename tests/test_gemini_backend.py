"""The gemini judge backend against a local stand-in of the Gemini REST API
(tests/gemini_standin.py): the Gemini API cannot be reached from here, so
the stand-in speaks its shape on 127.0.0.1 and the real backend, the real
judge service and the real gRPC client talk to it."""

import asyncio
import textwrap

import pytest

from judge_server import config as config_lib
from judge_server import server
from judge_server.backends import gemini
from grar_config.strict import ConfigError
from orchestrator.judge.client import JudgeClient, request_from_row
import gemini_standin
from gemini_standin import (  # noqa: F401 (fixtures)
    KEY_ENV, Fault, backend_config, fresh, standin)
import processes


def judge(cfg: config_lib.BackendConfig, prompts: list[str]):
  async def run():
    backend = gemini.build(cfg)
    try:
      return await backend.judge(prompts)
    finally:
      await backend.close()
  return asyncio.run(run())


def test_score_is_the_expectation_over_the_top_candidates(standin):
  (j,) = judge(backend_config(standin, top_logprobs=5), ["Judge this. Score: "])
  assert j.method == "probabilities" and j.reason == ""
  assert j.score == pytest.approx(gemini_standin.EXPECTED)
  assert j.mass == pytest.approx(0.9)
  (r,) = standin.requests
  assert r.path == f"/v1beta/models/{gemini_standin.MODEL}:generateContent"
  assert r.headers["x-goog-api-key"] == gemini_standin.KEY
  assert r.body["contents"] == [
      {"role": "user", "parts": [{"text": "Judge this. Score: "}]}]
  assert r.body["generationConfig"] == {
      "temperature": 0.0, "candidateCount": 1, "maxOutputTokens": 1,
      "responseLogprobs": True, "logprobs": 5}


def test_without_logprobs_the_written_digit_is_parsed_and_says_so(standin):
  cfg = backend_config(standin, top_logprobs=0)
  standin.text = "Score: 6/9"
  (j,) = judge(cfg, ["p"])
  assert (j.score, j.mass, j.method) == (pytest.approx(6 / 9), 1.0, "parsed")
  assert "responseLogprobs" not in standin.requests[0].body["generationConfig"]
  standin.text = "I cannot grade this."
  (j,) = judge(cfg, ["p"])
  assert j.score is None and j.method == "parsed"
  assert j.reason.startswith("unparseable: no score in judge output")


def test_an_answer_of_another_shape_is_a_final_infrastructure_failure(
    standin):
  standin.fail(Fault(body={"candidates": [{"content": "7"}]}),
               Fault(body={"candidates": []}))
  # The SDK reads the answer into its types, and refuses the first; the
  # second it takes, and the backend finds nothing in it.
  refused, empty = judge(backend_config(standin, max_concurrency=1),
                         ["p", "q"])
  for j, error in ((refused, "ValidationError"), (empty, "IndexError")):
    assert j.reason.startswith(f"infrastructure: {standin.base_url}/v1beta/")
    assert f"answered in an unknown shape ({error}: " in j.reason, j.reason
    assert not j.transient


def test_vertex_ai_asks_the_projects_model_with_the_machines_credentials(
    standin, tmp_path, monkeypatch):
  """gemini.vertex: the request goes to Vertex AI's path for the project's
  model in its region, with an OAuth access token that Application Default
  Credentials got (a service account's key file whose token endpoint is the
  stand-in's; on a VM, its metadata server) and no API key, in the same
  body."""
  monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS",
                     gemini_standin.adc_file(standin, tmp_path))
  monkeypatch.delenv(KEY_ENV)  # the key is not what Vertex AI takes
  cfg = backend_config(standin, top_logprobs=5, vertex=config_lib.VertexConfig(
      project=gemini_standin.PROJECT, location=gemini_standin.LOCATION))
  (j,) = judge(cfg, ["Judge this. Score: "])
  assert j.score == pytest.approx(gemini_standin.EXPECTED), j.reason
  (r,) = standin.requests
  assert r.path == (
      f"/v1beta1/projects/{gemini_standin.PROJECT}/locations/"
      f"{gemini_standin.LOCATION}/publishers/google/models/"
      f"{gemini_standin.MODEL}:generateContent")
  assert r.headers["authorization"] == f"Bearer {gemini_standin.TOKEN}"
  assert "x-goog-api-key" not in r.headers
  assert standin.tokens_issued == 1
  assert r.body["contents"] == [
      {"role": "user", "parts": [{"text": "Judge this. Score: "}]}]
  assert r.body["generationConfig"]["logprobs"] == 5
  # Where it asked, in its identity and its failures.
  standin.fail(Fault(status=400))
  (bad,) = judge(cfg, ["p"])
  assert bad.reason.startswith(
      f"infrastructure: HTTP 400 from {standin.base_url}{r.path}: ")


def test_vertex_ai_without_credentials_is_unscorable_not_a_crash(
    standin, tmp_path, monkeypatch):
  missing = tmp_path / "no-such-adc.json"
  monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
  (j,) = judge(backend_config(standin, vertex=config_lib.VertexConfig(
      project=gemini_standin.PROJECT, location=gemini_standin.LOCATION)),
      ["p"])
  assert j.reason.startswith("infrastructure: DefaultCredentialsError from ")
  assert str(missing) in j.reason and not j.transient
  assert standin.requests == []


def test_off_scale_and_blocked_answers_are_unparseable(standin):
  (j,) = judge(config_lib.BackendConfig(
      kind="gemini", min_score_mass=0.95, criteria=gemini_standin.SCALE,
      gemini=backend_config(standin).gemini), ["p"])
  assert j.score is None and j.mass == pytest.approx(0.9)
  assert j.reason.startswith("unparseable: judge put 0.9 probability")
  assert "below min_score_mass=0.95" in j.reason
  standin.fail(Fault(blocked=True))
  (j,) = judge(backend_config(standin), ["p"])
  assert j.reason.startswith("unparseable: ") and "SAFETY" in j.reason


def test_endpoint_errors_are_infrastructure_and_say_if_they_may_pass(standin):
  standin.fail(Fault(status=503, headers=(("Retry-After", "7"),)),
               Fault(status=400))
  busy, bad = judge(backend_config(standin, max_concurrency=1), ["p", "q"])
  url = (f"{standin.base_url}/v1beta/models/{gemini_standin.MODEL}"
         ":generateContent")
  assert busy.reason.startswith(f"infrastructure: HTTP 503 from {url}: ")
  assert busy.transient and busy.retry_after_s == 7.0
  assert bad.reason.startswith(f"infrastructure: HTTP 400 from {url}: ")
  assert not bad.transient
  (wrong_key,) = judge(config_lib.BackendConfig(
      kind="gemini", gemini=config_lib.GeminiConfig(
          base_url=standin.base_url, model="no-such-model",
          api_key_env=KEY_ENV)), ["p"])
  assert "HTTP 404" in wrong_key.reason and not wrong_key.transient
  (refused,) = judge(config_lib.BackendConfig(
      kind="gemini", gemini=config_lib.GeminiConfig(
          base_url=f"http://127.0.0.1:{processes.free_port()}", model="m",
          api_key_env=KEY_ENV)), ["p"])
  assert refused.reason.startswith("infrastructure: ConnectError from ")
  assert refused.transient


def test_a_missing_api_key_variable_names_it(monkeypatch, standin):
  monkeypatch.delenv(KEY_ENV)
  with pytest.raises(ConfigError, match=f"backend.gemini.api_key_env: the "
                     f"environment variable {KEY_ENV} is not set"):
    gemini.build(backend_config(standin))


@pytest.mark.parametrize("backend, problem", [
    ({"kind": "gemini"}, "backend.gemini.model: required when kind is "
     "'gemini'"),
    ({"gemini": {"base_url": "localhost:1"}},
     "backend.gemini.base_url: 'localhost:1' must start with http:// or "
     "https://"),
    ({"gemini": {"top_logprobs": 20}},
     "backend.gemini.top_logprobs: must be in 0..19"),
    ({"gemini": {"api_key": "sekrit"}},
     "backend.gemini.api_key: unknown key (known: api_key_env, base_url, "
     "max_calls_in_flight, max_concurrency, model, timeout_s, "
     "top_logprobs, vertex)"),
    ({"gemini": {"max_calls_in_flight": 0}},
     "backend.gemini.max_calls_in_flight: must be >= 1"),
])
def test_bad_gemini_config_names_the_field(tmp_path, backend, problem):
  path = tmp_path / "judge.yaml"
  path.write_text(f"backend: {backend}\n")
  with pytest.raises(ConfigError) as e:
    config_lib.load(path)
  assert str(e.value) == problem


def test_the_judge_service_scores_through_gemini(standin):
  handle = server.run_in_thread(
      config_lib.JudgeConfig(backend=backend_config(standin)),
      gemini.build(backend_config(standin)))
  try:
    with JudgeClient(handle.address) as client:
      client.wait_ready(10)
      info = client.info()
      results = client.score([request_from_row(
          {"prompt": "What is 2 + 2?", "completion": "<answer>4</answer>",
           "rubric_id": "math-solution"}, "r")])
  finally:
    handle.stop()
  assert (info.backend, info.model) == ("gemini", gemini_standin.MODEL)
  r = results["r"]
  assert r.reason == "" and len(r.criteria) == 6
  for c in r.criteria:
    assert c.method == "probabilities"
    assert c.score == pytest.approx(gemini_standin.EXPECTED)


def test_the_gemini_backend_is_built_where_jax_cannot_import(standin):
  """...nor flax, tunix, policy_worker or orchestrator (the judge image's
  rule), and it scores through the stand-in there."""
  done = processes.python_without(textwrap.dedent(f"""
      import asyncio
      from judge_server import config
      from judge_server.backends import factory
      backend = factory.build(config.BackendConfig(
          kind="gemini",
          criteria=config.CriteriaConfig(format="scale", few_shot=False),
          gemini=config.GeminiConfig(
              base_url="{standin.base_url}", model="{gemini_standin.MODEL}",
              api_key_env="{KEY_ENV}", top_logprobs=5)))
      assert backend.name == "gemini"
      async def judge():
        try:
          return await backend.judge(["Judge this. Score: "])
        finally:
          await backend.close()
      (judgement,) = asyncio.run(judge())
      print(judgement.score)
      """))
  assert done.returncode == 0, done.stderr[-3000:]
  assert float(done.stdout.split()[-1]) == pytest.approx(
      gemini_standin.EXPECTED)
