"""Micro-batching judge prompts from many rollouts into backend calls.

One worker task forms the batches and runs up to `max_calls_in_flight`
backend calls at once. Prompts are taken round-robin across the pending
`submit` calls when a call slot is free, so a rollout with one prompt waits
behind at most one prompt of every other rollout, not behind a 30-criterion
rubric; forming a batch only once a slot is free keeps prompts in the fair
queue instead of committing them early to a busy backend.
"""

import asyncio
import collections
import dataclasses

from judge_server.backends import base
from judge_server.backends.base import Backend, Judgement
from judge_server.cache import JudgementCache


@dataclasses.dataclass(eq=False)
class _Submission:
  prompts: list[str]
  results: list[Judgement | None]
  future: asyncio.Future
  arrived: float
  next: int = 0  # first prompt not yet handed to a batch
  pending: int = 0  # prompts without a judgement yet

  @property
  def unsent(self) -> int:
    return len(self.prompts) - self.next


class MicroBatcher:
  """Batches of at most `max_batch` prompts, each formed at most `max_wait_s`
  after its oldest prompt arrived (sooner once a batch is full), at most
  `max_calls_in_flight` of them in the backend at once. With a `cache`, a
  prompt judged before (or being judged) never reaches the backend again;
  `close` closes the cache."""

  def __init__(self, backend: Backend, max_batch: int, max_wait_s: float,
               max_calls_in_flight: int = 1,
               cache: JudgementCache | None = None):
    if max_batch < 1:
      raise ValueError("max_batch: must be >= 1")
    if max_wait_s < 0:
      raise ValueError("max_wait_s: must be >= 0")
    if max_calls_in_flight < 1:
      raise ValueError("max_calls_in_flight: must be >= 1")
    self._backend = backend
    self._max_batch = max_batch
    self._max_wait_s = max_wait_s
    self._max_calls = max_calls_in_flight
    self._cache = cache
    self._queue: collections.deque[_Submission] = collections.deque()
    self._arrived = asyncio.Event()
    self._closing = False
    self._worker: asyncio.Task | None = None

  @property
  def max_batch(self) -> int:
    return self._max_batch

  def start(self) -> None:
    """Starts the worker on the running event loop."""
    if self._worker is not None:
      raise RuntimeError("MicroBatcher already started")
    self._worker = asyncio.get_running_loop().create_task(self._run())

  async def close(self) -> None:
    """Judges everything already submitted, then stops the worker."""
    self._closing = True
    self._arrived.set()
    if self._worker is not None:
      await self._worker
    if self._cache is not None:
      self._cache.close()

  async def submit(self, prompts: list[str]) -> list[Judgement]:
    """One Judgement per prompt, in order; never raises for a backend error."""
    if self._worker is None or self._closing:
      raise RuntimeError("MicroBatcher is not running")
    if not prompts:
      return []
    if self._cache is not None:
      return await self._cache.judge(prompts, self._submit)
    return await self._submit(prompts)

  async def _submit(self, prompts: list[str]) -> list[Judgement]:
    loop = asyncio.get_running_loop()
    sub = _Submission(prompts=list(prompts), results=[None] * len(prompts),
                      future=loop.create_future(), arrived=loop.time(),
                      pending=len(prompts))
    self._queue.append(sub)
    self._arrived.set()
    # Cancelling the caller cancels `future`; the worker then skips the rest.
    return await sub.future

  def _unsent(self) -> int:
    return sum(s.unsent for s in self._queue)

  async def _run(self) -> None:
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(self._max_calls)
    calls: set[asyncio.Task] = set()

    def finished(call: asyncio.Task) -> None:
      calls.discard(call)
      slots.release()

    while True:
      self._queue = collections.deque(
          s for s in self._queue if not s.future.done())
      if not self._queue:
        if self._closing:
          break
        self._arrived.clear()
        await self._arrived.wait()
        continue
      await slots.acquire()
      deadline = min(s.arrived for s in self._queue) + self._max_wait_s
      while not self._closing and self._unsent() < self._max_batch:
        left = deadline - loop.time()
        if left <= 0:
          break
        self._arrived.clear()
        try:
          await asyncio.wait_for(self._arrived.wait(), left)
        except TimeoutError:
          break
      batch = self._take()
      if not batch:  # every waiting submission was cancelled meanwhile
        slots.release()
        continue
      call = loop.create_task(self._judge(batch))
      calls.add(call)
      call.add_done_callback(finished)
    await asyncio.gather(*calls)

  def _take(self) -> list[tuple[_Submission, int]]:
    """Up to max_batch (submission, prompt index) pairs, one per submission
    per round; a submission with prompts left goes to the back."""
    batch = []
    while self._queue and len(batch) < self._max_batch:
      sub = self._queue.popleft()
      if sub.future.done():
        continue
      batch.append((sub, sub.next))
      sub.next += 1
      if sub.unsent:
        self._queue.append(sub)
    return batch

  async def _judge(self, batch: list[tuple[_Submission, int]]) -> None:
    try:
      judgements = await self._backend.judge(
          [sub.prompts[i] for sub, i in batch])
      if len(judgements) != len(batch):
        raise RuntimeError(
            f"{len(judgements)} judgements for {len(batch)} prompts")
    except Exception as e:  # a broken backend must not stop the worker
      failed = base.infrastructure(f"{type(e).__name__}: {e}")
      judgements = [failed] * len(batch)
    for (sub, i), judgement in zip(batch, judgements):
      sub.results[i] = judgement
      sub.pending -= 1
      if sub.pending == 0 and not sub.future.done():
        sub.future.set_result(sub.results)
