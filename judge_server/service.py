"""The gRPC face of the judge: validation at the edge, then scoring.

A request that breaks the contract is refused with INVALID_ARGUMENT naming
the field; it is the caller's bug. A request the judge could not score comes
back as an UNSCORABLE result; it is the judge's problem, never a reward of 0.
"""

import asyncio
import time
from typing import AsyncIterator, Mapping

import grpc

from judge_server import scoring
from judge_server.backends.base import Backend
from judge_server.batching import MicroBatcher
from judge_server.config import Limits
from judge_server.rubric import Rubric, RubricError
from protos import judge_pb2, judge_pb2_grpc

_STATUS = {"scored": judge_pb2.SCORED, "unscorable": judge_pb2.UNSCORABLE}


class InvalidRequest(ValueError):
  """A request that breaks the contract; the message starts with the field."""


def _enum_name(enum, value: int) -> str:
  """The lower-case name of an enum value, e.g. Category.IMPORTANT gives
  "important"; a number only a newer client knows stays a number, so the
  error message can show it."""
  try:
    return enum.Name(value).lower()
  except ValueError:
    return str(value)


def _rubric_dict(rubric: judge_pb2.Rubric) -> dict:
  """The proto rubric in Rubric.from_dict's shape; an unset category or
  polarity is left out so it reads as missing or defaulted."""
  criteria = []
  for c in rubric.criteria:
    item = {"text": c.text, "weight": c.weight}
    if c.category:
      item["category"] = _enum_name(judge_pb2.Category, c.category)
    if c.polarity:
      item["polarity"] = _enum_name(judge_pb2.Polarity, c.polarity)
    criteria.append(item)
  return {"criteria": criteria}


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
      raise InvalidRequest(f"rubric_id: unknown rubric {request.rubric_id!r} "
                           f"(known: {', '.join(sorted(packs))})")
    return packs[request.rubric_id]
  n = len(request.rubric.criteria)
  if n > limits.max_criteria:
    raise InvalidRequest(f"rubric.criteria: {n} criteria, more than "
                         f"max_criteria={limits.max_criteria}")
  try:
    return Rubric.from_dict(_rubric_dict(request.rubric), where="rubric")
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
    agg = _enum_name(judge_pb2.Aggregation, request.aggregation)
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


class JudgeServicer(judge_pb2_grpc.JudgeServiceServicer):

  def __init__(self, backend: Backend, batcher: MicroBatcher,
               packs: Mapping[str, Rubric], limits: Limits,
               default_aggregation: str):
    self._backend = backend
    self._batcher = batcher
    self._packs = packs
    self._limits = limits
    self._default_aggregation = default_aggregation

  def _validate(self, request: judge_pb2.ScoreRequest) -> scoring.Job:
    return validate(request, self._packs, self._limits,
                    self._default_aggregation)

  async def _score(self, job: scoring.Job,
                   received: float) -> judge_pb2.ScoreResult:
    outcome = await scoring.score(job, self._batcher)
    return judge_pb2.ScoreResult(
        rollout_id=job.rollout_id, status=_STATUS[outcome.status],
        reward=outcome.reward, reason=outcome.reason,
        criteria=[judge_pb2.CriterionScore(index=i, score=s, score_mass=m,
                                           method=method)
                  for i, s, m, method in outcome.criteria],
        latency_ms=(time.perf_counter() - received) * 1000)

  async def ScoreBatch(self, request: judge_pb2.ScoreBatchRequest,
                       context) -> judge_pb2.ScoreBatchResponse:
    received = time.perf_counter()
    n, limit = len(request.requests), self._limits.max_requests_per_batch_call
    if n > limit:
      await context.abort(
          grpc.StatusCode.INVALID_ARGUMENT,
          f"requests: {n} requests, more than max_requests_per_batch_call="
          f"{limit}; use the Score stream for more")
    jobs, first = [], {}
    for i, r in enumerate(request.requests):
      try:
        job = self._validate(r)
      except InvalidRequest as e:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"requests[{i}].{e}")
      if job.rollout_id in first:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"requests[{i}].rollout_id: duplicate {job.rollout_id!r} (also "
            f"requests[{first[job.rollout_id]}])")
      first[job.rollout_id] = i
      jobs.append(job)
    results = await asyncio.gather(*(self._score(j, received) for j in jobs))
    return judge_pb2.ScoreBatchResponse(results=results)

  async def Score(self, request_iterator, context
                  ) -> AsyncIterator[judge_pb2.ScoreResult]:
    """Scores each request as it arrives; yields in completion order."""
    reading = asyncio.ensure_future(anext(request_iterator, None))
    scoring_tasks: set[asyncio.Task] = set()
    in_flight: set[str] = set()
    try:
      while reading is not None or scoring_tasks:
        done, _ = await asyncio.wait(scoring_tasks | ({reading} - {None}),
                                     return_when=asyncio.FIRST_COMPLETED)
        if reading in done:
          request, reading = reading.result(), None
          if request is not None:
            received = time.perf_counter()
            job = await self._accept(request, in_flight, context)
            scoring_tasks.add(asyncio.create_task(self._score(job, received)))
            reading = asyncio.ensure_future(anext(request_iterator, None))
        for task in done & scoring_tasks:
          scoring_tasks.discard(task)
          result = task.result()
          in_flight.discard(result.rollout_id)
          yield result
    finally:
      # The client went away or a request was refused: stop the rest.
      for task in scoring_tasks | ({reading} - {None}):
        task.cancel()

  async def _accept(self, request: judge_pb2.ScoreRequest, in_flight: set[str],
                    context) -> scoring.Job:
    """The request's job, marked in flight; aborts the stream if invalid."""
    try:
      job = self._validate(request)
    except InvalidRequest as e:
      await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"rollout_id={request.rollout_id}: {e}")
    if job.rollout_id in in_flight:
      await context.abort(
          grpc.StatusCode.INVALID_ARGUMENT,
          f"rollout_id={job.rollout_id}: rollout_id: already in flight in "
          "this stream")
    in_flight.add(job.rollout_id)
    return job

  async def GetInfo(self, request: judge_pb2.GetInfoRequest,
                    context) -> judge_pb2.GetInfoResponse:
    limits = self._limits
    return judge_pb2.GetInfoResponse(
        backend=self._backend.name, model=self._backend.model,
        rubrics=[judge_pb2.RubricInfo(id=r.id, version=r.version,
                                      num_criteria=len(r.criteria))
                 for r in sorted(self._packs.values(), key=lambda r: r.id)],
        limits=judge_pb2.Limits(
            max_batch=self._batcher.max_batch,
            max_prompt_chars=limits.max_prompt_chars,
            max_completion_chars=limits.max_completion_chars,
            max_criteria=limits.max_criteria,
            max_requests_per_batch_call=limits.max_requests_per_batch_call),
        default_aggregation=judge_pb2.Aggregation.Value(
            self._default_aggregation.upper()))
