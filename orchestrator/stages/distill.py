"""`grar distill`: SFT rows written by teacher models.

Each dataset row (orchestrator/data/dataset.py) is routed to one teacher, an
OpenAI-compatible endpoint (vLLM, llama.cpp, hosted APIs) or Gemini, reached
through the remote models' client (judge_server/remote_models.py) and asked
with the project's own reasoning prompt (templates.render) so it answers in
the trained shape. A completion is kept when it passes the
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

import abc
import asyncio
import collections
import dataclasses
import json
import os
import pathlib
import sys
import time
from collections.abc import Collection
from typing import Literal

from grar_config import strict
from grar_config.strict import ConfigError
from judge_server import remote_models
from judge_server import server as judge_server_lib
from judge_server.backends import base as judge_base
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
  APIs), or Gemini on the Gemini API with a key or on Vertex AI with the
  machine's credentials (gemini.vertex: {project, location}). `openai` and
  `gemini` are the judge backends' endpoint configs: base_url, model,
  api_key_env, vertex, max_concurrency (the teacher's requests in flight),
  timeout_s (each try) and openai's mode apply; top_logprobs and
  max_calls_in_flight are the judge's, unused here."""
  kind: Literal["openai", "gemini"] = "openai"
  openai: OpenAIConfig = OpenAIConfig()
  gemini: GeminiConfig = GeminiConfig()
  # Put before the reasoning prompt, e.g. "You are a careful math tutor."
  instruction: str = ""
  max_tokens: int = 512
  temperature: float = 0.7
  rate_limit: float = 0.0  # request starts per second; 0: no limit

  def __post_init__(self):
    # gemini's base_url "" is the API's own; openai's is wherever it is
    # served.
    required = ("base_url", "model") if self.kind == "openai" else ("model",)
    for name in required:
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
  # Every teacher request, retried by its SDK. Used: max_retries (transient
  # failures: connection errors, timeouts, HTTP 408, 429 and 5xx), deadline_s
  # (a request's tries and waits) and, for gemini teachers, the backoff;
  # the openai SDK waits its own (0.5 s doubling up to 8 s, or the
  # Retry-After asked for, up to a minute). The breaker is the judge's.
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


def closed(text: str, finish_reason: str | None) -> str:
  """The completion with the closing answer tag the request's stop string
  removed: a teacher that stopped on its own (not at the token limit) inside
  an answer block had just written </answer> or was about to."""
  if (finish_reason == "stop" and text.rfind(templates.ANSWER_START)
      > text.rfind(templates.ANSWER_END)):
    return text + templates.ANSWER_END
  return text


class Teacher(abc.ABC):
  """One endpoint that writes completions through `remote`, a remote
  models' client (judge_server.remote_models): at most its max_concurrency
  requests in flight, started no faster than rate_limit, each try bounded
  by its timeout_s, transient failures retried by the SDK."""

  def __init__(self, name: str, cfg: TeacherConfig,
               remote: remote_models.RemoteModel):
    self.name = name
    self.model = getattr(cfg, cfg.kind).model
    self._cfg = cfg
    self._remote = remote

  @property
  def retries(self) -> int:
    """The SDK's retries of this teacher's requests so far."""
    return self._remote.tries - self._remote.calls

  def text(self, prompt: str) -> str:
    """What the teacher is sent: the instruction, if any, then `prompt`."""
    instruction = self._cfg.instruction.strip()
    return f"{instruction}\n\n{prompt}" if instruction else prompt

  @abc.abstractmethod
  async def _ask(self, prompt: str, seed: int) -> str | judge_base.Judgement:
    """The completion, or the failure as a judge Judgement."""

  async def generate(self, prompt: str, seed: int) -> str:
    """One completion; DistillError for a request the teacher refuses or
    one still failing after every retry."""
    got = await self._ask(self.text(prompt), seed)
    if not isinstance(got, judge_base.Judgement):
      return got
    why = got.reason.removeprefix(judge_base.INFRASTRUCTURE)
    raise DistillError(f"teacher {self.name}: {why}"
                       + ("; rerun to resume" if got.transient else ""))

  async def close(self) -> None:
    await self._remote.close()


class OpenAITeacher(Teacher):
  """An OpenAI-compatible endpoint: the prompt as raw text (completions)
  or, in chat mode, as the user's message."""

  def __init__(self, name: str, cfg: TeacherConfig,
               resilience: ResilienceConfig):
    super().__init__(name, cfg, remote_models.OpenAIModel(
        cfg.openai, f"teachers.{name}.openai",
        retries=resilience.max_retries, rate_per_s=cfg.rate_limit,
        deadline_s=resilience.deadline_s))

  def _read(self, choice) -> str:
    return closed(self._remote.text(choice), choice.finish_reason)

  async def _ask(self, prompt, seed):
    cfg = self._cfg
    # Nothing after the answer counts, and the strict format refuses any
    # text there: stop paying for it.
    return await self._remote.complete(
        prompt, self._read, max_tokens=cfg.max_tokens,
        temperature=cfg.temperature, seed=seed, stop=[templates.ANSWER_END])


class GeminiTeacher(Teacher):
  """Gemini: the Gemini API with a key, or Vertex AI with the machine's
  credentials (gemini.vertex)."""

  def __init__(self, name: str, cfg: TeacherConfig,
               resilience: ResilienceConfig):
    super().__init__(name, cfg, remote_models.GeminiModel(
        cfg.gemini, f"teachers.{name}.gemini",
        retries=resilience.max_retries,
        backoff_s=(resilience.backoff_initial_s, resilience.backoff_max_s),
        rate_per_s=cfg.rate_limit, deadline_s=resilience.deadline_s))

  @staticmethod
  def _read(response) -> str:
    candidate = response.candidates[0]
    # Gemini's STOP is OpenAI's "stop": a stop sequence or the model's end.
    return closed(remote_models.candidate_text(candidate),
                  "stop" if candidate.finish_reason == "STOP"
                  else candidate.finish_reason)

  async def _ask(self, prompt, seed):
    cfg = self._cfg
    return await self._remote.generate(
        prompt, self._read, max_output_tokens=cfg.max_tokens,
        temperature=cfg.temperature, seed=seed,
        stop_sequences=[templates.ANSWER_END])


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
