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

In memory the cache holds at most `max_entries` judgements, the least
recently used going first. With a path it also keeps them in an SQLite
database there (one row per judgement, at most `max_disk_entries` rows, the
least recently used deleted first), so a restarted judge keeps them: a
judgement not in memory is looked up there before it is judged again, and
comes back into memory. Each judged batch is written in one transaction
(WAL journal, synchronous=NORMAL): a killed judge loses no committed batch,
a torn write is rolled back on the next open, and a power cut can lose the
last batches but not the file.

A use of a kept judgement costs no disk write of its own: a row's last use
is updated in batches (with the next new judgements, after TOUCH_BATCH
uses, and at close), and at most once per window of max_disk_entries /
WINDOWS new judgements, so that within a window the first use orders a
judgement on disk, not the last. Without that, hits spread over a large file
would each dirty a random page. What it trades is only the disk's order,
and only within a window or, after a kill, the uses since the last write:
eviction can drop a judgement a little early, never give a wrong one.
Memory's order is exact.

One judge process holds the file at a time (SQLite's exclusive locking
mode): a second one pointed at it is refused at start. A msgpack cache from
an earlier grar is refused too (its judgements are not migrated: they are
only judged again).
"""

import asyncio
import collections
import hashlib
import os
import pathlib
import sqlite3
import sys
from typing import Awaitable, Callable

from judge_server import observability
from judge_server.backends.base import Judgement
from judge_server.config import CacheConfig
from grar_config.strict import ConfigError

_KEY_BYTES = 16
# "grjc" in the SQLite header's application id: the file is a judge cache.
_APPLICATION_ID = 0x67726A63
_SCHEMA_VERSION = 1
_SQLITE_MAGIC = b"SQLite format 3\0"
# How the msgpack judge cache of earlier versions begins: its header record.
_MSGPACK_MAGIC = b"\x81\xb0grar-judge-cache"
# Uses of kept judgements written at the latest after this many: each is a
# random row's update (tens of microseconds on a large file), and the event
# loop waits for the write.
TOUCH_BATCH = 256
# A judgement's use is written once per window of max_disk_entries / WINDOWS
# new judgements at most: within one, its first use orders it on disk.
WINDOWS = 64

Submit = Callable[[list[str]], Awaitable[list[Judgement]]]


def key(identity: str, prompt: str) -> bytes:
  return hashlib.blake2b(f"{identity}\0{prompt}".encode(),
                         digest_size=_KEY_BYTES).digest()


def check(config: CacheConfig) -> None:
  """ConfigError when the cache could not be kept at `config.path`: its
  directory is missing or unwritable, or a file there is not an SQLite
  file (an earlier grar's msgpack cache, or anything else). Creates
  nothing; opening the cache checks the rest."""
  if config.enabled and config.path:
    _check_path(pathlib.Path(config.path))


def _check_path(path: pathlib.Path) -> None:
  where = f"cache.path: {path}"
  directory = path.parent
  if not directory.is_dir():
    raise ConfigError(f"{where}: directory {directory} does not exist "
                      "(create it, or choose another path)")
  if not os.access(directory, os.W_OK | os.X_OK):
    raise ConfigError(f"{where}: directory {directory} is not writable")
  if not path.exists():
    return
  try:
    with open(path, "rb") as f:
      head = f.read(len(_MSGPACK_MAGIC))
  except OSError as e:
    raise ConfigError(f"{where}: cannot read: {e.strerror}") from None
  if head.startswith(_MSGPACK_MAGIC):
    raise ConfigError(
        f"{where}: a msgpack judge cache from an earlier grar, which is not "
        "read any more: delete it (its judgements are judged again) or "
        "choose another path")
  if head and not head.startswith(_SQLITE_MAGIC):
    raise ConfigError(f"{where}: not a grar judge cache")
  if not os.access(path, os.R_OK | os.W_OK):
    raise ConfigError(f"{where}: not readable and writable")


class JudgementCache:

  def __init__(self, identity: str, max_entries: int = 1_000_000,
               path: str = "", max_disk_entries: int = 10_000_000,
               metrics: observability.Metrics | None = None):
    self._identity = identity
    self._metrics = metrics
    self._max_entries = max_entries
    self._max_disk = max_disk_entries
    # Least recently used first; each with the use the disk has for it.
    self._entries: collections.OrderedDict[bytes, tuple[Judgement, int]] = (
        collections.OrderedDict())
    # Prompts being judged; the future's result is the judgement, or None
    # when the asker went away and a waiter must ask again.
    self._flight: dict[bytes, asyncio.Future] = {}
    self._hits = self._joined = self._misses = 0
    self._path = pathlib.Path(path) if path else None
    self._db: sqlite3.Connection | None = None
    self._disk_entries = 0
    self._clock = 0  # the last use; no row's `used` is above it
    self._touched: dict[bytes, int] = {}  # uses not written yet
    # Uses from _window on are on disk (or in _touched) already; it moves
    # on after each window of new judgements.
    self._window = 1
    self._window_size = max(1, max_disk_entries // WINDOWS)
    self._new_in_window = 0
    self._told_failure = False
    if self._path is not None:
      self._open(self._path)

  def _open(self, path: pathlib.Path) -> None:
    _check_path(path)
    try:
      # isolation_level None: transactions are the explicit BEGIN/COMMIT.
      db = sqlite3.connect(path, timeout=0, isolation_level=None,
                           check_same_thread=False)
    except sqlite3.Error as e:
      raise ConfigError(f"cache.path: {path}: cannot open: {e}") from None
    try:
      # Exclusive: the lock taken by the first read is held until close, so
      # a second judge is refused and no shared-memory index is made.
      db.execute("PRAGMA locking_mode = EXCLUSIVE")
      # Before anything is changed: another database is left as it was.
      new = self._identify(db, path)
      if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
        raise ConfigError(f"cache.path: {path}: SQLite cannot keep a "
                          "write-ahead log there")
      db.execute("PRAGMA synchronous = NORMAL")
      db.execute("BEGIN EXCLUSIVE")  # a write lock now, not at the first miss
      try:
        if new:
          db.execute("CREATE TABLE judgements ("
                     " key BLOB PRIMARY KEY NOT NULL,"
                     " score REAL NOT NULL, mass REAL NOT NULL,"
                     " method TEXT NOT NULL,"
                     " used INTEGER NOT NULL) WITHOUT ROWID")
          db.execute("CREATE INDEX judgements_by_use ON judgements (used)")
          db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
          db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        db.execute("COMMIT")
      except BaseException:
        if db.in_transaction:
          db.execute("ROLLBACK")
        raise
      self._disk_entries = db.execute(
          "SELECT COUNT(*) FROM judgements").fetchone()[0]
      self._clock = db.execute(
          "SELECT COALESCE(MAX(used), 0) FROM judgements").fetchone()[0]
      self._window = self._clock + 1
    except sqlite3.OperationalError as e:
      db.close()
      if e.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        raise ConfigError(f"cache.path: {path}: in use by another judge "
                          "process (give each judge its own path)") from None
      raise ConfigError(f"cache.path: {path}: cannot write: {e}") from None
    except sqlite3.DatabaseError as e:
      db.close()
      raise ConfigError(f"cache.path: {path}: not a grar judge cache ({e})"
                        ) from None
    except BaseException:
      db.close()
      raise
    self._db = db

  @staticmethod
  def _identify(db: sqlite3.Connection, path: pathlib.Path) -> bool:
    """True for a new (empty) database, False for a judge cache of this
    version; ConfigError for anything else."""
    application = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()[0]
    if application == 0 and tables == 0:
      return True
    if application != _APPLICATION_ID:
      raise ConfigError(f"cache.path: {path}: not a grar judge cache (an "
                        "SQLite database of something else)")
    if version != _SCHEMA_VERSION:
      raise ConfigError(f"cache.path: {path}: a judge cache of schema "
                        f"version {version}, this grar reads "
                        f"{_SCHEMA_VERSION}: delete it or choose another "
                        "path")
    return False

  def stats(self) -> dict[str, int]:
    """hits: answered from the cache (memory or disk); joined: awaited an
    identical prompt being judged; misses: sent to the backend; entries:
    judgements in memory; disk_entries: on disk (0 without a path)."""
    return {"hits": self._hits, "joined": self._joined,
            "misses": self._misses, "entries": len(self._entries),
            "disk_entries": self._disk_entries}

  def _tick(self) -> int:
    self._clock += 1
    return self._clock

  def _keep(self, k: bytes, judgement: Judgement, used: int) -> None:
    """Into memory as the most recently used, the least going if full."""
    self._entries[k] = (judgement, used)
    self._entries.move_to_end(k)
    if len(self._entries) > self._max_entries:
      self._entries.popitem(last=False)

  def _lookup(self, k: bytes) -> Judgement | None:
    kept = self._entries.get(k)
    if kept is not None:
      self._entries.move_to_end(k)
      judgement, used = kept
    elif self._db is not None:
      try:
        row = self._db.execute(
            "SELECT score, mass, method, used FROM judgements WHERE key = ?",
            (k,)).fetchone()
      except sqlite3.Error as e:
        self._failed("read", e)
        row = None
      if row is None:
        return None
      judgement, used = Judgement(row[0], row[1], method=row[2]), row[3]
      self._keep(k, judgement, used)
    else:
      return None
    if self._db is not None and used < self._window:
      used = self._touched[k] = self._tick()
      self._entries[k] = (judgement, used)
      if len(self._touched) >= TOUCH_BATCH:
        self._write([])
    return judgement

  def _failed(self, what: str, e: sqlite3.Error) -> None:
    if not self._told_failure:
      print(f"grar-judge: cache {self._path}: cannot {what} ({e}); judging "
            "on, disk copy incomplete", file=sys.stderr, flush=True)
    self._told_failure = True

  def _write(self, new: list[tuple[bytes, Judgement, int]]) -> None:
    """New judgements and the uses kept so far, in one transaction; then
    the least recently used rows past max_disk_entries are deleted."""
    db = self._db
    if db is None or not (new or self._touched):
      return
    touched, self._touched = self._touched, {}
    self._new_in_window += len(new)
    if self._new_in_window >= self._window_size:
      self._window, self._new_in_window = self._clock + 1, 0
    try:
      db.execute("BEGIN IMMEDIATE")
      try:
        db.executemany("UPDATE judgements SET used = ? WHERE key = ?",
                       [(used, k) for k, used in touched.items()])
        added = 0
        for k, j, used in new:
          added += db.execute(
              "INSERT OR IGNORE INTO judgements VALUES (?, ?, ?, ?, ?)",
              (k, float(j.score), float(j.mass), j.method, used)).rowcount
        evicted = 0
        excess = self._disk_entries + added - self._max_disk
        if excess > 0:
          evicted = db.execute(
              "DELETE FROM judgements WHERE key IN (SELECT key FROM "
              "judgements ORDER BY used LIMIT ?)", (excess,)).rowcount
        db.execute("COMMIT")
      except BaseException:
        if db.in_transaction:
          db.execute("ROLLBACK")
        raise
    except sqlite3.Error as e:
      self._failed("write", e)
      return
    self._disk_entries += added - evicted

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
        if k in self._flight:  # also the same prompt twice in this call
          waits.append((i, self._flight[k]))
          self._joined += 1
        elif (kept := self._lookup(k)) is not None:
          results[i] = kept
          self._hits += 1
        else:
          self._flight[k] = loop.create_future()
          mine[k] = i
          self._misses += 1
      if mine:
        judged = None
        try:
          judged = await submit([prompts[i] for i in mine.values()])
        finally:
          new = []
          for n, (k, i) in enumerate(mine.items()):
            j = None if judged is None else judged[n]
            self._flight.pop(k).set_result(j)
            if j is not None:
              results[i] = j
              if j.score is not None:
                used = self._tick()
                self._keep(k, j, used)
                new.append((k, j, used))
          self._write(new)
      for i, future in waits:
        # shield: a waiter that goes away must not cancel the asker's future.
        results[i] = await asyncio.shield(future)
      if self._metrics is not None:
        self._metrics.cache_hits.inc(len(todo) - len(mine))
        self._metrics.cache_misses.inc(len(mine))
      todo = [i for i in todo if results[i] is None]
    return results

  def close(self) -> None:
    """Writes the uses kept so far and closes the file."""
    if self._db is not None:
      self._write([])
      try:
        self._db.close()
      except sqlite3.Error as e:
        self._failed("close", e)
      self._db = None


def build(config: CacheConfig, identity: str,
          metrics: observability.Metrics | None = None
          ) -> JudgementCache | None:
  if not config.enabled:
    return None
  return JudgementCache(identity, config.max_entries, config.path,
                        config.max_disk_entries, metrics)
