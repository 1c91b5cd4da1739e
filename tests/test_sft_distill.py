"""`grar distill`: the router, the filters and the config on their own; whole
runs against a stand-in teacher on loopback (an HTTP server that answers
completions the test wrote, to pin the counts, the retries and the 4xx
error), and against a real vLLM server of the shipped Gemma-3-270M as the
teacher, with a kill-free resume (a row limit, then the rest) and the
optional judge filter on a real judge server in front of the same vLLM."""

import asyncio
import contextlib
import http.server
import json
import pathlib
import signal
import sys
import threading
import time

import pytest

from grar_config.strict import ConfigError
from orchestrator import cli
from orchestrator.data import dataset as dataset_lib
from orchestrator.data import tasks
from orchestrator.data.sft_rows import load_sft, target
from orchestrator.stages import distill
import processes

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "reasoning-sample.jsonl"


def _example(**fields) -> dataset_lib.Example:
  row = {"id": "r", "domain": "math", "prompt": "What is 47 + 38?",
         "answer": "85", "rubric": None, "rubric_id": "general-reasoning"}
  return dataset_lib.Example(**(row | fields))


def _rows(n: int, tmp_path) -> pathlib.Path:
  path = tmp_path / "rows.jsonl"
  path.write_text("".join(SAMPLE.read_text().splitlines(True)[:n]))
  return path


def _config(tmp_path, data, base_url, model="stand-in", **fields):
  teacher = {"openai": {"base_url": base_url, "model": model}}
  teacher |= fields.pop("teacher", {})
  return distill.load(None, [
      f"data={data}", f"out={tmp_path / 'out' / 'sft.jsonl'}",
      f"teachers.t={json.dumps(teacher)}",
      *(f"{k}={json.dumps(v)}" for k, v in fields.items())])


def _progress(cfg) -> list[dict]:
  path = pathlib.Path(cfg.out + distill.PROGRESS_SUFFIX)
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_router_routes_by_a_row_field_with_a_default():
  router = distill.RouterConfig(by="domain", routes={"math": "big"},
                                default="small")
  teachers = {"big": None, "small": None}
  assert distill.route(router, teachers, _example(domain="math")) == "big"
  assert distill.route(router, teachers, _example(domain="science")) == (
      "small")
  by_level = distill.RouterConfig(by="metadata.level", routes={"hard": "big"},
                                  default="small")
  assert distill.route(by_level, teachers, _example(
      task="chain_sum", metadata={"level": "hard"})) == "big"
  # No metadata, or a value that is not text: the default.
  assert distill.route(by_level, teachers, _example()) == "small"
  assert distill.route(by_level, teachers, _example(
      task="chain_sum", metadata={"level": 3})) == "small"


def test_one_teacher_needs_no_default():
  assert distill.route(distill.RouterConfig(), {"only": None},
                       _example()) == "only"


GOOD = "<reasoning>40 + 30 = 70, 7 + 8 = 15, 70 + 15 = 85</reasoning>\n" \
       "<answer>85</answer>"


@pytest.mark.parametrize("completion, reason", [
    (GOOD, None),
    ("  " + GOOD + "\n", None),
    ("<reasoning>7 + 8 = 15</reasoning><answer>75</answer>", "answer"),
    ("<answer>85</answer>", "format"),  # no reasoning
    (GOOD + " so 85.", "format"),  # text after the answer
    ("<reasoning>7 + 8 = 15</reasoning><answer>85", "format"),  # cut off
    ("<reasoning> </reasoning><answer>85</answer>", "format"),  # blank
    ("The answer is 85.", "format"),
])
def test_the_rule_filters(completion, reason):
  assert distill.reject_reason(completion, _example()) == reason


def test_a_generated_row_is_graded_by_its_task_verifier():
  row = tasks.generate("chain_sum", 1, seed=0)[0]
  example = _example(prompt=row["prompt"], answer=row["answer"],
                     task="chain_sum", metadata=row["metadata"])
  right = f"<reasoning>adding up</reasoning><answer>{row['answer']}</answer>"
  wrong = f"<reasoning>adding up</reasoning><answer>{row['answer']}1</answer>"
  assert distill.reject_reason(right, example) is None
  assert distill.reject_reason(wrong, example) == "answer"


def test_a_kept_completion_becomes_an_sft_row_that_loads(tmp_path):
  row = distill.sft_row(_example(), GOOD, {"teacher": "t", "attempt": 0,
                                           "judge_score": None, "model": "m"})
  assert row["reasoning"].startswith("40 + 30") and row["answer"] == "85"
  path = tmp_path / "sft.jsonl"
  path.write_text(json.dumps(row) + "\n")
  (loaded,) = load_sft(path)
  assert (loaded.prompt, loaded.answer) == ("What is 47 + 38?", "85")


def test_provenance_must_be_an_object(tmp_path):
  path = tmp_path / "sft.jsonl"
  path.write_text(json.dumps({"prompt": "q", "reasoning": "r", "answer": "a",
                              "provenance": "t"}) + "\n")
  with pytest.raises(dataset_lib.DatasetError,
                     match="provenance: must be an object, got str"):
    load_sft(path)


@pytest.mark.parametrize("finish, closed", [("stop", True), ("length", False)])
def test_the_stop_string_is_given_back_only_to_a_finished_answer(finish,
                                                                 closed):
  text = "<reasoning>r</reasoning><answer>85"
  assert (distill.closed(text, finish) == text + "</answer>") == closed
  assert distill.closed(GOOD, finish) == GOOD


@pytest.mark.parametrize("sets, message", [
    ([], "data: missing"),
    (["data=d", "out=o"], "teachers: name at least one"),
    (["data=d", "out=o", "teachers.a.openai.base_url=http://h/v1"],
     "teachers.a.openai.model: missing"),
    (["data=d", "out=o", 'teachers.a={"openai": {"base_url": "http://h/v1", '
      '"model": "m"}}', 'teachers.b={"openai": {"base_url": "http://h/v1", '
      '"model": "m"}}'],
     "router.default: missing; name the teacher of rows no route matches "
     "(teachers: a, b)"),
    (["data=d", "out=o", 'teachers.a={"openai": {"base_url": "http://h/v1", '
      '"model": "m"}}', "router.by=task", "router.routes.gcd=big"],
     "router.routes.gcd: unknown teacher 'big' (teachers: a)"),
    (["data=d", "out=o", 'teachers.a={"openai": {"base_url": "http://h/v1", '
      '"model": "m"}}', "router.default=b"],
     "router.default: unknown teacher 'b' (teachers: a)"),
    (["router.by=kind"],
     "router.by: 'kind' is not one of '', task, domain, metadata.KEY"),
    (["router.routes.x=a"], "router.routes: need `by`, the row field they "
     "match"),
    (["data=d", "out=o", 'teachers.g={"kind": "gemini"}'],
     "teachers.g.gemini.model: missing"),
    (["attempts=0"], "attempts: must be >= 1"),
    (["judge.threshold=2.0"], "judge.threshold: must be in [0, 1]"),
])
def test_a_bad_config_is_one_line(sets, message):
  with pytest.raises(ConfigError) as e:
    distill.load(None, sets)
  assert str(e.value) == message


def test_the_cli_says_a_config_error_in_one_line(tmp_path, capsys):
  path = tmp_path / "d.yaml"
  path.write_text("data: d\nout: o\nteachers:\n  a: {openai: {base_url: "
                  "'http://h/v1', model: m}}\nrouter: {default: nobody}\n")
  assert cli.main(["distill", "--config", str(path)]) == 2
  assert capsys.readouterr().err == (
      "grar: error: router.default: unknown teacher 'nobody' (teachers: a)\n")


def test_a_torn_last_line_is_dropped_and_cut_off(tmp_path):
  path = tmp_path / "p.jsonl"
  path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "ke')
  assert [r["id"] for r in distill.read_lines(path)] == ["a", "b"]
  sink = distill.Appender(path)
  sink.append({"id": "c"})
  sink.close()
  assert [r["id"] for r in distill.read_lines(path)] == ["a", "b", "c"]


def test_a_bad_complete_line_is_an_error_not_a_torn_one(tmp_path):
  path = tmp_path / "p.jsonl"
  path.write_bytes(b'{"id": "a"}\nnot json\n{"id": "c"}\n')
  with pytest.raises(distill.DistillError, match=r"p.jsonl:2: not a record"):
    distill.read_lines(path)


# ------------------------------------------------------------ a stand-in


@contextlib.contextmanager
def _stand_in(answer):
  """A teacher on loopback: POST /v1/completions answered by
  answer(body) -> (status, JSON object); `bodies` records what was asked,
  where and when (time.monotonic())."""
  bodies = []

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
      body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
      bodies.append(body | {"path": self.path, "arrived": time.monotonic()})
      status, data = answer(body)
      raw = json.dumps(data).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(raw)))
      self.end_headers()
      self.wfile.write(raw)

    def log_message(self, *args):
      pass

  class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
      # A run that stops on a 4xx hangs up on the rows still in flight;
      # socketserver would print that to the stderr the tests read.
      if not isinstance(sys.exc_info()[1], ConnectionError):
        super().handle_error(request, client_address)

  server = Server(("127.0.0.1", 0), Handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_port}/v1", bodies
  finally:
    server.shutdown()
    server.server_close()


def _scripted(examples, fail_first=0):
  """A teacher that is wrong at seed 0 and right at seed 1, except on the
  last row, where it never closes its reasoning; the first `fail_first`
  requests get a 503. It answers in the shape it was asked in: OpenAI
  completions or chat, or Gemini."""
  by_question = {ex.prompt.strip(): ex.answer for ex in examples}
  failures = [fail_first]
  last = examples[-1].prompt.strip()

  def answer(body):
    if failures[0]:
      failures[0] -= 1
      return 503, {"error": "warming up"}
    if "contents" in body:
      prompt = body["contents"][0]["parts"][0]["text"]
      seed = body["generationConfig"]["seed"]
    else:
      prompt = body.get("prompt") or body["messages"][0]["content"]
      seed = body["seed"]
    question = prompt.split("Question: ", 1)[1].strip()
    if question == last:
      text = "<reasoning>hmm"
    elif seed == 0:
      text = "<reasoning>a guess</reasoning><answer>nope"
    else:
      text = f"<reasoning>worked</reasoning><answer>{by_question[question]}"
    # As vLLM and Gemini do: the stop string is not part of the text.
    if "contents" in body:
      return 200, {"candidates": [{"content": {"parts": [{"text": text}]},
                                   "finishReason": "STOP"}]}
    if "messages" in body:
      return 200, {"choices": [{"message": {"content": text},
                                "finish_reason": "stop"}]}
    return 200, {"choices": [{"text": text, "finish_reason": "stop"}]}
  return answer


def _load(path) -> list[dataset_lib.Example]:
  from judge_server import server as judge_server_lib
  return dataset_lib.load_jsonl(path, judge_server_lib.load_packs(""))


def test_a_run_keeps_the_first_passing_attempt_and_counts_the_rest(tmp_path):
  data = _rows(4, tmp_path)
  examples = _load(data)
  with _stand_in(_scripted(examples, fail_first=2)) as (url, bodies):
    cfg = _config(tmp_path, data, url, attempts=3, concurrency=2,
                  resilience={"backoff_initial_s": 0.01,
                              "backoff_max_s": 0.02},
                  teacher={"instruction": "Be careful.", "max_tokens": 64})
    summary = distill.run(cfg)
  assert summary | {"elapsed_s": 0, "traces_per_s": 0} == {
      "rows": 4, "done": 4, "kept": 3, "rejected": 1,
      "rejected_by_reason": {"format": 1},
      "attempt_rejects_by_reason": {"answer": 3, "format": 3},
      "acceptance_rate": 0.75, "traces": 9, "elapsed_s": 0,
      "traces_per_s": 0, "teacher_retries": 2}
  assert json.loads(pathlib.Path(cfg.out + distill.SUMMARY_SUFFIX)
                    .read_text()) == summary
  rows = load_sft(cfg.out)
  assert sorted(r.answer for r in rows) == sorted(
      ex.answer for ex in examples[:3])
  (rejected,) = [r for r in _progress(cfg) if not r["kept"]]
  assert (rejected["id"], rejected["completion"]) == (examples[-1].id,
                                                      "<reasoning>hmm")
  for line in pathlib.Path(cfg.out).read_text().splitlines():
    assert json.loads(line)["provenance"] == {
        "teacher": "t", "attempt": 1, "judge_score": None,
        "model": "stand-in"}
  body = bodies[-1]
  assert body["path"] == "/v1/completions"
  assert body["prompt"].startswith("Be careful.\n\nThink step by step")
  assert (body["max_tokens"], body["stop"]) == (64, ["</answer>"])
  assert len(bodies) == 9 + 2


def test_a_scaffolded_run_asks_for_the_steps_and_keeps_only_them(tmp_path):
  """With prompt.scaffold the teacher is asked for the steps, a completion
  without them is a format reject, and the kept rows train in the scaffold
  (sft_rows.target accepts them)."""
  steps = ("Plan", "Work", "Check")
  data = _rows(2, tmp_path)
  examples = _load(data)
  answers = {ex.prompt.strip(): ex.answer for ex in examples}

  def answer(body):
    question = body["prompt"].split("Question: ", 1)[1].strip()
    # The first row free reasoning, the second the steps.
    reasoning = ("just add" if question == examples[0].prompt.strip() else
                 "Plan: add.\nWork: the sum.\nCheck: done.")
    return 200, {"choices": [{"text": f"<reasoning>{reasoning}</reasoning>"
                              f"<answer>{answers[question]}",
                              "finish_reason": "stop"}]}
  with _stand_in(answer) as (url, bodies):
    cfg = _config(tmp_path, data, url, attempts=1,
                  prompt={"scaffold": list(steps)})
    summary = distill.run(cfg)
  assert "in this order: Plan:, Work:, Check:" in bodies[0]["prompt"]
  assert (summary["kept"], summary["rejected_by_reason"]) == (1, {"format": 1})
  (row,) = load_sft(cfg.out)
  assert target(row, steps).startswith("<reasoning>Plan: add.")


@pytest.mark.parametrize("teacher, path", [
    ({"openai": {"mode": "chat"}}, "/v1/chat/completions"),
    ({"kind": "gemini", "gemini": {"api_key_env": "GRAR_TEST_GEMINI_KEY"}},
     "/v1beta/models/stand-in:generateContent"),
])
def test_chat_and_gemini_teachers(tmp_path, monkeypatch, teacher, path):
  """The Gemini API cannot be reached from here: the stand-in speaks its
  REST shape."""
  monkeypatch.setenv("GRAR_TEST_GEMINI_KEY", "k")
  data = _rows(3, tmp_path)
  with _stand_in(_scripted(_load(data))) as (url, bodies):
    endpoint = {"base_url": url.removesuffix("/v1")
                if "gemini" in teacher else url, "model": "stand-in"}
    kind = teacher.get("kind", "openai")
    cfg = distill.load(None, [
        f"data={data}", f"out={tmp_path / 'sft.jsonl'}",
        "teachers.t=" + json.dumps(teacher | {
            kind: endpoint | teacher[kind]})])
    summary = distill.run(cfg)
  assert (summary["kept"], summary["rejected"]) == (2, 1)
  assert {b["path"] for b in bodies} == {path}
  assert len(load_sft(cfg.out)) == 2


def test_a_gemini_teacher_without_its_key_is_one_line(tmp_path, monkeypatch):
  monkeypatch.delenv("GEMINI_API_KEY", raising=False)
  cfg = distill.load(None, [f"data={_rows(1, tmp_path)}",
                            f"out={tmp_path / 'sft.jsonl'}",
                            'teachers.g={"kind": "gemini", "gemini": '
                            '{"model": "gemini-2.5-flash"}}'])
  with pytest.raises(ConfigError, match=r"^teachers.g.gemini.api_key_env: "
                     "the environment variable GEMINI_API_KEY is not set$"):
    distill.run(cfg)


@pytest.mark.parametrize("rate_limit", [20.0, 0.0])
def test_the_rate_limit_spaces_request_starts(tmp_path, rate_limit):
  """rate_limit request starts a second at most, however many rows are in
  flight; 0 does not limit them."""
  data = _rows(5, tmp_path)
  with _stand_in(_scripted(_load(data))) as (url, bodies):
    cfg = _config(tmp_path, data, url, attempts=1, concurrency=5,
                  teacher={"rate_limit": rate_limit})
    distill.run(cfg)
  arrived = sorted(b["arrived"] for b in bodies)
  assert len(arrived) == 5
  if rate_limit:
    assert arrived[-1] - arrived[0] >= 4 / rate_limit - 0.01
  else:
    assert arrived[-1] - arrived[0] < 4 / 20


def test_a_4xx_stops_the_run_in_one_line(tmp_path, capsys):
  data = _rows(2, tmp_path)
  with _stand_in(lambda body: (400, {"error": "no such model"})) as (url, _):
    cfg = _config(tmp_path, data, url)
    path = tmp_path / "d.yaml"
    path.write_text(json.dumps(
        {"data": cfg.data, "out": cfg.out,
         "teachers": {"t": {"openai": {"base_url": url, "model": "m"}}}}))
    assert cli.main(["distill", "--config", str(path)]) == 1
  err = capsys.readouterr().err
  assert err.startswith(f"grar: error: teacher t: HTTP 400 from {url}"
                        "/completions: ") and err.count("\n") == 1


def test_an_unreachable_teacher_stops_the_run_after_its_retries(tmp_path):
  data = _rows(2, tmp_path)
  url = f"http://127.0.0.1:{processes.free_port()}/v1"
  cfg = _config(tmp_path, data, url, resilience={
      "max_retries": 2, "backoff_initial_s": 0.01, "backoff_max_s": 0.02})
  with pytest.raises(distill.DistillError,
                     match=rf"^teacher t: ConnectError from {url}/completions:"
                     r".* \(gave up after 3 tries\); rerun to resume$"):
    distill.run(cfg)


def test_a_rerun_resumes_without_duplicates_after_a_torn_write(tmp_path):
  data = _rows(6, tmp_path)
  examples = _load(data)
  with _stand_in(_scripted(examples)) as (url, _):
    cfg = _config(tmp_path, data, url, limit=3)
    assert distill.run(cfg)["done"] == 3
    # A kill mid-append: half a line at the end of each file.
    for path in (cfg.out, cfg.out + distill.PROGRESS_SUFFIX):
      with open(path, "a") as f:
        f.write('{"id": "math-00')
    summary = distill.run(_config(tmp_path, data, url))
  assert (summary["done"], summary["kept"], summary["traces"]) == (6, 5, 6)
  ids = [r["id"] for r in _progress(cfg)]
  assert sorted(ids) == sorted(ex.id for ex in examples)
  out_ids = [json.loads(line)["id"]
             for line in pathlib.Path(cfg.out).read_text().splitlines()]
  assert len(out_ids) == len(set(out_ids)) == 5
  assert len(load_sft(cfg.out)) == 5


def test_a_killed_run_resumes_without_duplicates(tmp_path):
  """`grar distill` killed (SIGKILL) partway, then run again."""
  data = _rows(12, tmp_path)
  examples = _load(data)
  scripted = _scripted(examples)

  def slow(body):
    time.sleep(0.2)
    return scripted(body)

  with _stand_in(slow) as (url, _):
    cfg = _config(tmp_path, data, url, concurrency=2)
    path = tmp_path / "d.yaml"
    path.write_text(json.dumps(
        {"data": cfg.data, "out": cfg.out, "concurrency": 2,
         "teachers": {"t": {"openai": {"base_url": url, "model": "m"}}}}))
    progress = pathlib.Path(cfg.out + distill.PROGRESS_SUFFIX)
    proc = processes.start_grar("distill", "--config", str(path))
    try:
      deadline = time.monotonic() + 120
      while not (progress.exists()
                 and progress.read_text().count("\n") >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, (
            proc.stderr.read() if proc.poll() is not None else "too slow")
        time.sleep(0.05)
      proc.send_signal(signal.SIGKILL)
    finally:
      processes.stop(proc)
    before = len(distill.finished(pathlib.Path(cfg.out), progress)[0])
    assert before < len(examples)
    summary = distill.run(cfg)
  assert (summary["done"], summary["kept"]) == (12, 11)
  assert summary["traces"] == 2 * (len(examples) - before)
  ids = [r["id"] for r in _progress(cfg)]
  assert sorted(ids) == sorted(ex.id for ex in examples)
  assert len(load_sft(cfg.out)) == 11


def test_the_cli_prints_the_summary(tmp_path, capsys):
  data = _rows(2, tmp_path)
  with _stand_in(_scripted(_load(data))) as (url, _):
    cfg = _config(tmp_path, data, url)
    path = tmp_path / "d.yaml"
    path.write_text(json.dumps(
        {"data": cfg.data, "out": cfg.out,
         "teachers": {"t": {"openai": {"base_url": url, "model": "m"}}}}))
    assert cli.main(["distill", "--config", str(path), "--set",
                     "attempts=1"]) == 0
  out, err = capsys.readouterr()
  assert out.startswith("2/2 rows done: 0 kept (0%), 2 rejected (answer 1, "
                        "format 1); this run 2 traces in ")
  assert out.endswith(f"SFT rows: {cfg.out}\n")
  assert "grar distill: 2/2 done, 0 kept" in err


def test_a_row_kept_but_not_logged_counts_as_done(tmp_path):
  """A kill between a kept row's output line and its progress line."""
  data = _rows(2, tmp_path)
  examples = _load(data)
  with _stand_in(_scripted(examples)) as (url, _):
    cfg = _config(tmp_path, data, url)
    distill.run(cfg)
    progress = pathlib.Path(cfg.out + distill.PROGRESS_SUFFIX)
    lines = progress.read_text().splitlines(True)
    progress.write_text("".join(line for line in lines
                                if json.loads(line)["kept"] is False))
    summary = distill.run(cfg)
  assert (summary["done"], summary["kept"], summary["traces"]) == (2, 1, 0)
  # Its progress line is written again.
  assert sorted(r["id"] for r in _progress(cfg)) == [ex.id for ex in examples]


VLLM_TEACHER = {"max_tokens": 96, "temperature": 0.8}


def _accounting(summary: dict, cfg) -> None:
  """The counts add up, over the summary, the progress file and the rows."""
  progress = _progress(cfg)
  assert summary["done"] == len(progress) == len({r["id"] for r in progress})
  assert summary["kept"] + summary["rejected"] == summary["done"]
  assert sum(summary["rejected_by_reason"].values()) == summary["rejected"]
  kept = [r for r in progress if r["kept"]]
  assert summary["kept"] == len(kept)
  out = pathlib.Path(cfg.out).read_text()
  assert len(out.splitlines()) == summary["kept"]
  if summary["kept"]:
    assert {r.prompt for r in load_sft(cfg.out)} <= {
        ex.prompt for ex in _load(cfg.data)}
  for r in progress:
    assert 1 <= len(r["rejects"]) + r["kept"] <= cfg.attempts


@pytest.mark.vllm
@pytest.mark.slow
def test_distill_from_vllm_then_resume(vllm, tmp_path):
  data = _rows(4, tmp_path)
  first = distill.run(_config(tmp_path, data, vllm.base_url, vllm.model,
                              teacher=VLLM_TEACHER, attempts=2, limit=2))
  assert (first["done"], first["rows"]) == (2, 4)
  cfg = _config(tmp_path, data, vllm.base_url, vllm.model,
                teacher=VLLM_TEACHER, attempts=2)
  summary = distill.run(cfg)
  assert summary["done"] == 4 and summary["teacher_retries"] == 0
  assert summary["traces"] >= 2  # this run's rows only
  _accounting(summary, cfg)
  for line in pathlib.Path(cfg.out).read_text().splitlines():
    provenance = json.loads(line)["provenance"]
    assert provenance["model"] == vllm.model and provenance["teacher"] == "t"


@pytest.mark.vllm
@pytest.mark.slow
def test_the_judge_filter_on_a_real_judge(vllm, tmp_path):
  """A real judge server in front of the same vLLM: a run with the judge
  on, then a hand-written completion scored through the filter, then the
  judge gone. The 270M seldom passes the rule filters, so the run may never
  reach the judge: its counts must add up either way."""
  proc = processes.start_judge(
      {"backend": {"kind": "openai", "max_batch": 4, "openai": {
          "base_url": vllm.base_url, "model": vllm.model}}}, tmp_path)
  try:
    address = processes.judge_address(proc)
    cfg = _config(tmp_path, _rows(3, tmp_path), vllm.base_url, vllm.model,
                  teacher=VLLM_TEACHER, attempts=2,
                  judge={"target": address, "threshold": 0.0})
    summary = distill.run(cfg)
    judge = distill.JudgeFilter(distill.JudgeFilterConfig(
        target=address, threshold=0.5))
    # Gives up on a judge that is gone within 2 s rather than 120.
    impatient = distill.JudgeFilter(distill.JudgeFilterConfig(
        target=address, timeout_s=2))
    (example,) = _load(_rows(1, tmp_path))
    score = asyncio.run(judge.score(example, GOOD, "hand/0"))
    judge.close()
  finally:
    processes.stop(proc)
  _accounting(summary, cfg)
  # threshold 0: every scored completion that passed the rules is kept.
  assert "judge" not in summary["attempt_rejects_by_reason"]
  for line in pathlib.Path(cfg.out).read_text().splitlines():
    assert 0.0 <= json.loads(line)["provenance"]["judge_score"] <= 1.0
  assert 0.0 <= score <= 1.0
  assert judge.verdict(score) == (None if score >= 0.5 else "judge")
  assert judge.verdict(None) == "judge_unscorable"
  # Down, the judge stops the run rather than rejecting the row.
  with pytest.raises(distill.DistillError, match=rf"^judge.target {address}: "
                     r"judge unavailable: .*; rerun to resume$"):
    asyncio.run(impatient.score(example, GOOD, "hand/1"))
  impatient.close()


def test_a_judge_that_is_not_there_is_one_line(tmp_path):
  target = f"127.0.0.1:{processes.free_port()}"
  with pytest.raises(distill.DistillError,
                     match=rf"^judge.target: judge at {target} not serving "
                     r"after 0.5s \(UNAVAILABLE\)$"):
    distill.JudgeFilter(distill.JudgeFilterConfig(target=target,
                                                  timeout_s=0.5))
