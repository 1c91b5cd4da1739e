"""The gRPC face of the judge: validation at the edge, then scoring.

A request that breaks the contract is refused with INVALID_ARGUMENT naming
the field; it is the caller's bug. A request the judge could not score comes
back as an UNSCORABLE result; it is the judge's problem, never a reward of 0.
A call that finds the judge full is refused with RESOURCE_EXHAUSTED and a
retry hint (judge_server.limits).
"""

import asyncio
import dataclasses
import time
from typing import AsyncIterator, Mapping

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from judge_server import scoring
from judge_server import teacher as teacher_lib
from judge_server.backends.base import Backend, TokenizerInfo
from judge_server.batching import MicroBatcher
from judge_server.config import CriteriaConfig, Limits
from judge_server.limits import Admission, Overloaded, prompt_count, refuse
from judge_server.observability import Observer
from protos.rubric import Rubric, RubricError
from protos import contract, judge_pb2, judge_pb2_grpc

_STATUS = {"scored": judge_pb2.SCORED, "unscorable": judge_pb2.UNSCORABLE}


class InvalidRequest(ValueError):
  """A request that breaks the contract; the message starts with the field."""


def _cut(text: str, limit: int = 300) -> str:
  """`text` as a refusal quotes it: a refusal is one short line, whatever
  size of field it refuses (a valid rollout id, 256 characters by default,
  is quoted whole)."""
  if len(text) <= limit:
    return text
  return f"{text[:limit]}... ({len(text)} characters)"


def _check_length(field: str, text: str, limit: int, limit_name: str) -> None:
  if len(text) > limit:
    raise InvalidRequest(f"{field}: {len(text)} characters, more than "
                         f"{limit_name}={limit}")


def _rubric(request: judge_pb2.ScoreRequest, packs: Mapping[str, Rubric],
            limits: Limits) -> Rubric:
  source = request.WhichOneof("rubric_source")
  if source is None:
    raise InvalidRequest("rubric: one of rubric or rubric_id is required")
  if source == "rubric_id":
    if request.rubric_id not in packs:
      raise InvalidRequest(
          f"rubric_id: unknown rubric {_cut(request.rubric_id)!r} (known: "
          f"{', '.join(sorted(packs))})")
    return packs[request.rubric_id]
  n = len(request.rubric.criteria)
  if n > limits.max_criteria:
    raise InvalidRequest(f"rubric.criteria: {n} criteria, more than "
                         f"max_criteria={limits.max_criteria}")
  try:
    return contract.rubric_from_proto(request.rubric)
  except RubricError as e:
    raise InvalidRequest(str(e)) from None


def validate(request: judge_pb2.ScoreRequest, packs: Mapping[str, Rubric],
             limits: Limits, default_aggregation: str) -> scoring.Job:
  """The job a request asks for, or InvalidRequest naming the bad field."""
  _check_length("rollout_id", request.rollout_id, limits.max_rollout_id_chars,
                "max_rollout_id_chars")
  _check_length("prompt", request.prompt, limits.max_prompt_chars,
                "max_prompt_chars")
  _check_length("completion", request.completion,
                limits.max_completion_chars, "max_completion_chars")
  _check_length("reference_answer", request.reference_answer,
                limits.max_reference_chars, "max_reference_chars")
  if request.aggregation:
    agg = contract.enum_name(judge_pb2.Aggregation, request.aggregation)
  else:
    agg = default_aggregation
  try:
    return scoring.Job(
        rollout_id=request.rollout_id, prompt=request.prompt,
        completion=request.completion, reference=request.reference_answer,
        rubric=_rubric(request, packs, limits), aggregation=agg)
  except InvalidRequest:
    raise
  except ValueError as e:
    raise InvalidRequest(str(e)) from None


class Scorer:
  """What every face of the judge (gRPC, OpenRLHF's HTTP) shares:
  validation, admission, scoring, and a metric and log line per result and
  per refused call."""

  def __init__(self, batcher: MicroBatcher, packs: Mapping[str, Rubric],
               limits: Limits, default_aggregation: str,
               admission: Admission, observer: Observer,
               criteria: CriteriaConfig = CriteriaConfig()):
    self.batcher = batcher
    self.criteria = criteria
    self.packs = packs
    self.limits = limits
    self.default_aggregation = default_aggregation
    self.admission = admission
    self.observer = observer

  def validate(self, request: judge_pb2.ScoreRequest) -> scoring.Job:
    return validate(request, self.packs, self.limits,
                    self.default_aggregation)

  async def score(self, rpc: str, job: scoring.Job,
                  received: float) -> judge_pb2.ScoreResult:
    outcome = await scoring.score(job, self.batcher, self.criteria)
    result = judge_pb2.ScoreResult(
        rollout_id=job.rollout_id, status=_STATUS[outcome.status],
        reward=outcome.reward, reason=outcome.reason,
        criteria=[judge_pb2.CriterionScore(index=i, score=s, score_mass=m,
                                           method=method)
                  for i, s, m, method in outcome.criteria],
        latency_ms=(time.perf_counter() - received) * 1000)
    self.observer.result(rpc, result)
    return result


class JudgeServicer(judge_pb2_grpc.JudgeServiceServicer):
  """`http_limits`: what GetInfo reports of the HTTP face's limits, as
  fields of judge_pb2.Limits (http_face.reported_limits); `teacher`
  answers TokenLogprobs."""

  def __init__(self, backend: Backend, scorer: Scorer,
               http_limits: Mapping[str, float], teacher: teacher_lib.Teacher):
    self._backend = backend
    self._scorer = scorer
    self._teacher = teacher
    self._http_limits = http_limits
    self._limits = scorer.limits
    self._admission = scorer.admission
    self._observer = scorer.observer

  async def _invalid(self, context, rpc: str, details: str) -> None:
    self._observer.refused(rpc, grpc.StatusCode.INVALID_ARGUMENT, details)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, details)

  async def _overloaded(self, context, rpc: str, error: Overloaded) -> None:
    self._observer.refused(rpc, grpc.StatusCode.RESOURCE_EXHAUSTED,
                           str(error))
    await refuse(context, error)

  async def ScoreBatch(self, request: judge_pb2.ScoreBatchRequest,
                       context) -> judge_pb2.ScoreBatchResponse:
    try:
      with self._admission.call():
        return await self._score_batch(request, context)
    except Overloaded as e:
      await self._overloaded(context, "ScoreBatch", e)

  async def _score_batch(self, request: judge_pb2.ScoreBatchRequest,
                         context) -> judge_pb2.ScoreBatchResponse:
    received = time.perf_counter()
    n, limit = len(request.requests), self._limits.max_requests_per_batch_call
    if n > limit:
      await self._invalid(
          context, "ScoreBatch",
          f"requests: {n} requests, more than max_requests_per_batch_call="
          f"{limit}; use the Score stream for more")
    jobs, first = [], {}
    for i, r in enumerate(request.requests):
      try:
        job = self._scorer.validate(r)
      except InvalidRequest as e:
        await self._invalid(context, "ScoreBatch", f"requests[{i}].{e}")
      if job.rollout_id in first:
        await self._invalid(
            context, "ScoreBatch",
            f"requests[{i}].rollout_id: duplicate {job.rollout_id!r} (also "
            f"requests[{first[job.rollout_id]}])")
      first[job.rollout_id] = i
      jobs.append(job)
    ticket = self._admission.admit(sum(map(prompt_count, jobs)))
    try:
      results = await asyncio.gather(
          *(self._scorer.score("ScoreBatch", j, received) for j in jobs))
    finally:
      ticket.release()
    return judge_pb2.ScoreBatchResponse(results=results)

  async def Score(self, request_iterator, context
                  ) -> AsyncIterator[judge_pb2.ScoreResult]:
    """Scores each request as it arrives; yields in completion order."""
    async def accept(request: judge_pb2.ScoreRequest):
      job = self._scorer.validate(request)
      return job.rollout_id, prompt_count(job), (
          lambda received: self._scorer.score("Score", job, received))
    async for result in self._serve_stream("Score", request_iterator,
                                           context, accept):
      yield result

  async def TokenLogprobs(self, request_iterator, context
                          ) -> AsyncIterator[judge_pb2.LogprobsResult]:
    """The teacher's log-probs of each completion as it arrives; yields in
    completion order. The backend's tokenizer is asked only once a request
    has passed every check that does not need it: UNAVAILABLE while it
    cannot answer, UNIMPLEMENTED for a backend that gives no log-probs."""
    teacher = self._teacher

    async def accept(request: judge_pb2.LogprobsRequest):
      try:
        query = teacher_lib.validate(request, self._limits)
        teacher_lib.check_vocabulary(query, await self._tokenizer(context))
      except ValueError as e:
        raise InvalidRequest(str(e)) from None
      return request.rollout_id, 1, (lambda received: teacher.logprobs(
          "TokenLogprobs", request.rollout_id, query, received))
    async for result in self._serve_stream("TokenLogprobs", request_iterator,
                                           context, accept):
      yield result

  async def _tokenizer(self, context) -> TokenizerInfo:
    """The backend's tokenizer, or the call aborted saying why not."""
    try:
      tokenizer = await self._teacher.tokenizer()
    except Exception as e:  # an endpoint down: the caller may try later
      details = (f"backend {self._backend.name} cannot read its tokenizer "
                 f"now: {type(e).__name__}: {e}")
      self._observer.refused("TokenLogprobs", grpc.StatusCode.UNAVAILABLE,
                             details)
      await context.abort(grpc.StatusCode.UNAVAILABLE, details)
    if tokenizer is None:
      details = f"backend {self._backend.name} gives no token log-probs"
      self._observer.refused("TokenLogprobs", grpc.StatusCode.UNIMPLEMENTED,
                             details)
      await context.abort(grpc.StatusCode.UNIMPLEMENTED, details)
    return tokenizer

  async def _serve_stream(self, rpc: str, request_iterator, context, accept
                          ) -> AsyncIterator:
    try:
      with self._admission.call():
        async for result in self._stream(rpc, request_iterator, context,
                                         accept):
          yield result
    except Overloaded as e:
      await self._overloaded(context, rpc, e)

  async def _stream(self, rpc: str, request_iterator, context, accept
                    ) -> AsyncIterator:
    """Answers each request as it arrives, in completion order. `accept`
    (a coroutine) turns a request into (rollout_id, prompts it queues,
    work), where work(received) answers it; InvalidRequest aborts the
    stream. Raises Overloaded, once this stream's work in flight is
    answered, when a request found the queue full: the caller re-sends
    from there."""
    reading = asyncio.ensure_future(anext(request_iterator, None))
    working: set[asyncio.Task] = set()
    in_flight: set[str] = set()
    overloaded = None
    try:
      while reading is not None or working:
        done, _ = await asyncio.wait(working | ({reading} - {None}),
                                     return_when=asyncio.FIRST_COMPLETED)
        if reading in done:
          request, reading = reading.result(), None
          if request is not None:
            received = time.perf_counter()
            prompts, work = await self._accept(rpc, request, accept,
                                               in_flight, context)
            try:
              ticket = self._admission.admit(prompts)
            except Overloaded as e:
              overloaded = e  # read no more; finish what is in flight
            else:
              task = asyncio.create_task(work(received))
              # A callback, not a finally: a task cancelled before it first
              # runs never enters its body.
              task.add_done_callback(lambda _, t=ticket: t.release())
              working.add(task)
              reading = asyncio.ensure_future(anext(request_iterator, None))
        for task in done & working:
          working.discard(task)
          result = task.result()
          in_flight.discard(result.rollout_id)
          yield result
    finally:
      # The client went away or a request was refused: stop the rest.
      for task in working | ({reading} - {None}):
        task.cancel()
    if overloaded is not None:
      raise overloaded

  async def _accept(self, rpc: str, request, accept, in_flight: set[str],
                    context):
    """(prompts, work) of the request, marked in flight; aborts the stream
    if it is invalid."""
    try:
      rollout_id, prompts, work = await accept(request)
    except InvalidRequest as e:
      await self._invalid(context, rpc,
                          f"rollout_id={_cut(request.rollout_id)}: {e}")
    if rollout_id in in_flight:
      await self._invalid(
          context, rpc,
          f"rollout_id={rollout_id}: rollout_id: already in flight in "
          "this stream")
    in_flight.add(rollout_id)
    return prompts, work

  async def GetInfo(self, request: judge_pb2.GetInfoRequest,
                    context) -> judge_pb2.GetInfoResponse:
    limits, scorer = self._limits, self._scorer
    return judge_pb2.GetInfoResponse(
        backend=self._backend.name, model=self._backend.model,
        rubrics=[judge_pb2.RubricInfo(id=r.id, version=r.version,
                                      num_criteria=len(r.criteria))
                 for r in sorted(scorer.packs.values(), key=lambda r: r.id)],
        # Every field of the limits config under its own name, the
        # batcher's and the HTTP face's. A field of Limits the proto lacks
        # goes unreported (tests/test_getinfo_limits.py fails on it), never
        # fails GetInfo.
        limits=judge_pb2.Limits(
            max_batch=scorer.batcher.max_batch,
            max_calls_in_flight=self._backend.max_calls_in_flight,
            **self._http_limits,
            **{f.name: getattr(limits, f.name)
               for f in dataclasses.fields(limits)
               if f.name in _REPORTED_LIMITS}),
        default_aggregation=judge_pb2.Aggregation.Value(
            scorer.default_aggregation.upper()),
        tokenizer=await self._teacher.tokenizer_proto())


_SERVICE = judge_pb2.DESCRIPTOR.services_by_name["JudgeService"]
_REPORTED_LIMITS = frozenset(judge_pb2.Limits.DESCRIPTOR.fields_by_name)


def _unknown_field(message: Message, where: str = "request") -> str | None:
  """Where `message` (or a message in it) carries a field its type does not
  have, or None. Such a field would be dropped unread: a newer client's
  field would silently change what it asked for, and bytes that are no
  message at all parse this way when the type has no fields."""
  unknown = UnknownFieldSet(message)
  if len(unknown):
    return (f"{where}: field number {unknown[0].field_number} is not a "
            f"field of {message.DESCRIPTOR.full_name}")
  for field, value in message.ListFields():
    if field.type == field.TYPE_MESSAGE:
      items = value if field.is_repeated else [value]
      for i, item in enumerate(items):
        index = f"[{i}]" if field.is_repeated else ""
        found = _unknown_field(item, f"{where}.{field.name}{index}")
        if found:
          return found
  return None


class StrictDecoding(grpc.aio.ServerInterceptor):
  """Request bytes of a JudgeService call that are not its message type,
  or carry fields the type does not have, are INVALID_ARGUMENT naming the
  type, counted like every refusal; gRPC's own answer would be UNKNOWN,
  which reads as the judge's fault, or an answer to a question not asked."""

  def __init__(self, observer: Observer):
    self._observer = observer

  async def intercept_service(self, continuation, handler_call_details):
    handler = await continuation(handler_call_details)
    service, _, name = handler_call_details.method[1:].rpartition("/")
    if handler is None or service != _SERVICE.full_name:
      return handler
    parse = handler.request_deserializer
    expected = _SERVICE.methods_by_name[name].input_type.name

    async def decode(raw: bytes, context):
      try:
        request = parse(raw)
      except DecodeError as e:
        details = f"request: not a valid {expected}: {e}"
      else:
        details = _unknown_field(request)
        if details is None:
          return request
      self._observer.refused(name, grpc.StatusCode.INVALID_ARGUMENT, details)
      await context.abort(grpc.StatusCode.INVALID_ARGUMENT, details)

    if handler.request_streaming:  # Score, TokenLogprobs: streams both ways
      async def requests(raw_requests, context):
        async for raw in raw_requests:
          yield await decode(raw, context)

      async def stream(raw_requests, context):
        async for result in handler.stream_stream(
            requests(raw_requests, context), context):
          yield result
      return grpc.stream_stream_rpc_method_handler(
          stream, response_serializer=handler.response_serializer)

    async def unary(raw: bytes, context):  # ScoreBatch, GetInfo
      return await handler.unary_unary(await decode(raw, context), context)
    return grpc.unary_unary_rpc_method_handler(
        unary, response_serializer=handler.response_serializer)
