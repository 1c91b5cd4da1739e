"""The judge's model as a teacher (TokenLogprobs): a request checked at the
edge, the backend face the batcher drives, and the result message.

The teacher path goes through the same parts as scoring, each its own
instance: a MicroBatcher (no cache: a student's samples rarely repeat),
deadlines, retries and a circuit breaker (judge_server.resilience), metrics
per backend call, and the server's admission limits, where one request
counts as one prompt.
"""

import time

from judge_server.backends.base import (
    Backend, Judgement, Logprobs, LogprobsQuery, TokenizerInfo)
from judge_server.batching import MicroBatcher
from judge_server.config import Limits
from judge_server.observability import Observer
from protos import judge_pb2


class TeacherFace(Backend):
  """`backend`'s token_logprobs as a Backend's judge, so the batcher, the
  retries and the metrics drive it unchanged; its name, in metrics, is the
  backend's with "-teacher"."""

  def __init__(self, backend: Backend):
    self._backend = backend
    self.name = f"{backend.name}-teacher"
    self.model = backend.model
    self.max_batch = backend.max_batch
    self.max_calls_in_flight = backend.max_calls_in_flight

  @property
  def identity(self) -> str:
    return f"teacher:{self._backend.identity}"

  async def judge(self, queries: list[LogprobsQuery]
                  ) -> list[Logprobs | Judgement]:
    return await self._backend.token_logprobs(queries)


def _ids(field: str, ids) -> tuple[int, ...]:
  if not ids:
    raise ValueError(f"{field}: at least one token is required")
  bad = next((i for i in ids if i < 0), None)
  if bad is not None:
    raise ValueError(f"{field}: token id {bad} is negative")
  return tuple(ids)


def validate(request: judge_pb2.LogprobsRequest,
             limits: Limits) -> LogprobsQuery:
  """The query a request asks for, checked as far as it can be without the
  backend; ValueError naming the field."""
  if len(request.rollout_id) > limits.max_rollout_id_chars:
    raise ValueError(f"rollout_id: {len(request.rollout_id)} characters, "
                     f"more than max_rollout_id_chars="
                     f"{limits.max_rollout_id_chars}")
  n = len(request.prompt_tokens) + len(request.completion_tokens)
  if n > limits.max_logprob_tokens:
    raise ValueError(f"completion_tokens: {n} tokens with the prompt's, more "
                     f"than max_logprob_tokens={limits.max_logprob_tokens}")
  return LogprobsQuery(_ids("prompt_tokens", request.prompt_tokens),
                       _ids("completion_tokens", request.completion_tokens))


def check_vocabulary(query: LogprobsQuery, tokenizer: TokenizerInfo) -> None:
  """ValueError naming the field of the first id outside the backend's
  vocabulary (a vocab_size of 0: unknown, any id goes)."""
  if not tokenizer.vocab_size:
    return
  for field, ids in (("prompt_tokens", query.prompt),
                     ("completion_tokens", query.completion)):
    bad = next((i for i in ids if i >= tokenizer.vocab_size), None)
    if bad is not None:
      raise ValueError(f"{field}: token id {bad} is outside the judge's "
                       f"vocabulary of {tokenizer.vocab_size} tokens")


class Teacher:
  """Answers LogprobsRequests through `batcher` (over a TeacherFace) and
  logs and counts each result as the Scorer does a score."""

  def __init__(self, backend: Backend, batcher: MicroBatcher, limits: Limits,
               observer: Observer):
    self.backend = backend
    self.batcher = batcher
    self.limits = limits
    self.observer = observer
    self._tokenizer: TokenizerInfo | None = None

  async def tokenizer(self) -> TokenizerInfo | None:
    """The backend's tokenizer, asked once it has answered."""
    if self._tokenizer is None:
      self._tokenizer = await self.backend.tokenizer_info()
    return self._tokenizer

  async def tokenizer_proto(self) -> judge_pb2.TokenizerInfo:
    """What GetInfo says of the tokenizer; an endpoint that cannot say just
    now is reported in `error`, not as a failed GetInfo."""
    try:
      info = await self.tokenizer()
    except Exception as e:  # GetInfo answers for the rest of the server
      return judge_pb2.TokenizerInfo(error=f"{type(e).__name__}: {e}")
    if info is None:
      return judge_pb2.TokenizerInfo()
    return judge_pb2.TokenizerInfo(vocab_size=info.vocab_size,
                                   fingerprint=info.fingerprint)

  async def logprobs(self, rpc: str, rollout_id: str, query: LogprobsQuery,
                     received: float) -> judge_pb2.LogprobsResult:
    [answer] = await self.batcher.submit([query])
    result = judge_pb2.LogprobsResult(
        rollout_id=rollout_id,
        latency_ms=(time.perf_counter() - received) * 1000)
    if isinstance(answer, Logprobs):
      result.status = judge_pb2.SCORED
      result.logprobs.extend(answer.values)
    else:
      result.status = judge_pb2.UNSCORABLE
      result.reason = answer.reason
    self.observer.result(rpc, result)
    return result
