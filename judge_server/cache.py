"""Judgements kept by judge prompt, so that an identical question to the same
judge is asked once.

GRPO samples several completions per prompt, and small policies repeat
themselves: identical completions (and the same criterion on the same
completion under two rubrics) come back many times. The key is one judge
prompt, not one request: the judge prompt text holds everything that decides
the answer (question, completion, reference answer, the criterion, or the
whole rubric for implicit aggregation, and the prompt template itself, so a
changed template never reads stale answers), and the backend's identity adds
the judge model and how its score is read. A criterion's weight is not in it
and need not be: weights are applied after judging. Keying per request would
miss the same criterion shared by two rubrics and a request that differs
only in weights.

A prompt being judged is judged once even when asked for again meanwhile:
the second asker awaits the first's answer. Unscorable judgements are not
kept (the next ask tries again), though askers waiting on that very try get
it too.

With a path, judgements are appended to a msgpack file as they arrive (one
self-delimiting record each, flushed) and read back at start, so a restarted
judge keeps them. A record torn by a crash can only be the last; it is
dropped and the file cut back to the last whole record before appending.
"""

import asyncio
import hashlib
import os
import pathlib
import sys
from typing import Awaitable, Callable

import msgpack

from judge_server import observability
from judge_server.backends.base import Judgement
from judge_server.config import CacheConfig
from grar_config.strict import ConfigError

_HEADER = {"grar-judge-cache": 1}
_KEY_BYTES = 16

Submit = Callable[[list[str]], Awaitable[list[Judgement]]]


def key(identity: str, prompt: str) -> bytes:
  return hashlib.blake2b(f"{identity}\0{prompt}".encode(),
                         digest_size=_KEY_BYTES).digest()


def _record(k: bytes, j: Judgement) -> list:
  return [k, float(j.score), float(j.mass), j.method]


def _judgement(record) -> tuple[bytes, Judgement] | None:
  """The entry a record holds, or None when it is not one."""
  if not (isinstance(record, list) and len(record) == 4):
    return None
  k, score, mass, method = record
  if not (isinstance(k, bytes) and len(k) == _KEY_BYTES
          and isinstance(score, float) and isinstance(mass, float)
          and isinstance(method, str)):
    return None
  return k, Judgement(score, mass, method=method)


class JudgementCache:

  def __init__(self, identity: str, max_entries: int = 1_000_000,
               path: str = "",
               metrics: observability.Metrics | None = None):
    self._identity = identity
    self._metrics = metrics
    self._max_entries = max_entries
    self._entries: dict[bytes, Judgement] = {}
    # Prompts being judged; the future's result is the judgement, or None
    # when the asker went away and a waiter must ask again.
    self._flight: dict[bytes, asyncio.Future] = {}
    self._hits = self._joined = self._misses = 0
    self._file = self._open(pathlib.Path(path)) if path else None

  def _open(self, path: pathlib.Path):
    try:
      data = path.read_bytes() if path.exists() else b""
    except OSError as e:
      raise ConfigError(f"cache.path: {path}: cannot read: {e.strerror}"
                        ) from None
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    whole = 0  # bytes up to the end of the last whole record
    try:
      for n, record in enumerate(unpacker):
        if n == 0:
          if record != _HEADER:
            raise ConfigError(f"cache.path: {path}: not a grar judge cache")
        else:
          entry = _judgement(record)
          if entry is None:
            raise ConfigError(f"cache.path: {path}: record {n} at byte "
                              f"{whole} is not a judgement")
          self._keep(*entry)
        whole = unpacker.tell()
    except ConfigError:
      raise
    except (msgpack.UnpackException, ValueError) as e:
      raise ConfigError(f"cache.path: {path}: unreadable at byte {whole}: "
                        f"{e}") from None
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      if whole < len(data):
        os.truncate(path, whole)
        print(f"grar-judge: cache {path}: dropped a torn last record "
              f"({len(data) - whole} bytes)", file=sys.stderr, flush=True)
      file = open(path, "ab")
    except OSError as e:
      raise ConfigError(f"cache.path: {path}: cannot write: {e.strerror}"
                        ) from None
    if whole == 0:
      file.write(msgpack.packb(_HEADER))
      file.flush()
    return file

  def stats(self) -> dict[str, int]:
    """hits: answered from the cache; joined: awaited an identical prompt
    being judged; misses: sent to the backend; entries: judgements kept."""
    return {"hits": self._hits, "joined": self._joined,
            "misses": self._misses, "entries": len(self._entries)}

  def _keep(self, k: bytes, judgement: Judgement) -> None:
    self._entries.pop(k, None)
    if len(self._entries) >= self._max_entries:
      del self._entries[next(iter(self._entries))]  # the oldest
    self._entries[k] = judgement

  def _store(self, k: bytes, judgement: Judgement) -> None:
    self._keep(k, judgement)
    if self._file is not None:
      self._file.write(msgpack.packb(_record(k, judgement)))
      self._file.flush()

  async def judge(self, prompts: list[str], submit: Submit
                  ) -> list[Judgement]:
    """One Judgement per prompt, in order; `submit` judges the prompts
    neither kept nor being judged."""
    keys = [key(self._identity, p) for p in prompts]
    results: list[Judgement | None] = [None] * len(prompts)
    todo = list(range(len(prompts)))
    loop = asyncio.get_running_loop()
    while todo:
      mine: dict[bytes, int] = {}
      waits: list[tuple[int, asyncio.Future]] = []
      for i in todo:
        k = keys[i]
        if k in self._entries:
          results[i] = self._entries[k]
          self._hits += 1
        elif k in self._flight:
          waits.append((i, self._flight[k]))
          self._joined += 1
        else:
          self._flight[k] = loop.create_future()
          mine[k] = i
          self._misses += 1
      if mine:
        judged = None
        try:
          judged = await submit([prompts[i] for i in mine.values()])
        finally:
          for n, (k, i) in enumerate(mine.items()):
            j = None if judged is None else judged[n]
            self._flight.pop(k).set_result(j)
            if j is not None:
              results[i] = j
              if j.score is not None:
                self._store(k, j)
      for i, future in waits:
        # shield: a waiter that goes away must not cancel the asker's future.
        results[i] = await asyncio.shield(future)
      if self._metrics is not None:
        self._metrics.cache_hits.inc(len(todo) - len(mine))
        self._metrics.cache_misses.inc(len(mine))
      todo = [i for i in todo if results[i] is None]
    return results

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None


def build(config: CacheConfig, identity: str,
          metrics: observability.Metrics | None = None
          ) -> JudgementCache | None:
  if not config.enabled:
    return None
  return JudgementCache(identity, config.max_entries, config.path, metrics)
