"""`grar distill`: SFT rows written by teacher models.

Each dataset row (orchestrator/data/dataset.py) is routed to one teacher, an
OpenAI-compatible endpoint (vLLM, llama.cpp, hosted APIs) or the Gemini API,
asked with the project's own reasoning prompt (templates.render) so it
answers in the trained shape. A completion is kept when it passes the
filters, in order:
  format   format_reward 1.0: exactly a reasoning block, then an answer block
  answer   the row's verifier (rewards.answer_reward) gives it full marks
  judge    optional: the rubric judge's score at or above a threshold
Up to `attempts` completions per row (seeds seed, seed+1, ...); the first kept
one becomes an SFT row (orchestrator/data/sft_rows.py) with its provenance.

Resumable: every finished row, kept or not, is appended to a progress file
beside the output, each line flushed and fsynced, and a rerun skips the ids
already there. A line torn by a kill is dropped on restart. A teacher that
answers a request with a 4xx, or stays unreachable through every retry, stops
the run (DistillError): what is done stays done, a rerun continues.
"""

import asyncio
import collections
import dataclasses
import json
import os
import pathlib
import random
import sys
import time
from collections.abc import Collection
from typing import Literal

import httpx

from grar_config import strict
from grar_config.strict import ConfigError
from judge_server import server as judge_server_lib
from judge_server.backends import base as judge_base
from judge_server.backends import http_judge
from judge_server.config import GeminiConfig, OpenAIConfig, ResilienceConfig
from orchestrator import rewards
from orchestrator.config import PromptConfig
from orchestrator.data import dataset as dataset_lib
from orchestrator.data import templates
from orchestrator.judge import client as judge_client
from orchestrator.judge.requests import request_for
from protos import judge_pb2

PROGRESS_SUFFIX = ".progress.jsonl"
SUMMARY_SUFFIX = ".summary.json"
# Filter verdicts, in the order they are tried.
FORMAT, ANSWER, JUDGE = "format", "answer", "judge"
JUDGE_UNSCORABLE = "judge_unscorable"
PROGRESS_EVERY_S = 2.0


class DistillError(ValueError):
  """A run that cannot go on: one line, what to change or that a rerun
  resumes."""


@strict.config
class TeacherConfig:
  """One teacher: an OpenAI-compatible endpoint (vLLM, llama.cpp, hosted
  APIs) or the Gemini API. `openai` and `gemini` are the judge backends'
  endpoint configs: base_url, model, api_key_env, max_concurrency (the
  teacher's requests in flight), timeout_s (each request) and openai's mode
  apply; top_logprobs and max_calls_in_flight are the judge's, unused here.
  """
  kind: Literal["openai", "gemini"] = "openai"
  openai: OpenAIConfig = OpenAIConfig()
  gemini: GeminiConfig = GeminiConfig()
  # Put before the reasoning prompt, e.g. "You are a careful math tutor."
  instruction: str = ""
  max_tokens: int = 512
  temperature: float = 0.7
  rate_limit: float = 0.0  # request starts per second; 0: no limit

  def __post_init__(self):
    # gemini's base_url has a default; openai's is wherever it is served.
    for name in ("base_url", "model"):
      if not getattr(getattr(self, self.kind), name):
        raise ValueError(f"{self.kind}.{name}: missing")
    if self.max_tokens < 1:
      raise ValueError("max_tokens: must be >= 1")
    if self.temperature < 0:
      raise ValueError("temperature: must be >= 0")
    if self.rate_limit < 0:
      raise ValueError("rate_limit: must be >= 0")


@strict.config
class RouterConfig:
  """Which teacher writes a row: routes[value of the row's `by` field], else
  `default`. by: "" (every row to default), "task", "domain" or
  "metadata.KEY"."""
  by: str = ""
  routes: dict[str, str] = dataclasses.field(default_factory=dict)
  default: str = ""

  def __post_init__(self):
    if self.by not in ("", "task", "domain") and not (
        self.by.startswith("metadata.") and self.by != "metadata."):
      raise ValueError(f"by: {self.by!r} is not one of '', task, domain, "
                       "metadata.KEY")
    if self.routes and not self.by:
      raise ValueError("routes: need `by`, the row field they match")


@strict.config
class JudgeFilterConfig:
  """The optional judge filter: a running judge server (`grar judge serve`)
  scores each completion that passed format and answer against the row's
  rubric. target "" turns it off."""
  target: str = ""  # HOST:PORT
  threshold: float = 0.5
  timeout_s: float = 120.0  # one score call, its resends included

  def __post_init__(self):
    if not 0.0 <= self.threshold <= 1.0:
      raise ValueError("threshold: must be in [0, 1]")
    if not self.timeout_s > 0:
      raise ValueError("timeout_s: must be > 0")


@strict.config
class DistillConfig:
  data: str = ""  # a dataset JSONL the trainer reads
  out: str = ""  # the SFT rows written, JSONL; progress and summary beside
  teachers: dict[str, TeacherConfig] = dataclasses.field(default_factory=dict)
  router: RouterConfig = RouterConfig()
  attempts: int = 2  # completions tried per row before it is rejected
  seed: int = 0  # attempt k asks the teacher for seed + k
  concurrency: int = 8  # rows in flight
  limit: int = 0  # rows handled by this run (0: all still to do)
  rubric_dir: str = ""  # extra rubric packs the dataset's rubric_ids name
  # Every teacher request. Used: max_retries and the backoff (transient
  # failures: connection errors, timeouts, HTTP 408/425/429 and 5xx) and
  # deadline_s (a request's tries and waits); the breaker is the judge's.
  resilience: ResilienceConfig = ResilienceConfig()
  judge: JudgeFilterConfig = JudgeFilterConfig()
  # The template the teacher is asked for and checked against; with a
  # scaffold the kept rows' reasoning goes through its steps, ready for
  # stages with the same prompt.scaffold.
  prompt: PromptConfig = PromptConfig()

  def __post_init__(self):
    # data, out and teachers are checked by `load`: the defaults stay a
    # valid config, which the JSON schema shows.
    for name in ("attempts", "concurrency"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}: must be >= 1")
    if self.limit < 0:
      raise ValueError("limit: must be >= 0")
    known = ", ".join(sorted(self.teachers))
    if not self.router.default and len(self.teachers) > 1:
      raise ValueError(f"router.default: missing; name the teacher of rows "
                       f"no route matches (teachers: {known})")
    named = {f"router.routes.{value}": name
             for value, name in self.router.routes.items()}
    if self.router.default:
      named["router.default"] = self.router.default
    for where, name in named.items():
      if name not in self.teachers:
        raise ValueError(f"{where}: unknown teacher {name!r} (teachers: "
                         f"{known})")


def load(path, overrides=()) -> DistillConfig:
  cfg = strict.load(DistillConfig, path, overrides)
  for name in ("data", "out"):
    if not getattr(cfg, name):
      raise ConfigError(f"{name}: missing")
  if not cfg.teachers:
    raise ConfigError("teachers: name at least one")
  return cfg


def route(router: RouterConfig, teachers: Collection[str],
          example: dataset_lib.Example) -> str:
  """The name of the teacher of `example`, one of `teachers`."""
  if router.by.startswith("metadata."):
    value = (example.metadata or {}).get(router.by.removeprefix("metadata."))
  else:
    value = getattr(example, router.by) if router.by else None
  if isinstance(value, str) and value in router.routes:
    return router.routes[value]
  # One teacher needs no default: it is the only one.
  return router.default or next(iter(teachers))


def reject_reason(completion: str, example: dataset_lib.Example,
                  scaffold: tuple[str, ...] = ()) -> str | None:
  """Why the rule filters reject `completion` (FORMAT or ANSWER), None if it
  passes them. FORMAT includes every step of a scaffold, in order. A row
  without a reference answer skips the answer check."""
  if rewards.format_reward(completion, scaffold) != 1.0:
    return FORMAT
  if example.answer and rewards.answer_reward(completion, example) != 1.0:
    return ANSWER
  return None


def sft_row(example: dataset_lib.Example, completion: str,
            provenance: dict) -> dict:
  """The SFT row of a completion that passed reject_reason."""
  return {"id": example.id, "prompt": example.prompt,
          "reasoning": rewards.extract_reasoning(completion).strip(),
          "answer": rewards.extract_answer(completion),
          "provenance": provenance}


def _backoff_s(cfg: ResilienceConfig, retry: int,
               retry_after_s: float) -> float:
  # The judge's rule (judge_server.resilience): exponential with equal
  # jitter, so failed callers do not come back in step, or Retry-After.
  step = min(cfg.backoff_max_s, cfg.backoff_initial_s * 2 ** retry)
  return max(retry_after_s, step / 2 + random.uniform(0, step / 2))


def closed(text: str, finish_reason: str | None) -> str:
  """The completion with the closing answer tag the request's stop string
  removed: a teacher that stopped on its own (not at the token limit) inside
  an answer block had just written </answer> or was about to."""
  if (finish_reason == "stop" and text.rfind(templates.ANSWER_START)
      > text.rfind(templates.ANSWER_END)):
    return text + templates.ANSWER_END
  return text


class RateLimit:
  """At most `per_s` request starts a second, spaced evenly."""

  def __init__(self, per_s: float):
    self._gap = 1.0 / per_s if per_s else 0.0
    self._next = 0.0

  async def wait(self) -> None:
    if not self._gap:
      return
    now = asyncio.get_running_loop().time()
    start = max(now, self._next)
    self._next = start + self._gap  # taken before sleeping: no await between
    await asyncio.sleep(start - now)


def _key(where: str, env: str) -> str:
  key = os.environ.get(env)
  if not key:
    raise ConfigError(f"{where}.api_key_env: the environment variable {env} "
                      "is not set")
  return key


class Teacher:
  """One endpoint that writes completions: at most its max_concurrency
  requests in flight, started no faster than rate_limit, each bounded by its
  timeout_s, transient failures tried again after a backoff. Subclasses
  shape the request and read the answer."""

  def __init__(self, name: str, cfg: TeacherConfig,
               resilience: ResilienceConfig, url: str,
               headers: dict[str, str]):
    endpoint = getattr(cfg, cfg.kind)
    self.name = name
    self.model = endpoint.model
    self._cfg = cfg
    self._resilience = resilience
    self._url = url
    self._timeout_s = endpoint.timeout_s
    slots = endpoint.max_concurrency
    self._client = httpx.AsyncClient(headers=headers, timeout=None,
                                     limits=httpx.Limits(
                                         max_connections=slots,
                                         max_keepalive_connections=slots))
    self._slots = asyncio.Semaphore(slots)
    self._rate = RateLimit(cfg.rate_limit)
    self.retries = 0

  def text(self, prompt: str) -> str:
    """What the teacher is sent: the instruction, if any, then `prompt`."""
    instruction = self._cfg.instruction.strip()
    return f"{instruction}\n\n{prompt}" if instruction else prompt

  def body(self, prompt: str, seed: int) -> dict:
    """The JSON request for one completion of `prompt`."""
    raise NotImplementedError

  def read(self, data: dict) -> str:
    """The completion in a JSON answer; KeyError, IndexError, TypeError or
    AttributeError when it is not in the shape expected."""
    raise NotImplementedError

  async def _try(self, body: dict):
    """(the completion, None) or (None, the failure as a judge Judgement:
    its reason, whether it may pass, and the Retry-After asked for)."""
    await self._rate.wait()
    try:
      async with self._slots, asyncio.timeout(self._timeout_s):
        response = await self._client.post(self._url, json=body)
    except TimeoutError:
      return None, judge_base.infrastructure(
          f"no answer from {self._url} within {self._timeout_s}s",
          transient=True)
    except httpx.HTTPError as e:
      return None, http_judge.transport_failure(self._url, e)
    if response.is_error:
      return None, http_judge.status_failure(self._url, response)
    try:
      return self.read(response.json()), None
    except (ValueError, *http_judge.SHAPE_ERRORS) as e:
      return None, judge_base.infrastructure(
          f"{self._url} answered in an unknown shape ({type(e).__name__}): "
          f"{response.text[:http_judge.ERROR_BODY_CHARS]}")

  async def generate(self, prompt: str, seed: int) -> str:
    """One completion; DistillError for a request the teacher refuses or
    one still failing after every retry."""
    cfg = self._resilience
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.deadline_s
    body = self.body(prompt, seed)
    for retry in range(cfg.max_retries + 1):
      text, failure = await self._try(body)
      if failure is None:
        return text
      why = failure.reason.removeprefix(judge_base.INFRASTRUCTURE)
      if not failure.transient:
        raise DistillError(f"teacher {self.name}: {why}")
      wait = _backoff_s(cfg, retry, failure.retry_after_s)
      if retry == cfg.max_retries or loop.time() + wait >= deadline:
        break
      self.retries += 1
      await asyncio.sleep(wait)
    raise DistillError(f"teacher {self.name}: gave up after {retry + 1} "
                       f"tries: {why}; rerun to resume")

  async def close(self) -> None:
    await self._client.aclose()


class OpenAITeacher(Teacher):
  """POST {base_url}/completions (the prompt as raw text) or, in chat mode,
  /chat/completions (the prompt as the user's message)."""

  def __init__(self, name: str, cfg: TeacherConfig,
               resilience: ResilienceConfig):
    openai = cfg.openai
    headers = {}
    if openai.api_key_env:
      headers["Authorization"] = "Bearer " + _key(
          f"teachers.{name}.openai", openai.api_key_env)
    path = "/chat/completions" if openai.mode == "chat" else "/completions"
    super().__init__(name, cfg, resilience,
                     openai.base_url.rstrip("/") + path, headers)

  def body(self, prompt: str, seed: int) -> dict:
    cfg = self._cfg
    body = {"model": self.model, "max_tokens": cfg.max_tokens,
            "temperature": cfg.temperature, "seed": seed,
            # Nothing after the answer counts, and the strict format refuses
            # any text there: stop paying for it.
            "stop": [templates.ANSWER_END]}
    if cfg.openai.mode == "chat":
      return body | {"messages": [{"role": "user",
                                   "content": self.text(prompt)}]}
    return body | {"prompt": self.text(prompt)}

  def read(self, data: dict) -> str:
    choice = data["choices"][0]
    text = (choice["message"]["content"] if self._cfg.openai.mode == "chat"
            else choice["text"]) or ""
    return closed(text, choice.get("finish_reason"))


class GeminiTeacher(Teacher):
  """The Gemini API: POST {base_url}/v1beta/models/{model}:generateContent,
  the key in the x-goog-api-key header."""

  def __init__(self, name: str, cfg: TeacherConfig,
               resilience: ResilienceConfig):
    gemini = cfg.gemini
    super().__init__(
        name, cfg, resilience,
        f"{gemini.base_url.rstrip('/')}/v1beta/models/{gemini.model}"
        ":generateContent",
        {"x-goog-api-key": _key(f"teachers.{name}.gemini",
                                gemini.api_key_env)})

  def body(self, prompt: str, seed: int) -> dict:
    cfg = self._cfg
    return {"contents": [{"role": "user",
                          "parts": [{"text": self.text(prompt)}]}],
            "generationConfig": {
                "candidateCount": 1, "maxOutputTokens": cfg.max_tokens,
                "temperature": cfg.temperature, "seed": seed,
                "stopSequences": [templates.ANSWER_END]}}

  def read(self, data: dict) -> str:
    candidate = data["candidates"][0]
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(part.get("text", "") for part in parts)
    # Gemini's STOP is OpenAI's "stop": a stop sequence or the model's end.
    return closed(text, "stop" if candidate.get("finishReason") == "STOP"
                  else candidate.get("finishReason"))


TEACHERS = {"openai": OpenAITeacher, "gemini": GeminiTeacher}


class JudgeFilter:
  """Scores completions on a running judge server (blocking gRPC client,
  called off the event loop)."""

  def __init__(self, cfg: JudgeFilterConfig):
    self._cfg = cfg
    self._client = judge_client.JudgeClient(cfg.target, cfg.timeout_s)
    try:
      self._client.wait_ready(cfg.timeout_s)
    except TimeoutError as e:
      self._client.close()
      raise DistillError(f"judge.target: {e}") from None

  async def score(self, example: dataset_lib.Example, completion: str,
                  rollout_id: str) -> float | None:
    """The judge's reward in [0, 1]; None when it could not score this
    completion. DistillError when the judge did not answer: a judge that is
    down must not turn rows into rejects a rerun would skip."""
    request = request_for(example, completion, rollout_id, None)
    result = (await asyncio.to_thread(self._client.score,
                                      [request]))[rollout_id]
    if result.reason.startswith(judge_client.UNAVAILABLE):
      raise DistillError(f"judge.target {self._cfg.target}: {result.reason}; "
                         "rerun to resume")
    return result.reward if result.status == judge_pb2.SCORED else None

  def verdict(self, score: float | None) -> str | None:
    if score is None:
      return JUDGE_UNSCORABLE
    return None if score >= self._cfg.threshold else JUDGE

  def close(self) -> None:
    self._client.close()


async def distill_row(example: dataset_lib.Example, teacher: Teacher,
                      attempts: int, seed: int, judge: JudgeFilter | None,
                      scaffold: tuple[str, ...] = ()
                      ) -> tuple[dict, dict | None]:
  """(its progress record, its SFT row or None) after up to `attempts`
  completions, stopping at the first kept one. A rejected row's record
  keeps its last completion, to see what the filters refused."""
  prompt = templates.render(example.prompt, scaffold)
  rejects = []
  for attempt in range(attempts):
    completion = await teacher.generate(prompt, seed + attempt)
    reason, score = reject_reason(completion, example, scaffold), None
    if reason is None and judge is not None:
      score = await judge.score(example, completion, f"{example.id}/{attempt}")
      reason = judge.verdict(score)
    if reason is None:
      provenance = {"teacher": teacher.name, "attempt": attempt,
                    "judge_score": score, "model": teacher.model}
      return ({"id": example.id, "kept": True, "rejects": rejects},
              sft_row(example, completion, provenance))
    rejects.append(reason)
  return {"id": example.id, "kept": False, "rejects": rejects,
          "completion": completion}, None


def read_lines(path: pathlib.Path) -> list[dict]:
  """The records of an append-only JSONL file, after dropping (and cutting
  off the file) a last line a kill left without its newline: the next
  append then starts on a line of its own. A bad complete line is not a
  torn write: DistillError."""
  if not path.exists():
    return []
  data = path.read_bytes()
  whole = data[:data.rfind(b"\n") + 1]
  if len(whole) < len(data):
    with path.open("r+b") as f:
      f.truncate(len(whole))
  records = []
  for number, line in enumerate(whole.splitlines(), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise DistillError(f"{path}:{number}: not a record this command wrote "
                         f"({e}); move the file away to start over") from None
    records.append(record)
  return records


class Appender:
  """Appends JSON lines to a file, each on disk before append returns."""

  def __init__(self, path: pathlib.Path):
    self._f = path.open("a", encoding="utf-8")

  def append(self, record: dict) -> None:
    self._f.write(json.dumps(record) + "\n")
    self._f.flush()
    os.fsync(self._f.fileno())

  def close(self) -> None:
    self._f.close()


def finished(out: pathlib.Path, progress: pathlib.Path
             ) -> tuple[dict[str, dict], list[dict]]:
  """(the progress record of every row already done, by id; those of them
  missing from `progress`). A kept row is written to `out` before its
  progress line, so a kill between the two leaves a row only in `out`: it
  counts as kept, and its record is made again."""
  done = {r["id"]: r for r in read_lines(progress)}
  # Its earlier attempts' reasons went with the lost line: None each.
  unlogged = [{"id": row["id"], "kept": True,
               "rejects": [None] * row["provenance"]["attempt"]}
              for row in read_lines(out) if row["id"] not in done]
  return done | {r["id"]: r for r in unlogged}, unlogged


def summarise(records, total: int, traces: int, elapsed_s: float,
              retries: int) -> dict:
  """Counts over every finished row (earlier runs' too); rates over this
  run's teacher completions (`traces`) and time."""
  kept = sum(r["kept"] for r in records)
  rejected = collections.Counter(r["rejects"][-1] for r in records
                                 if not r["kept"])
  attempt_rejects = collections.Counter(
      reason for r in records for reason in r["rejects"] if reason)
  return {"rows": total, "done": len(records), "kept": kept,
          "rejected": sum(rejected.values()),
          "rejected_by_reason": dict(sorted(rejected.items())),
          "attempt_rejects_by_reason": dict(sorted(attempt_rejects.items())),
          "acceptance_rate": kept / len(records) if records else 0.0,
          "traces": traces, "elapsed_s": round(elapsed_s, 3),
          "traces_per_s": traces / elapsed_s if elapsed_s > 0 else 0.0,
          "teacher_retries": retries}


def summary_text(summary: dict) -> str:
  reasons = ", ".join(f"{k} {v}" for k, v in
                      summary["rejected_by_reason"].items()) or "none"
  return (f"{summary['done']}/{summary['rows']} rows done: "
          f"{summary['kept']} kept ({summary['acceptance_rate']:.0%}), "
          f"{summary['rejected']} rejected ({reasons}); this run "
          f"{summary['traces']} traces in {summary['elapsed_s']:.1f}s "
          f"({summary['traces_per_s']:.2f}/s)")


class _Progress:
  """A line on stderr at most every PROGRESS_EVERY_S: done/total, kept,
  rows per second this run."""

  def __init__(self, total: int, done: int, kept: int):
    self.total, self.done, self.kept = total, done, kept
    self._started = self._shown = time.monotonic()
    self._at_start = done

  def row(self, kept: bool) -> None:
    self.done += 1
    self.kept += kept
    now = time.monotonic()
    if now - self._shown >= PROGRESS_EVERY_S or self.done == self.total:
      self._shown = now
      rate = (self.done - self._at_start) / max(now - self._started, 1e-9)
      print(f"grar distill: {self.done}/{self.total} done, {self.kept} kept, "
            f"{rate:.2f} rows/s", file=sys.stderr, flush=True)


def _examples(cfg: DistillConfig) -> list[dataset_lib.Example]:
  return dataset_lib.load_jsonl(cfg.data,
                                judge_server_lib.load_packs(cfg.rubric_dir))


async def _run(cfg: DistillConfig, todo, sinks, progress: _Progress,
               judge: JudgeFilter | None) -> tuple[int, int]:
  """Distills `todo` with cfg.concurrency rows in flight; (teacher
  completions, teacher retries)."""
  out, log = sinks
  teachers = {name: TEACHERS[t.kind](name, t, cfg.resilience)
              for name, t in cfg.teachers.items()}
  rows = iter(todo)
  traces = 0

  async def worker():
    nonlocal traces
    for example in rows:
      teacher = teachers[route(cfg.router, cfg.teachers, example)]
      record, row = await distill_row(example, teacher, cfg.attempts,
                                      cfg.seed, judge, cfg.prompt.scaffold)
      traces += len(record["rejects"]) + record["kept"]
      if row is not None:
        out.append(row)
      log.append(record)
      progress.row(record["kept"])

  try:
    async with asyncio.TaskGroup() as group:
      for _ in range(min(cfg.concurrency, len(todo))):
        group.create_task(worker())
  except* DistillError as errors:
    raise errors.exceptions[0] from None
  finally:
    for teacher in teachers.values():
      await teacher.close()
  return traces, sum(t.retries for t in teachers.values())


def run(cfg: DistillConfig) -> dict:
  """The `grar distill` command: distills the rows not yet done (at most
  cfg.limit), writes the summary beside the output and returns it."""
  examples = _examples(cfg)
  out = pathlib.Path(cfg.out)
  progress_path = out.with_name(out.name + PROGRESS_SUFFIX)
  out.parent.mkdir(parents=True, exist_ok=True)
  done, unlogged = finished(out, progress_path)
  todo = [ex for ex in examples if ex.id not in done]
  todo = todo[:cfg.limit] if cfg.limit else todo
  judge = JudgeFilter(cfg.judge) if cfg.judge.target and todo else None
  progress = _Progress(len(done) + len(todo), len(done),
                       sum(r["kept"] for r in done.values()))
  sinks = (Appender(out), Appender(progress_path))
  for record in unlogged:
    sinks[1].append(record)
  started = time.monotonic()
  try:
    traces, retries = asyncio.run(_run(cfg, todo, sinks, progress, judge))
  finally:
    for sink in sinks:
      sink.close()
    if judge is not None:
      judge.close()
  records = list(finished(out, progress_path)[0].values())
  summary = summarise(records, len(examples), traces,
                      time.monotonic() - started, retries)
  from policy_worker.prepare import json_writer, write_atomically
  write_atomically(out.with_name(out.name + SUMMARY_SUFFIX),
                   json_writer(summary))
  return summary
