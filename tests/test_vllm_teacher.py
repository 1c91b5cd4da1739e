"""The `openai` backend as a teacher (TokenLogprobs) against a real vLLM
server (CPU build) serving the shipped Gemma-3-270M: its tokenizer is the
student's, and its per-token log-probabilities are the ones tunix computes
in process from the same weights. Failure paths use real sockets on
loopback: a port nobody listens on, and a stand-in that answers badly.

Both sides run in float32 (vllm_server.ARGS). Measured over three prompt and
completion pairs (CPU, 2 cores): vLLM's log-probabilities of the completion
tokens differ from tunix's by at most 5.0e-5, 1.8e-5 on average. Rounding
tunix's weights to bfloat16 moves them by 0.018-0.056 at most per pair
(0.005-0.014 on average), and reading them one position off by 2-17. The
bound is twenty times the float32 noise and over eighteen times below what
bfloat16 rounding does.
"""

import asyncio

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tunix.rl import common

from judge_server import config as config_lib
from judge_server.backends import base, openai_compat
from policy_worker.tokenizer import HFTokenizer
from protos import contract
import processes

MAX_ABS_LOGPROB_DIFF = 1e-3

# (prompt, completion): a judged answer, prose ending outside ASCII (tokens
# the model finds unlikely), and code.
PAIRS = [
    ("What is 47 + 38?", "<reasoning>7 + 8 = 15, carry 1: 4 + 3 + 1 = 8"
     "</reasoning><answer>85</answer>"),
    ("The capital of France is", " Paris, a city of light and rain. "
     "Ünïcödé 日本語"),
    ("def f(n):\n", "    return n * 2\n"),
]


def _backend(**openai) -> openai_compat.OpenAIBackend:
  return openai_compat.OpenAIBackend(
      config_lib.OpenAIConfig(**openai), max_batch=8, min_score_mass=0.0)


def _run(backend, call):
  """call(backend)'s result on a fresh event loop, closing the backend."""
  async def run():
    try:
      return await call(backend)
    finally:
      await backend.close()
  return asyncio.run(run())


def _tunix_logprobs(model, tokenizer, mesh, query) -> np.ndarray:
  """As the trainer computes them (grpo._per_token_logps), temperature 1."""
  graphdef, state = nnx.split(model)
  with jax.set_mesh(mesh):
    logps = common.compute_per_token_logps(
        graphdef, state, jnp.asarray([query.prompt]),
        jnp.asarray([query.completion]), tokenizer.pad_id(),
        tokenizer.eos_id(), temperature=1.0)
  return np.asarray(logps[0], np.float64)


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_and_the_student_fingerprint_the_tokenizer_alike(
    vllm, gemma3_270m_dir):
  info = _run(_backend(base_url=vllm.base_url, model=vllm.model),
              lambda b: b.tokenizer_info())
  assert info == base.TokenizerInfo(
      vocab_size=0,
      fingerprint=contract.tokenizer_fingerprint(
          HFTokenizer(gemma3_270m_dir)))


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_log_probs_are_tunixs(vllm, tunix_270m):
  model, tokenizer, mesh = tunix_270m
  queries = [base.LogprobsQuery(
      tuple([tokenizer.bos_id(), *tokenizer.encode(prompt)]),
      tuple(tokenizer.encode(completion))) for prompt, completion in PAIRS]
  answers = _run(_backend(base_url=vllm.base_url, model=vllm.model),
                 lambda b: b.token_logprobs(queries))
  for query, answer in zip(queries, answers, strict=True):
    assert isinstance(answer, base.Logprobs), answer
    assert len(answer.values) == len(query.completion)
    expected = _tunix_logprobs(model, tokenizer, mesh, query)
    diff = np.abs(np.array(answer.values) - expected)
    print(f"{len(query.prompt)}+{len(query.completion)} tokens: max |dlogp| "
          f"{diff.max():.2e}, mean {diff.mean():.2e}")
    assert diff.max() < MAX_ABS_LOGPROB_DIFF


@pytest.mark.vllm
@pytest.mark.slow
def test_an_id_outside_the_vocabulary_is_a_final_failure(vllm):
  """The request's fault (HTTP 400): asking again would not help."""
  (answer,) = _run(_backend(base_url=vllm.base_url, model=vllm.model),
                   lambda b: b.token_logprobs(
                       [base.LogprobsQuery((2, 9259), (1 << 30,))]))
  assert answer.infrastructure_failure and not answer.transient, answer
  assert answer.reason.startswith(
      f"infrastructure: HTTP 400 from {vllm.base_url}/completions: "), answer
  assert "out of vocabulary" in answer.reason


def test_chat_mode_gives_no_tokenizer():
  """Chat takes text only; nothing is asked of the endpoint."""
  url = f"http://127.0.0.1:{processes.free_port()}/v1"
  assert _run(_backend(base_url=url, model="m", mode="chat"),
              lambda b: b.tokenizer_info()) is None


@pytest.mark.parametrize("base_url, expected", [
    ("http://h:8000/v1", "http://h:8000/tokenize"),
    ("http://h:8000/v1/", "http://h:8000/tokenize"),
    # Behind a proxy that serves vLLM under a prefix.
    ("https://gw/vllm/v1", "https://gw/vllm/tokenize"),
    ("http://h:8000", "http://h:8000/tokenize"),
])
def test_tokenize_lives_beside_v1(base_url, expected):
  assert openai_compat.tokenize_url(base_url) == expected


def test_an_unreachable_teacher_is_transient_and_names_the_url():
  root = f"http://127.0.0.1:{processes.free_port()}"
  query = base.LogprobsQuery((2, 9259), (1902, 107))
  answers = _run(_backend(base_url=f"{root}/v1", model="m", timeout_s=10.0),
                 lambda b: b.token_logprobs([query, query]))
  for answer in answers:
    assert answer.infrastructure_failure and answer.transient, answer
    assert answer.reason.startswith(
        f"infrastructure: ConnectError from {root}/v1/completions"), answer
  with pytest.raises(RuntimeError) as e:
    _run(_backend(base_url=f"{root}/v1", model="m", timeout_s=10.0),
         lambda b: b.tokenizer_info())
  assert str(e.value).startswith(
      f"cannot read the tokenizer of {root}/tokenize: ConnectError from "
      f"{root}/tokenize"), e.value


def test_busy_and_odd_answers_read_as_judging_reads_them():
  """A stand-in endpoint: /tokenize answers once (the answer is kept),
  completions are refused as busy with a Retry-After, then answered in a
  shape that lacks the prompt's log-probs, then with one entry short."""
  completions = [
      (503, '{"error": "busy"}', "Retry-After: 7\r\n"),
      (200, '{"choices": [{"text": "x"}]}', ""),
      (200, '{"choices": [{"prompt_logprobs": [null, '
       '{"1902": {"logprob": -1.5}}]}]}', ""),
  ]
  paths = []

  async def answer(reader, writer):
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
    await reader.readexactly(length)
    path = head.split()[1]
    paths.append(path)
    if path == "/tokenize":
      status, body, extra = 200, '{"tokens": [2, 5, 7]}', ""
    else:
      status, body, extra = completions.pop(0)
    writer.write(
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n"
        f"{body}".encode())
    await writer.drain()
    writer.close()

  async def run():
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = _backend(base_url=f"http://127.0.0.1:{port}/v1", model="m",
                       max_concurrency=1)
    query = base.LogprobsQuery((2, 9259), (1902, 107))
    async with server:
      infos = [await backend.tokenizer_info() for _ in range(2)]
      answers = [(await backend.token_logprobs([query]))[0]
                 for _ in range(3)]
    await backend.close()
    return port, infos, answers

  port, infos, answers = asyncio.run(run())
  url = f"http://127.0.0.1:{port}/v1/completions"
  assert infos == [base.TokenizerInfo(0, contract.fingerprint([2, 5, 7]))] * 2
  assert paths.count("/tokenize") == 1
  busy, no_logprobs, short = answers
  assert busy.transient and busy.retry_after_s == 7.0, busy
  assert busy.reason.startswith(f"infrastructure: HTTP 503 from {url}: ")
  for odd in (no_logprobs, short):
    assert odd.infrastructure_failure and not odd.transient, odd
    assert odd.reason.startswith(
        f"infrastructure: {url} answered in an unknown shape ("), odd
  # The SDK's choice object has no such attribute: the reason names it.
  assert "prompt_logprobs" in no_logprobs.reason
  assert "2 prompt_logprobs for 4 tokens" in short.reason
