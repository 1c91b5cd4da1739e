"""`grar judge validate`, and the judge check the trainer and `grar eval`
run before they trust a judge.

Probes (judge_server.probes) are built from dataset rows with a reference
answer and scored through the judge service like any rollout, so the check
measures whatever judge, prompt format and backend is behind the address.
Users can bring their own probes instead: JSON Lines rows
  {"prompt", "reference"?, "completion", "label": 0 | 1, RUBRIC?}
or
  {"prompt", "reference"?, "better", "worse", RUBRIC?}
or, as the shipped probe sets (judge_server/probe_sets, the held-out one
being the default), problems with three completions, reported per domain:
  {"prompt", "reference"?, "correct", "wrong", "off_topic", RUBRIC?,
   "id"?, "domain"?, "flaw"?, "format"?}
where RUBRIC is "rubric": {"criteria": [...]} or "rubric_id": "PACK"
(a row without a rubric gets the pack "general-reasoning", as datasets do).
A row {"about": TEXT} alone is a header, skipped. A file holds triples or
the other kinds, not both.
"""

import concurrent.futures
import contextlib
import dataclasses
import json
import pathlib
import random
import sys
import time
from collections.abc import Callable, Collection, Sequence

from judge_server import probes as probes_lib
from judge_server import validation
from judge_server.config import JudgeConfig
from orchestrator.data import dataset as dataset_lib
from orchestrator.data import templates
from orchestrator.judge.channel import ChannelConfig
from orchestrator.judge.client import JudgeClient
from orchestrator.judge.requests import request_for
from protos import judge_pb2

REPORT = "judge_validation.json"
TABLE = "judge_validation.txt"
PROBE_KEYS = ("prompt", "reference", "completion", "label", "better", "worse",
              "correct", "wrong", "off_topic", "rubric", "rubric_id", "id",
              "domain", "flaw", "format", "about")
THREE = ("correct", "wrong", "off_topic")
PROBE_SETS = pathlib.Path(probes_lib.__file__).parent / "probe_sets"
HELDOUT = PROBE_SETS / "heldout.jsonl"
# A probe row's kinds and the keys that say which it is.
_SHAPES = (("labelled", ("completion", "label")), ("pair", ("better", "worse")),
           ("three", THREE))
TAGS = probes_lib.Tags(templates.REASONING_START, templates.REASONING_END,
                       templates.ANSWER_START, templates.ANSWER_END)
# Probes per score() call, two calls in flight: enough prompts queued for
# the judge's batcher, and a progress line after each call.
_CHUNK = 16
_READY_S = 60.0


def choose(examples: Sequence, n: int, seed: int) -> list:
  """n of `examples` drawn with `seed`, in file order (all when n is
  larger)."""
  if n >= len(examples):
    return list(examples)
  return [examples[i] for i in sorted(random.Random(seed).sample(
      range(len(examples)), n))]


def score_all(client, requests: list[judge_pb2.ScoreRequest],
              progress: Callable[[int, int], None] | None = None
              ) -> dict[str, judge_pb2.ScoreResult]:
  """Every request's result by rollout_id; progress(done, total) after each
  chunk. `client` is a JudgeClient or a JudgePool."""
  chunks = [requests[i:i + _CHUNK] for i in range(0, len(requests), _CHUNK)]
  results = {}
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    for done in concurrent.futures.as_completed(
        [pool.submit(client.score, chunk) for chunk in chunks]):
      results.update(done.result())
      if progress:
        progress(len(results), len(requests))
  return results


def _rewards(results, ids) -> tuple[list[float | None], list[float]]:
  """Rewards of `ids` (None: unscorable) and the scored ones' latencies."""
  rewards, latencies = [], []
  for i in ids:
    r = results[i]
    if r.status == judge_pb2.SCORED:
      rewards.append(r.reward)
      latencies.append(r.latency_ms)
    else:
      rewards.append(None)
  return rewards, latencies


def probe_examples(client, examples: Sequence[dataset_lib.Example], seed: int,
                   aggregation: str | None, progress=None) -> dict:
  """Builds every probe kind from each example, scores them all and
  returns validation.probe_report."""
  built = probes_lib.build([ex.answer for ex in examples], TAGS, seed)
  requests = [request_for(ex, texts[kind], f"probe{i}-{kind}", aggregation)
              for i, (ex, texts) in enumerate(zip(examples, built))
              for kind in probes_lib.KINDS]
  results = score_all(client, requests, progress)
  rewards, latencies = {}, []
  for kind in probes_lib.KINDS:
    rewards[kind], lat = _rewards(
        results, [f"probe{i}-{kind}" for i in range(len(examples))])
    latencies += lat
  return validation.probe_report(rewards, latencies,
                                 [ex.domain for ex in examples])


@dataclasses.dataclass(frozen=True)
class UserProbe:
  """One row of a user's probe file: `example` holds its prompt, reference
  (answer, "" when none), rubric and domain; either completion and label,
  better and worse, or `three` (kind of THREE -> completion)."""
  example: dataset_lib.Example
  completion: str = ""
  label: int | None = None
  better: str = ""
  worse: str = ""
  three: dict[str, str] | None = None


def load_probes(path, known_rubric_ids: Collection[str]) -> list[UserProbe]:
  """The probes of a JSON Lines (or parquet, saved dataset) file; raises
  DatasetError "<where>: <field>: <problem>" for the first bad row."""
  def build(row: dict) -> UserProbe | None:
    if set(row) == {"about"}:
      return None
    prompt = dataset_lib.text_field(row, "prompt")
    reference = (dataset_lib.text_field(row, "reference")
                 if "reference" in row else "")
    shapes = [name for name, keys in _SHAPES if any(k in row for k in keys)]
    if len(shapes) != 1:
      raise dataset_lib.DatasetError(
          "completion: give completion and label, better and worse, or "
          "correct, wrong and off_topic")
    # The dataset rows' rubric rules: inline, a known pack, or the default.
    rubric, rubric_id = dataset_lib._rubric(row, known_rubric_ids)
    domain = (dataset_lib.text_field(row, "domain") if "domain" in row
              else dataset_lib.DEFAULT_DOMAIN)
    example_id = dataset_lib.text_field(row, "id") if "id" in row else ""
    example = dataset_lib.Example(example_id, domain, prompt,
                                  reference, rubric, rubric_id)
    if shapes == ["three"]:
      return UserProbe(example, three={
          k: dataset_lib.text_field(row, k) for k in THREE})
    if shapes == ["pair"]:
      return UserProbe(example, better=dataset_lib.text_field(row, "better"),
                       worse=dataset_lib.text_field(row, "worse"))
    label = row.get("label")
    if type(label) is not int or label not in (0, 1):
      got = "nothing" if label is None else repr(label)
      raise dataset_lib.DatasetError(f"label: must be 0 or 1, got {got}")
    return UserProbe(example, dataset_lib.text_field(row, "completion"),
                     label)
  loaded = [p for p in dataset_lib.load_table(path, PROBE_KEYS, build) if p]
  if not loaded:
    raise dataset_lib.DatasetError(f"{path}: no rows but the header")
  if 0 < sum(p.three is not None for p in loaded) < len(loaded):
    raise dataset_lib.DatasetError(
        f"{path}: correct, wrong and off_topic rows mixed with others; "
        "give one kind per file")
  return loaded


def probe_user(client, user: Sequence[UserProbe], aggregation: str | None,
               progress=None) -> dict:
  """Scores a user's probes and returns validation.user_report, or for
  problems with three completions validation.triple_report."""
  if user[0].three is not None:
    results = score_all(client, [
        request_for(p.example, p.three[k], f"three{i}-{k}", aggregation)
        for i, p in enumerate(user) for k in THREE], progress)
    rewards, latencies = {}, []
    for k in THREE:
      rewards[k], lat = _rewards(results,
                                 [f"three{i}-{k}" for i in range(len(user))])
      latencies += lat
    return validation.triple_report([p.example.domain for p in user],
                                    rewards, latencies)
  labelled = [p for p in user if p.label is not None]
  paired = [p for p in user if p.label is None]
  requests = (
      [request_for(p.example, p.completion, f"label{i}", aggregation)
       for i, p in enumerate(labelled)]
      + [request_for(p.example, text, f"pair{i}-{side}", aggregation)
         for i, p in enumerate(paired)
         for side, text in (("better", p.better), ("worse", p.worse))])
  results = score_all(client, requests, progress)
  rewards, lat = _rewards(results, [f"label{i}" for i in range(len(labelled))])
  better, lat_b = _rewards(results, [f"pair{i}-better"
                                     for i in range(len(paired))])
  worse, lat_w = _rewards(results, [f"pair{i}-worse"
                                    for i in range(len(paired))])
  return validation.user_report(rewards, [p.label for p in labelled], better,
                                worse, lat + lat_b + lat_w)


def off_topic_accuracy(report: dict) -> dict:
  """The report's correct > off_topic pair."""
  return next(p for p in report["pairs"] if p["name"] == "correct > off_topic")


def wrong_accuracy(report: dict) -> dict:
  """The report's correct > wrong pair: what a GRPO group relies on once
  format and answer rewards are flat within it."""
  return next(p for p in report["pairs"] if p["name"] == "correct > wrong")


def write(out_dir: pathlib.Path, report: dict, header: str) -> None:
  """REPORT (JSON, nan as null) and TABLE (the printed text) in out_dir."""
  (out_dir / REPORT).write_text(
      json.dumps(validation.json_ready(report), indent=2) + "\n")
  (out_dir / TABLE).write_text(f"{header}\n{validation.table(report)}\n")


def check(client, examples: Sequence[dataset_lib.Example], cfg, aggregation,
          seed: int, out_dir: pathlib.Path, say: Callable[[str], None],
          error: type[Exception], reuse: bool = False) -> dict | None:
  """The check before a run trusts its judge (cfg: config
  JudgeValidationConfig): cfg.rows of `examples` become probes, the report
  goes to out_dir (REPORT, TABLE) and to `say`. A judge whose correct >
  off_topic accuracy is below cfg.min_off_topic_accuracy, or correct >
  wrong below cfg.min_wrong_accuracy, raises `error` (on_fail stop) or is
  reported as a warning (warn, unweight: falls_short tells the caller);
  skip skips the check.
  reuse: a REPORT already in out_dir (a resumed run) is read, not measured
  again. Returns the report, None when skipped."""
  if cfg.on_fail == "skip":
    return None
  path = out_dir / REPORT
  if reuse and path.exists():
    report = json.loads(path.read_text())
    say(f"judge validated when the run started ({out_dir / TABLE}); not "
        "probed again on resume")
  else:
    chosen = choose(examples, cfg.rows, seed)
    say(f"validating the judge on {len(chosen)} examples x "
        f"{len(probes_lib.KINDS)} probes")
    t0 = time.monotonic()
    report = probe_examples(
        client, chosen, seed, aggregation,
        lambda done, total: say(f"judge validation: {done}/{total} probes "
                                f"scored ({time.monotonic() - t0:.0f} s)"))
    header = f"judge validation on {len(chosen)} examples"
    write(out_dir, report, header)
    say(f"{header}:\n{validation.table(report)}")
  problem = _below(report, cfg)
  if problem is None:
    return report
  problem += f"; table in {out_dir / TABLE}"
  if cfg.on_fail == "stop":
    raise error(f"{problem}. Use a stronger judge or another judge prompt, "
                "or go on anyway with --set judge.validation.on_fail=warn")
  if cfg.on_fail == "unweight":
    problem += "; judge.validation.on_fail unweight: no judge reward"
  say(f"warning: {problem}")
  return report


def falls_short(report: dict | None, cfg) -> bool:
  """Whether check's report (None: not checked) is below cfg's thresholds."""
  return report is not None and _below(report, cfg) is not None


def _below(report: dict, cfg) -> str | None:
  """What the report falls short of in cfg's thresholds, None if nothing:
  off-topic text first (a judge that cannot see), then wrong answers."""
  for pair, threshold, what in (
      (off_topic_accuracy(report), "min_off_topic_accuracy",
       "a correct answer from off-topic text"),
      (wrong_accuracy(report), "min_wrong_accuracy",
       "a correct answer from a wrong one")):
    accuracy = (pair["accuracy"] if pair["accuracy"] is not None
                else float("nan"))
    if not accuracy >= getattr(cfg, threshold):
      return (
          f"the judge cannot tell {what}: {pair['name']} accuracy "
          f"{validation.fmt(accuracy, '.2f')} on {pair['n']} examples (95% "
          f"interval [{validation.fmt(pair['low'], '.2f')}, "
          f"{validation.fmt(pair['high'], '.2f')}], ties half), below "
          f"judge.validation.{threshold}={getattr(cfg, threshold)}")
  return None


@contextlib.contextmanager
def _in_process(cfg: JudgeConfig):
  """A judge server of `cfg` on loopback in this process; yields its
  address."""
  from judge_server.backends import factory  # jax only if kind jax
  from judge_server import server as judge_server_lib
  judge_server_lib.check(cfg)
  _say(f"starting the judge in process ({cfg.backend.kind} backend)")
  backend = factory.build(cfg.backend)
  with judge_server_lib.on_loopback(cfg, backend) as address:
    yield address


def _say(message: str) -> None:
  print(f"grar: {message}", file=sys.stderr, flush=True)


def command(*, target: str | None, judge_config: JudgeConfig | None,
            channel: ChannelConfig, data: str | None, probes: str | None,
            n: int | None, seed: int, aggregation: str | None,
            as_json: bool, out=None) -> int:
  """`grar judge validate`: the report on stdout (a table, or one JSON
  object); progress on stderr. Returns the exit code. Without data or
  probes, the shipped held-out probe set (HELDOUT). n: rows drawn with
  `seed` (default: 50 of a dataset, every probe)."""
  from judge_server import server as judge_server_lib
  out = out or sys.stdout
  if n is not None and n < 1:
    raise ValueError(f"--n: must be >= 1, got {n}")
  if not data and not probes:
    probes = str(HELDOUT)
  with contextlib.ExitStack() as stack:
    if judge_config is not None:
      # Rows are checked before a slow model load.
      items = _items(data, probes, judge_server_lib.load_packs(
          judge_config.rubric_dir), n, seed)
      target = stack.enter_context(_in_process(judge_config))
    client = stack.enter_context(JudgeClient(target, 600.0, channel))
    try:
      client.wait_ready(_READY_S)
    except TimeoutError as e:
      print(f"grar: error: {e}", file=sys.stderr)
      return 1
    info = client.info()
    if judge_config is None:
      items = _items(data, probes, [r.id for r in info.rubrics], n, seed)
    t0 = time.monotonic()
    progress = lambda done, total: _say(  # noqa: E731
        f"{done}/{total} probes scored ({time.monotonic() - t0:.0f} s)")
    if data:
      report = probe_examples(client, items, seed, aggregation, progress)
    else:
      report = probe_user(client, items, aggregation, progress)
  used = aggregation or judge_pb2.Aggregation.Name(
      info.default_aggregation).lower()
  header = (f"judge {info.backend}:{info.model}, {used} aggregation, on "
            f"{data or probes} ({len(items)} rows"
            + (f", seed {seed})" if data or n else ")"))
  if as_json:
    out.write(json.dumps(validation.json_ready({
        "judge": {"backend": info.backend, "model": info.model},
        "aggregation": used, "source": data or probes, "seed": seed,
        **report})) + "\n")
  else:
    out.write(f"{header}\n{validation.table(report)}\n")
  out.flush()
  return 0


def _items(data, probes, known: Collection[str], n: int | None, seed: int
           ) -> list:
  if data:
    return choose(dataset_lib.load_jsonl(data, known), n or 50, seed)
  loaded = load_probes(probes, known)
  return choose(loaded, n, seed) if n else loaded
