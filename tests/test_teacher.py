"""TokenLogprobs: the judge's model as a teacher, over real gRPC on
loopback with the tiny jax model. Its log-probs must be the model's own
(tunix's per-token log-probs of the same weights), whatever lengths share a
call; bad requests are refused naming the field; a backend without
log-probs is UNIMPLEMENTED; the tokenizer check tells a matching student
from another."""

from flax import nnx
import grpc
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tunix.rl import common

from grar_config.model import ModelSpec
from judge_server import config as config_lib
from judge_server import server
from judge_server.backends import base, jax_local
from orchestrator.judge import client as client_lib
from orchestrator.judge import pool as pool_lib
from policy_worker import models
from policy_worker.tokenizer import ByteTokenizer
from protos import contract, judge_pb2, judge_pb2_grpc

SPEC = ModelSpec(family="gemma3-tiny", seed=3)
TOK = ByteTokenizer()


def _mesh():
  return jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                           ("fsdp", "tp"))


@pytest.fixture(scope="module")
def judge():
  """(address, limits) of a judge serving the tiny model; max_prompt_tokens
  and max_logprob_tokens small enough to reach."""
  cfg = config_lib.JudgeConfig(
      backend=config_lib.BackendConfig(model=SPEC, max_batch=4,
                                       max_prompt_tokens=200),
      limits=config_lib.Limits(max_logprob_tokens=300))
  backend = jax_local.build(cfg.backend, _mesh())
  with server.on_loopback(cfg, backend) as address:
    yield address


def _query(i: int, question: str, answer: str) -> judge_pb2.LogprobsRequest:
  return judge_pb2.LogprobsRequest(
      rollout_id=f"r{i}", prompt_tokens=[TOK.bos_id(), *TOK.encode(question)],
      completion_tokens=TOK.encode(answer))


REQUESTS = [_query(0, "What is 2 + 2?", "<answer>4</answer>"),
            _query(1, "Name a prime.", "7"),
            _query(2, "Spell it out: " + "abc" * 20,
                   "<reasoning>" + "a b c " * 15 + "</reasoning>"),
            _query(3, "Q", "A longer answer than its question, " * 2)]


def _tunix_logps(request: judge_pb2.LogprobsRequest) -> np.ndarray:
  """The same weights' log-probs by tunix's own function, one request at a
  time, nothing padded."""
  model, _ = models.build_model(SPEC, _mesh())
  graphdef, state = nnx.split(model)
  return np.asarray(common.compute_per_token_logps(
      graphdef, state, jnp.asarray([list(request.prompt_tokens)]),
      jnp.asarray([list(request.completion_tokens)]), TOK.pad_id(),
      TOK.eos_id(), temperature=1.0))[0]


def test_logprobs_are_the_models_own_whatever_shares_the_call(judge):
  with client_lib.JudgeClient(judge, timeout_s=120) as client:
    results = client.token_logprobs(REQUESTS)
  for request in REQUESTS:
    result = results[request.rollout_id]
    assert result.status == judge_pb2.SCORED, result.reason
    got = np.asarray(result.logprobs)
    assert got.shape == (len(request.completion_tokens),)
    assert np.all(got <= 0)
    np.testing.assert_allclose(got, _tunix_logps(request), atol=1e-4)
    assert result.latency_ms > 0


def test_getinfo_names_the_tokenizer_and_the_student_check_reads_it(judge):
  with client_lib.JudgeClient(judge) as client:
    info = client.info()
    assert info.tokenizer.vocab_size == TOK.vocab_size
    assert info.tokenizer.fingerprint == contract.tokenizer_fingerprint(TOK)
    client.check_tokenizer(TOK)

    class Shifted(ByteTokenizer):
      """Another tokenizer of the same size: ids shifted by one."""
      def encode(self, text, **_):
        return [i + 1 for i in super().encode(text)]

    with pytest.raises(client_lib.TeacherMismatch,
                       match="another tokenizer than the student's"):
      client.check_tokenizer(Shifted())


def test_a_too_long_query_is_unscorable_and_the_rest_scored(judge):
  long = judge_pb2.LogprobsRequest(
      rollout_id="long", prompt_tokens=[TOK.bos_id()] * 150,
      completion_tokens=TOK.encode("x" * 100))
  with client_lib.JudgeClient(judge) as client:
    results = client.token_logprobs([long, REQUESTS[1]])
  assert results["long"].status == judge_pb2.UNSCORABLE
  assert "250 tokens, more than max_prompt_tokens=200" in (
      results["long"].reason)
  assert results["r1"].status == judge_pb2.SCORED


@pytest.mark.parametrize("change, field", [
    ({"completion_tokens": []}, "completion_tokens: at least one token"),
    ({"prompt_tokens": []}, "prompt_tokens: at least one token"),
    ({"completion_tokens": [5, 260]},
     "completion_tokens: token id 260 is outside the judge's vocabulary of "
     "260 tokens"),
    ({"prompt_tokens": [-1]}, "prompt_tokens: token id -1"),
    ({"completion_tokens": [5] * 301},
     "completion_tokens: 302 tokens with the prompt's, more than "
     "max_logprob_tokens=300"),
])
def test_a_bad_request_is_refused_naming_the_field(judge, change, field):
  request = judge_pb2.LogprobsRequest(rollout_id="bad", prompt_tokens=[1],
                                      completion_tokens=[5])
  for name, value in change.items():
    del getattr(request, name)[:]
    getattr(request, name).extend(value)
  with client_lib.JudgeClient(judge) as client:
    with pytest.raises(client_lib.JudgeRequestError, match=field):
      client.token_logprobs([request])


def test_a_duplicate_rollout_id_in_flight_is_refused(judge):
  channel = grpc.insecure_channel(judge)
  stub = judge_pb2_grpc.JudgeServiceStub(channel)
  twice = [REQUESTS[0], REQUESTS[0]]
  with pytest.raises(grpc.RpcError) as e:
    list(stub.TokenLogprobs(iter(twice), timeout=60))
  channel.close()
  assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "already in flight" in e.value.details()


class _Scorer(base.Backend):
  """A backend that scores and gives no log-probs: the base class's
  default, as the gemini and reward_model backends have it."""
  name = "scorer"

  async def judge(self, prompts):
    return [base.Judgement(0.5, 1.0)] * len(prompts)


def test_a_backend_without_logprobs_says_so_at_getinfo_and_on_the_rpc():
  with server.on_loopback(config_lib.JudgeConfig(), _Scorer()) as address:
    with client_lib.JudgeClient(address) as client:
      assert client.info().tokenizer == judge_pb2.TokenizerInfo()
      with pytest.raises(client_lib.TeacherMismatch,
                         match="backend scorer.*gives no token log-probs"):
        client.check_tokenizer(TOK)
      channel = grpc.insecure_channel(address)
      with pytest.raises(grpc.RpcError) as e:
        list(judge_pb2_grpc.JudgeServiceStub(channel).TokenLogprobs(
            iter(REQUESTS[:1]), timeout=30))
      channel.close()
  assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
  assert e.value.details() == "backend scorer gives no token log-probs"


def test_logprobs_of_a_padded_call_match_one_alone():
  """Batching: a query answered among longer ones gets what it gets alone
  (the padding and the other rows are masked)."""
  backend = jax_local.build(
      config_lib.BackendConfig(model=SPEC, max_batch=4), _mesh())
  queries = [base.LogprobsQuery(tuple(r.prompt_tokens),
                                tuple(r.completion_tokens)) for r in REQUESTS]
  together = backend._logprobs_sync(queries)
  for q, got in zip(queries, together):
    [alone] = backend._logprobs_sync([q])
    np.testing.assert_allclose(got.values, alone.values, atol=1e-5)


def test_a_pool_of_judges_spreads_the_teacher_over_its_replicas(judge):
  """Ray's judge replicas are reached through JudgePool: the same answers
  as one judge, whichever replica gives them, and every replica checked."""
  cfg = config_lib.JudgeConfig(backend=config_lib.BackendConfig(
      model=SPEC, max_batch=4, max_prompt_tokens=200))
  with server.on_loopback(cfg, jax_local.build(cfg.backend, _mesh())
                          ) as second, \
      pool_lib.JudgePool([judge, second], timeout_s=120) as pool, \
      client_lib.JudgeClient(judge, timeout_s=120) as one:
    pool.check_tokenizer(TOK)
    together, alone = pool.token_logprobs(REQUESTS), one.token_logprobs(
        REQUESTS)
  for request in REQUESTS:
    got = together[request.rollout_id]
    assert got.status == judge_pb2.SCORED, got.reason
    np.testing.assert_allclose(got.logprobs,
                               alone[request.rollout_id].logprobs, atol=1e-5)
