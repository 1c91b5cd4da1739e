"""The `openai` judge backend against a real vLLM server (CPU build) serving
the shipped Gemma-3-270M, and the judge server with that backend, started
where jax cannot be imported. Failure paths use real sockets on loopback:
a port nobody listens on, and a listener that never answers."""

import asyncio
import signal
import textwrap
import time

import grpc
import pytest

from judge_server import config as config_lib
from judge_server import prompts
from judge_server.backends import openai_compat
from protos.rubric import Rubric
from grar_config.strict import ConfigError
from orchestrator.rundir import journal
import processes
from protos import judge_pb2, judge_pb2_grpc

RUBRIC = Rubric.from_dict({"criteria": [
    {"text": "States that the sum is 85", "category": "essential",
     "weight": 5},
    {"text": "Carries the ten", "category": "important", "weight": 3},
    {"text": "Forgets to carry and gives 75", "category": "pitfall",
     "weight": 2}]})
QUESTION = "What is 47 + 38?"
COMPLETION = ("<reasoning>7 + 8 = 15, carry 1: 4 + 3 + 1 = 8</reasoning>"
              "<answer>85</answer>")
PROMPTS = [prompts.explicit_prompt(QUESTION, COMPLETION, "85", c)
           for c in RUBRIC.criteria] + [
               prompts.implicit_prompt(QUESTION, "<answer>75</answer>", "85",
                                       RUBRIC)]


def _judge(prompts_, max_batch=8, min_score_mass=0.0, **openai):
  """Judgements of `prompts_` by a fresh backend on a fresh event loop."""
  async def run():
    backend = openai_compat.OpenAIBackend(
        config_lib.OpenAIConfig(**openai), max_batch=max_batch,
        min_score_mass=min_score_mass)
    try:
      return await backend.judge(prompts_)
    finally:
      await backend.close()
  return asyncio.run(run())


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["completions", "chat"])
def test_scores_are_expectations_over_the_digit_probabilities(vllm, mode):
  judgements = _judge(PROMPTS, base_url=vllm.base_url, model=vllm.model,
                      mode=mode)
  for j in judgements:
    assert j.method == "probabilities" and j.reason == ""
    assert 0.0 <= j.score <= 1.0
    assert 0.0 < j.mass <= 1.0 + 1e-6
  if mode == "completions":
    # The prompt ends at "Score: ", so even this small base model puts
    # nearly all its probability on a digit (0.94-0.99 measured).
    assert min(j.mass for j in judgements) > 0.5


@pytest.mark.vllm
@pytest.mark.slow
def test_min_score_mass_makes_an_off_scale_judge_unscorable(vllm):
  """In chat mode the base (not instruction-tuned) 270M mostly echoes the
  prompt: about 3% of its probability is on a digit."""
  (j,) = _judge(PROMPTS[:1], base_url=vllm.base_url, model=vllm.model,
                mode="chat")
  assert j.score is not None and j.mass < 0.5
  (j,) = _judge(PROMPTS[:1], min_score_mass=0.5, base_url=vllm.base_url,
                model=vllm.model, mode="chat")
  assert j.score is None and 0 < j.mass < 0.5
  assert "below min_score_mass=0.5" in j.reason, j.reason


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["completions", "chat"])
def test_without_logprobs_the_written_digit_is_parsed_and_says_so(vllm, mode):
  judgements = _judge(PROMPTS, base_url=vllm.base_url, model=vllm.model,
                      mode=mode, top_logprobs=0)
  for j in judgements:
    assert j.method == "parsed"
    if j.score is None:
      # The 270M often writes something else ("100", or echoes the
      # prompt): unscorable, never a guess.
      assert j.mass == 0.0 and j.reason.startswith("unparseable: "), j
    else:
      assert j.mass == 1.0 and j.score * 9 == round(j.score * 9)
  if mode == "completions":
    assert any(j.score is not None for j in judgements)


@pytest.mark.vllm
@pytest.mark.slow
def test_an_endpoint_error_is_infrastructure_not_a_score(vllm):
  (j,) = _judge(PROMPTS[:1], base_url=vllm.base_url, model="no-such-model")
  assert j.score is None and j.mass == 0.0
  assert j.reason.startswith(
      f"infrastructure: HTTP 404 from {vllm.base_url}/completions: "), j.reason
  assert "no-such-model" in j.reason


def test_an_unreachable_endpoint_is_infrastructure_not_a_score():
  url = f"http://127.0.0.1:{processes.free_port()}/v1"
  judgements = _judge(PROMPTS[:2], base_url=url, model="m", timeout_s=10.0)
  for j in judgements:
    assert j.score is None and j.mass == 0.0
    assert j.reason.startswith(
        f"infrastructure: ConnectError from {url}/completions"), j.reason


def test_deadline_concurrency_cap_and_api_key(monkeypatch):
  """A listener that reads each request and never answers: at most
  max_concurrency requests are open at once, each ends at its deadline, and
  each carried the key from the named variable."""
  monkeypatch.setenv("GRAR_TEST_JUDGE_KEY", "sekrit")
  heads, open_now, peak = [], [0], [0]

  async def silent(reader, writer):
    heads.append((await reader.readuntil(b"\r\n\r\n")).decode())
    open_now[0] += 1
    peak[0] = max(peak[0], open_now[0])
    try:
      await reader.read()  # until the client gives up and hangs up
    finally:
      open_now[0] -= 1
      writer.close()

  async def run():
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = openai_compat.OpenAIBackend(
        config_lib.OpenAIConfig(
            base_url=f"http://127.0.0.1:{port}/v1", model="m", mode="chat",
            api_key_env="GRAR_TEST_JUDGE_KEY", max_concurrency=2,
            timeout_s=0.5),
        max_batch=8, min_score_mass=0.0)
    started = time.monotonic()
    async with server:
      judgements = await backend.judge(["p"] * 5)
    await backend.close()
    return port, judgements, time.monotonic() - started

  port, judgements, elapsed = asyncio.run(run())
  url = f"http://127.0.0.1:{port}/v1/chat/completions"
  for j in judgements:
    assert j.score is None and j.mass == 0.0
    assert j.reason == f"infrastructure: no answer from {url} within 0.5s"
  assert peak[0] == 2 and len(heads) == 5
  assert all("\r\nauthorization: bearer sekrit\r\n" in h.lower()
             for h in heads), heads[0]
  assert heads[0].startswith("POST /v1/chat/completions ")
  # Three waves of at most two requests, half a second each.
  assert 1.5 <= elapsed < 10.0


@pytest.mark.parametrize("backend, problem", [
    ({"kind": "openai"},
     "backend.openai.base_url: required when kind is 'openai'"),
    ({"kind": "openai", "openai": {"base_url": "http://h/v1"}},
     "backend.openai.model: required when kind is 'openai'"),
    ({"openai": {"base_url": "h:8000"}},
     "backend.openai.base_url: 'h:8000' must start with http:// or https://"),
    ({"openai": {"mode": "stream"}},
     "backend.openai.mode: 'stream' is not one of 'completions', 'chat'"),
    ({"openai": {"max_concurrency": 0}},
     "backend.openai.max_concurrency: must be >= 1"),
    ({"openai": {"timeout_s": 0}}, "backend.openai.timeout_s: must be > 0"),
    ({"openai": {"top_logprobs": -1}},
     "backend.openai.top_logprobs: must be >= 0"),
    ({"kind": "claude"},
     "backend.kind: 'claude' is not one of 'jax', 'openai', 'gemini', "
     "'reward_model'"),
])
def test_bad_openai_config_names_the_field(tmp_path, backend, problem):
  path = tmp_path / "judge.yaml"
  path.write_text(f"backend: {backend}\n")
  with pytest.raises(ConfigError) as e:
    config_lib.load(path)
  assert str(e.value) == problem


def test_a_missing_api_key_variable_names_it(monkeypatch):
  monkeypatch.delenv("GRAR_TEST_NO_KEY", raising=False)
  with pytest.raises(ConfigError, match="backend.openai.api_key_env: the "
                     "environment variable GRAR_TEST_NO_KEY is not set"):
    openai_compat.build(config_lib.BackendConfig(
        kind="openai", openai=config_lib.OpenAIConfig(
            base_url="http://127.0.0.1:1/v1", model="m",
            api_key_env="GRAR_TEST_NO_KEY")))


def test_the_openai_backend_is_built_where_jax_cannot_import():
  """...nor flax, tunix, policy_worker or orchestrator: the judge image's
  rule (processes.NOT_IN_JUDGE)."""
  done = processes.python_without(textwrap.dedent("""
      from judge_server import config
      from judge_server.backends import factory
      backend = factory.build(config.BackendConfig(
          kind="openai", openai=config.OpenAIConfig(
              base_url="http://127.0.0.1:1/v1", model="m")))
      print(backend.name)
      """))
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.split() == ["openai"]


def _request(rollout_id: str, aggregation) -> judge_pb2.ScoreRequest:
  return judge_pb2.ScoreRequest(
      rollout_id=rollout_id, prompt=QUESTION, completion=COMPLETION,
      reference_answer="85", rubric_id="math-solution",
      aggregation=aggregation)


@pytest.mark.vllm
@pytest.mark.slow
def test_judge_server_scores_through_vllm_where_jax_cannot_import(
    vllm, tmp_path):
  """In the judge process jax, flax, tunix, qwix, optax, orbax,
  policy_worker and orchestrator cannot be imported, as in the judge
  image (processes.NOT_IN_JUDGE)."""
  proc = processes.start_judge(
      {"backend": {"kind": "openai", "max_batch": 4, "openai": {
          "base_url": vllm.base_url, "model": vllm.model}}},
      tmp_path, blocked=processes.NOT_IN_JUDGE)
  try:
    address = processes.judge_address(proc)
    with grpc.insecure_channel(address) as channel:
      stub = judge_pb2_grpc.JudgeServiceStub(channel)
      info = stub.GetInfo(judge_pb2.GetInfoRequest(), timeout=10)
      assert (info.backend, info.model) == ("openai", vllm.model)
      assert info.limits.max_batch == 4
      explicit, implicit = stub.ScoreBatch(judge_pb2.ScoreBatchRequest(
          requests=[_request("explicit", judge_pb2.EXPLICIT),
                    _request("implicit", judge_pb2.IMPLICIT)]),
          timeout=120).results
    for result in (explicit, implicit):
      assert result.status == judge_pb2.SCORED, result.reason
      assert 0.0 <= result.reward <= 1.0
    assert [c.index for c in explicit.criteria] == list(range(6))
    for c in explicit.criteria:
      assert c.method == "probabilities"
      assert 0.0 <= c.score <= 1.0 and 0.0 < c.score_mass <= 1.0 + 1e-6
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
  finally:
    processes.stop(proc)


@pytest.mark.vllm
@pytest.mark.e2e
@pytest.mark.slow
def test_training_judged_by_vllm_with_the_shipped_config(vllm, tmp_path):
  """configs/cpu-vllm-judge.yaml as shipped, pointed at the test's server;
  the policy shrunk to the tiny model to keep it to one cheap step."""
  proc = processes.grar(
      "train", "--config", "configs/cpu-vllm-judge.yaml",
      "--set", f"judge.server.backend.openai.base_url={vllm.base_url}",
      "--set", f"judge.server.backend.openai.model={vllm.model}",
      "--set", "model={family: gemma3-tiny}", "--set", "judge.aggregation=implicit",
      "--set", "rollout.num_generations=2", "--set", "rollout.max_new_tokens=8",
      "--set", "rollout.max_prompt_tokens=512",  # the byte tokenizer's
      "--set", "train.steps=1", "--set", "train.batch_size=1",
      "--set", f"output_dir={tmp_path}", "--set", "run_name=vllm")
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = list(journal.read(tmp_path / "vllm" / "journal.msgpack"))
  assert len(records) == 2
  for r in records:
    assert r["judge_status"] == "SCORED", r
    assert 0.0 <= r["rewards"]["judge"] <= 1.0
