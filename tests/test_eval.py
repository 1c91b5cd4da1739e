"""`grar eval`: base and trained policies answer the held-out set greedily,
judged by the tiny judge over loopback gRPC; accuracies carry 95 % Wilson
intervals, overall and per task; a judge that cannot score leaves the rubric
mean undefined and counts the answers, not a mean of 0; and metrics that a
step does not have are left out, not logged as NaN."""

import dataclasses
import io
import json
import logging
import math

import jax
import numpy as np
import pytest
from tensorboardX import SummaryWriter

from judge_server import server as judge_server_lib
from judge_server import validation
from orchestrator import cli, stats
from orchestrator.data import dataset
from orchestrator.stages import evaluate
from orchestrator.rundir import inspect_run
from orchestrator.rundir import metrics
from orchestrator.rundir import layout as run_dir_lib
from orchestrator.config import RunConfig
from policy_worker import models, rollout
from grar_config.model import ModelSpec
from processes import free_port
from test_export import lora_checkpoint

HELDOUT = "data/heldout-sample.jsonl"
N = 8  # rows in it: 4 math, 2 science, 2 everyday
PNG = b"\x89PNG\r\n\x1a\n"

# Wilson 95 % bounds worked by hand from
#   centre = (p + z^2/2n) / (1 + z^2/n)
#   half = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2),  z^2 = 3.841459
# (scipy.stats.binomtest(k, n).proportion_ci(method="wilson") agrees):
# 0/n: low 0, high = (z^2/n) / (1 + z^2/n); n/n mirrors it.
W_0_10 = (0.0, 0.277533)    # 0.384146 / 1.384146
W_10_10 = (0.722467, 1.0)   # 1 - 0.277533
W_0_8 = (0.0, 0.324408)     # 0.480182 / 1.480182
W_7_20 = (0.181192, 0.567146)  # centre 0.446037 / 1.192073 = 0.374169,
#                                half 1.959964 * 0.117371 / 1.192073 = 0.192977
W_10_20 = (0.299298, 0.700702)  # centre 0.5,
#                                  half 1.959964 * 0.122070 / 1.192073
W_7_10 = (0.396778, 0.892209)  # centre 0.892073 / 1.384146 = 0.644494,
#                                half 1.959964 * 0.174939 / 1.384146 = 0.247716


@pytest.mark.parametrize("k,n,want", [(0, 10, W_0_10), (10, 10, W_10_10),
                                      (7, 20, W_7_20), (0, 8, W_0_8)])
def test_wilson_on_hand_computed_counts(k, n, want):
  assert stats.wilson(k, n) == pytest.approx(want, abs=1e-6)


def test_wilson_refuses_impossible_counts():
  with pytest.raises(ValueError, match="n: must be >= 1"):
    stats.wilson(0, 0)
  with pytest.raises(ValueError, match=r"successes: must be in \[0, 5\]"):
    stats.wilson(6, 5)


def _row(task, fmt, answer, judge, tokens):
  return {"task": task, "format": fmt, "answer": answer,
          "judge_reward": judge, "completion_tokens": tokens}


# Task a: 10 in format, 7 right, one half right (partial credit is not
# right), all judged 0.6. Task b: none in format or right, half judged 0.2,
# half unscorable.
ROWS = ([_row("a", 1.0, 1.0, 0.6, 10) for _ in range(7)]
        + [_row("a", 1.0, 0.5, 0.6, 10)]
        + [_row("a", 1.0, 0.0, 0.6, 10) for _ in range(2)]
        + [_row("b", 0.0, 0.0, 0.2 if i % 2 else None, 30)
           for i in range(10)])


def test_summary_on_hand_made_rows():
  s = evaluate.summarise(ROWS)
  assert list(s) == ["examples", "format_accuracy", "format_accuracy_ci",
                     "answer_accuracy", "answer_accuracy_ci", "judge_mean",
                     "judge_scored", "judge_unscorable", "answer_tokens_mean",
                     "per_task"]
  assert s["examples"] == 20
  assert s["format_accuracy"] == 0.5
  assert s["format_accuracy_ci"] == pytest.approx(W_10_20, abs=1e-6)
  assert s["answer_accuracy"] == 0.35
  assert s["answer_accuracy_ci"] == pytest.approx(W_7_20, abs=1e-6)
  assert s["judge_mean"] == pytest.approx((10 * 0.6 + 5 * 0.2) / 15)
  assert (s["judge_scored"], s["judge_unscorable"]) == (15, 5)
  assert s["answer_tokens_mean"] == 20.0
  a, b = s["per_task"]["a"], s["per_task"]["b"]
  assert list(s["per_task"]) == ["a", "b"]
  assert (a["examples"], a["format_accuracy"], a["answer_accuracy"]) == (
      10, 1.0, 0.7)
  assert a["format_accuracy_ci"] == pytest.approx(W_10_10, abs=1e-6)
  assert a["answer_accuracy_ci"] == pytest.approx(W_7_10, abs=1e-6)
  assert a["judge_mean"] == pytest.approx(0.6)
  assert (b["examples"], b["format_accuracy"], b["answer_accuracy"]) == (
      10, 0.0, 0.0)
  assert b["answer_accuracy_ci"] == pytest.approx(W_0_10, abs=1e-6)
  assert b["judge_mean"] == pytest.approx(0.2)


# ROWS, numbered, after a candidate that answered none of them right: 7
# right only in ROWS (b), none only before (c), 13 wrong in both. Newcombe's
# interval (tests/test_stats.py) of 7/20 - 0/20, worked by hand: a margin
# is 0, so phi = 0; Wilson(7, 20) = W_7_20 and Wilson(0, 20) = (0,
# 0.192073 / 1.192073) = (0, 0.161125);
#   low = 0.35 - sqrt((0.35 - 0.181192)^2 + (0.161125 - 0)^2)
#       = 0.35 - sqrt(0.028496 + 0.025961) = 0.35 - 0.233361 = 0.116639,
#   high = 0.35 + sqrt((0.567146 - 0.35)^2 + 0^2) = 0.567146.
NUMBERED = [{**r, "example_id": f"q{i}"} for i, r in enumerate(ROWS)]
NONE_RIGHT = [{**r, "format": 0.0, "answer": 0.0} for r in NUMBERED]


def test_paired_difference_on_hand_made_rows():
  diff = evaluate.paired("base", NONE_RIGHT, NUMBERED)
  assert list(diff) == ["paired_with", "paired_n", "answer_accuracy_diff",
                        "answer_accuracy_diff_ci", "b", "c"]
  assert (diff["paired_with"], diff["paired_n"], diff["b"], diff["c"]) == (
      "base", 20, 7, 0)
  assert diff["answer_accuracy_diff"] == pytest.approx(0.35)
  assert diff["answer_accuracy_diff_ci"] == pytest.approx(
      [0.116639, 0.567146], abs=1e-6)
  # The other way round: the interval mirrors, b and c swap.
  back = evaluate.paired("sft", NUMBERED, NONE_RIGHT)
  assert (back["b"], back["c"]) == (0, 7)
  assert back["answer_accuracy_diff_ci"] == pytest.approx(
      [-0.567146, -0.116639], abs=1e-6)


@pytest.mark.parametrize("previous,message", [
    (NONE_RIGHT[:19], r"\(19 there, 20 here, first differing at row 20\)"),
    (NONE_RIGHT[1:] + NONE_RIGHT[:1],
     r"\(20 there, 20 here, first differing at row 1\)")])
def test_paired_refuses_other_questions(previous, message):
  with pytest.raises(ValueError,
                     match=r"cannot pair with base: not the same questions "
                     + message):
    evaluate.paired("base", previous, NUMBERED)


def _lines(text, start):
  return [line.split() for line in text.splitlines() if line.startswith(start)]


def test_table_shows_intervals_change_and_tasks():
  before = evaluate.summarise(
      [{**r, "format": 0.0, "answer": 0.0} for r in ROWS])
  after = {**evaluate.summarise(ROWS),
           **evaluate.paired("base", NONE_RIGHT, NUMBERED)}
  text = evaluate.table({"base": before, "sft": after})
  assert _lines(text, "metric") == [["metric", "base", "sft", "change"]]
  assert _lines(text, "format accuracy") == [
      ["format", "accuracy", "0.000", "[0.000,", "0.161]", "0.500",
       "[0.299,", "0.701]", "+0.500"]]
  assert _lines(text, "answer accuracy  ") == [
      ["answer", "accuracy", "0.000", "[0.000,", "0.161]", "0.350",
       "[0.181,", "0.567]", "+0.350"]]
  assert _lines(text, "answer accuracy, paired") == [
      ["answer", "accuracy,", "paired", "difference", "[95", "%]", "n", "b",
       "c"]]
  assert _lines(text, "sft - base") == [
      ["sft", "-", "base", "+0.350", "[+0.117,", "+0.567]", "20", "7", "0"]]
  assert _lines(text, "a ") == [["a", "10", "0.000", "[0.000,", "0.278]",
                                 "0.700", "[0.397,", "0.892]"]]
  assert _lines(text, "b ") == [["b", "10", "0.000", "[0.000,", "0.278]",
                                 "0.000", "[0.000,", "0.278]"]]
  # Columns line up: every cell of a column ends at the same place.
  rows = text.split("\n\n")[0].splitlines()
  assert len({len(line) for line in rows}) == 1
  # Three candidates: no change column; summary.json's nulls read as NaN.
  three = json.loads(json.dumps(validation.json_ready(
      {"base": before, "sft": after,
       "none judged": evaluate.summarise(
           [{**r, "judge_reward": None} for r in ROWS])})))
  text = evaluate.table(three)
  assert _lines(text, "metric") == [["metric", "base", "sft", "none", "judged"]]
  assert _lines(text, "judge mean")[0][-1] == "nan"


def test_accuracy_plot_is_a_png(tmp_path):
  summary = evaluate.summarise(ROWS)
  path = evaluate.plot_accuracy(
      {"base": summary, "sft": summary, "sft+grpo": summary}, tmp_path)
  assert path == tmp_path / "plots" / "heldout_accuracy.png"
  assert path.read_bytes().startswith(PNG)


def _nan_warnings(caplog):
  return [r for r in caplog.records if "NaN or Inf" in r.getMessage()]


def test_missing_metrics_are_not_logged(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  # How tensorboardX complains (a logging warning), so this test can fail.
  probe = SummaryWriter(str(tmp_path / "probe"))
  probe.add_scalar("x", math.nan, 0)
  probe.close()
  assert _nan_warnings(caplog)
  caplog.clear()
  writer = metrics.MetricsWriter(tmp_path, run_dir_lib.METRICS, 1, 2,
                                 out=io.StringIO())
  for step, judge in ((1, math.nan), (2, 0.5)):
    writer.write({"step": step, "reward_mean": 0.25, "format_mean": 0.0,
                  "answer_mean": 0.5, "judge_mean": judge, "loss": 0.1,
                  "kl": 0.0, "judge_latency_p50_ms": judge * 100,
                  "time_step": 1.0})
  writer.close()
  assert not _nan_warnings(caplog)
  lines = (tmp_path / run_dir_lib.METRICS).read_text().splitlines()
  assert lines[1].split(",") == ["1", "0.25", "0", "0.5", "", "0.1", "0", "",
                                 "1"]
  rows = metrics.read(tmp_path / run_dir_lib.METRICS)
  assert math.isnan(rows[0]["judge_mean"]) and rows[1]["judge_mean"] == 0.5
  # The same directory as a GRPO run: its reward plot alone.
  path = inspect_run.plot_rewards(tmp_path)
  assert path == tmp_path / "plots" / "rewards.png"
  assert path.read_bytes().startswith(PNG)


def test_reward_plot_needs_a_grpo_run(tmp_path):
  (tmp_path / run_dir_lib.METRICS).write_text("step,loss\n1,0.5\n")
  with pytest.raises(inspect_run.InspectError, match="has no reward_mean"):
    inspect_run.plot_rewards(tmp_path)


def test_short_last_batch_reuses_the_compiled_shape():
  spec = ModelSpec(family="gemma3-tiny")
  # The policy mesh of configs/eval-tiny.yaml, which later tests use.
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]).reshape(1, 4),
                           ("fsdp", "tp"))
  model, tok = models.build_model(spec, mesh)
  generator = rollout.RolloutGenerator(model, tok, mesh, max_prompt_tokens=512,
                                       max_new_tokens=16)
  examples = dataset.load_jsonl(HELDOUT, judge_server_lib.load_packs("").keys())
  full, _ = evaluate._generate(generator, examples[:3], 3, ())
  short, lengths = evaluate._generate(generator, examples[3:5], 3, ())
  assert len(full) == 3 and len(short) == len(lengths) == 2
  sampler = generator._sampler
  assert sampler._compiled_decode_fn._cache_size() == 1
  assert sampler._compiled_prefill_fn._cache_size() == 1


def _trained_run(tmp_path_factory, name, scale):
  """A `grar train` run directory whose checkpoint has strong random LoRA
  adapters of `scale`, so its greedy answers differ from the base model's."""
  cfg = RunConfig(model=ModelSpec(family="gemma3-tiny"))
  run_dir = run_dir_lib.create(str(tmp_path_factory.mktemp("runs")), name,
                               dataclasses.asdict(cfg))
  lora_checkpoint(cfg.model, run_dir_lib.checkpoint_dir(run_dir, 3),
                  rank=cfg.grpo.lora_rank, alpha=cfg.grpo.lora_alpha,
                  scale=scale)
  run_dir_lib.write_manifest(run_dir, run_dir_lib.Manifest(3, 0))
  return run_dir


def _eval(capsys, out, *overrides):
  code = cli.main(["eval", "--config", "configs/eval-tiny.yaml",
                   "--set", f"output_dir={out}", "--set", "max_new_tokens=16",
                   *(a for o in overrides for a in ("--set", o))])
  printed = capsys.readouterr()
  assert code == 0, printed.err[-3000:]
  rows = [json.loads(line) for line in (out / evaluate.ROWS).open()]
  return printed.out, rows, json.loads((out / evaluate.SUMMARY).read_text())


def _wilson(k: int, n: int) -> list[float]:
  """The 95 % Wilson interval, written out from its formula (see the
  hand-worked bounds above), not stats.wilson."""
  z2 = 1.959963984540054 ** 2
  p = k / n
  centre = (p + z2 / (2 * n)) / (1 + z2 / n)
  half = math.sqrt(z2) / (1 + z2 / n) * math.sqrt(
      p * (1 - p) / n + z2 / (4 * n * n))
  return [max(0.0, centre - half), min(1.0, centre + half)]


def _measures_from_rows(rows: list[dict]) -> dict:
  """What summary.json must say of `rows` (read from rows.jsonl), counted
  here: a row is right only with a reward of exactly 1.0; the judge mean
  is over the rows whose judge_status is SCORED, null when none is."""
  n = len(rows)
  out = {"examples": n}
  for measure in ("format", "answer"):
    hits = len([r for r in rows if r[measure] == 1.0])
    out[f"{measure}_accuracy"] = hits / n
    out[f"{measure}_accuracy_ci"] = _wilson(hits, n)
  scored = [r["judge_reward"] for r in rows if r["judge_status"] == "SCORED"]
  out["judge_mean"] = sum(scored) / len(scored) if scored else None
  return out


def _paired_from_rows(name: str, previous: list[dict], rows: list[dict]
                      ) -> dict:
  """What summary.json must say of rows against the previous candidate's
  (same questions, same order), counted here."""
  right = [(r["answer"] == 1.0, p["answer"] == 1.0)
           for r, p in zip(rows, previous, strict=True)]
  table = [sum(pair == want for pair in right)
           for want in ((True, True), (True, False), (False, True),
                        (False, False))]
  return {"paired_with": name, "paired_n": len(rows),
          "answer_accuracy_diff": (table[1] - table[2]) / len(rows),
          "answer_accuracy_diff_ci": list(stats.newcombe_paired(*table)),
          "b": table[1], "c": table[2]}


def _summary_from_rows(rows: list[dict], paired: dict) -> dict:
  scored = [r for r in rows if r["judge_status"] == "SCORED"]
  tasks = sorted({r["task"] for r in rows})
  return {**_measures_from_rows(rows),
          "judge_scored": len(scored),
          "judge_unscorable": len(rows) - len(scored),
          "answer_tokens_mean": sum(r["completion_tokens"] for r in rows)
                                / len(rows),
          "per_task": {t: _measures_from_rows([r for r in rows
                                               if r["task"] == t])
                       for t in tasks}, **paired}


def _assert_summary_is_the_rows(summary: dict, rows: list[dict],
                                paired: dict | None = None) -> None:
  """paired: _paired_from_rows's, for a candidate after the first."""
  want = _summary_from_rows(rows, paired or {})
  assert list(summary) == list(want)
  assert list(summary["per_task"]) == list(want["per_task"])
  for key, value in want.items():
    if key == "per_task":
      for task, measures in value.items():
        assert list(summary["per_task"][task]) == list(measures)
        for k, v in measures.items():
          assert summary["per_task"][task][k] == pytest.approx(v, abs=1e-9), (
              task, k)
    elif key == "paired_with":
      assert summary[key] == value
    else:
      assert summary[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.e2e
@pytest.mark.slow
def test_three_candidates_table_rows_and_summary(tmp_path, capsys,
                                                 tmp_path_factory):
  trained = _trained_run(tmp_path_factory, "trained", 0.5)
  other = _trained_run(tmp_path_factory, "other", 0.3)
  names = ["base", "trained", "other"]
  # batch_size 3: batches of 3, 3 and a padded 2.
  printed, rows, summary = _eval(
      capsys, tmp_path / "eval", "batch_size=3",
      f"candidates=[{{name: base}}, {{name: trained, run: {trained}}}, "
      f"{{name: other, run: {other}}}]")
  assert _lines(printed, "metric") == [["metric", *names]]
  assert _lines(printed, "answer accuracy by task") == [
      ["answer", "accuracy", "by", "task", "n", *names]]
  assert [line[:2] for line in _lines(printed, "math")] == [["math", "4"]]
  assert (tmp_path / "eval" / evaluate.PLOT).read_bytes().startswith(PNG)
  assert f"held-out accuracy plot: {tmp_path / 'eval' / evaluate.PLOT}" in (
      printed)
  assert list(summary) == names
  assert [r["candidate"] for r in rows] == [n for n in names for _ in range(N)]
  by = {name: [r for r in rows if r["candidate"] == name] for name in names}
  # Each LoRA checkpoint was applied, "other"'s into the generator "trained"
  # compiled: the greedy answers differ.
  texts = [[r["completion"] for r in by[name]] for name in names]
  assert texts[0] != texts[1] and texts[1] != texts[2] and texts[0] != texts[2]
  domains = ["math"] * 4 + ["science"] * 2 + ["everyday"] * 2
  for i, (name, mine) in enumerate(by.items()):
    assert [r["example_id"] for r in mine] == [
        f"heldout-{i:03d}" for i in range(1, N + 1)]
    assert [r["task"] for r in mine] == domains  # no task: the domain
    for r in mine:
      assert r["judge_status"] == "SCORED" and 0 <= r["judge_reward"] <= 1
      assert 1 <= r["completion_tokens"] <= 16
      # The row's rewards are those of its own completion: a completion
      # without the answer block is neither in format nor right.
      if "<answer>" not in r["completion"]:
        assert r["format"] == 0.0 and r["answer"] == 0.0, r
    s = summary[name]
    # Every number of summary.json, counted from rows.jsonl here; from the
    # second candidate on, its paired difference from the one before.
    paired = (_paired_from_rows(names[i - 1], by[names[i - 1]], mine)
              if i else None)
    _assert_summary_is_the_rows(s, mine, paired)
    if paired:
      assert s["paired_n"] == N
      low, high = s["answer_accuracy_diff_ci"]
      assert _lines(printed, f"{name} - {names[i - 1]}") == [
          [name, "-", names[i - 1], f"{s['answer_accuracy_diff']:+.3f}",
           f"[{low:+.3f},", f"{high:+.3f}]", str(N), str(s["b"]),
           str(s["c"])]]
    # Random weights never write the template: 0/8 in format.
    assert s["format_accuracy"] == 0.0
    assert s["format_accuracy_ci"] == pytest.approx(W_0_8, abs=1e-6)
    assert (s["examples"], s["judge_scored"], s["judge_unscorable"]) == (N, N,
                                                                         0)
    assert {t: v["examples"] for t, v in s["per_task"].items()} == {
        "everyday": 2, "math": 4, "science": 2}
    # The printed table shows the file's numbers.
    assert f"{s['answer_accuracy']:.3f}" in " ".join(
        _lines(printed, "answer accuracy  ")[0])


def test_group_measures_on_hand_made_rows():
  # 4 samples per question: successes 0, 0, 1, 4, 2 -> rates 0, 0, .25, 1,
  # .5 (mean 0.35); 3 of 5 with one right; 3 flat (0, 0 and 4).
  rows = [{"group_successes": w, "group_samples": 4} for w in (0, 0, 1, 4, 2)]
  got = evaluate._group_measures(rows)
  rates = np.array([0, 0, .25, 1, .5])
  half = 1.96 * rates.std(ddof=1) / math.sqrt(5)  # the normal interval
  assert got["group_samples"] == 4
  assert got["sampled_accuracy"] == pytest.approx(0.35)
  assert got["sampled_accuracy_ci"] == pytest.approx([0.35 - half,
                                                      0.35 + half], abs=1e-6)
  assert got["pass_at_g"] == pytest.approx(3 / 5)
  assert got["flat_group_fraction"] == pytest.approx(3 / 5)
  assert evaluate._group_measures([{"answer": 1.0}]) == {}


@pytest.mark.e2e
def test_group_samples_measure_what_grpo_would_see(tmp_path, capsys):
  """The task-selection measures on the tiny model: each row's successes
  among its samples, and the summary counted from them."""
  printed, rows, summary = _eval(capsys, tmp_path / "eval",
                                 "group_samples=3", "group_temperature=0.7")
  wins = [r["group_successes"] for r in rows]
  assert all(r["group_samples"] == 3 for r in rows) and len(wins) == N
  assert all(0 <= w <= 3 for w in wins)
  base = summary["base"]
  assert base["sampled_accuracy"] == pytest.approx(sum(wins) / (3 * N))
  assert base["pass_at_g"] == pytest.approx(sum(w > 0 for w in wins) / N)
  assert base["flat_group_fraction"] == pytest.approx(
      sum(w in (0, 3) for w in wins) / N)
  assert _lines(printed, "pass@G")


@pytest.mark.e2e
def test_unscorable_answers_are_counted_not_averaged(tmp_path, capsys):
  # A judge service in front of an endpoint that is not there: it answers
  # every rollout, UNSCORABLE.
  printed, rows, summary = _eval(
      capsys, tmp_path / "eval", "judge.server.backend.kind=openai",
      f"judge.server.backend.openai.base_url=http://127.0.0.1:{free_port()}/v1",
      "judge.server.backend.openai.model=none")
  assert all(r["judge_status"] == "UNSCORABLE" and r["judge_reward"] is None
             for r in rows)
  base = summary["base"]
  _assert_summary_is_the_rows(base, rows)
  assert base["judge_unscorable"] == N and base["judge_scored"] == 0
  assert base["judge_mean"] is None  # not 0
  assert all(t["judge_mean"] is None for t in base["per_task"].values())
  assert base["answer_tokens_mean"] > 0  # the rule measures still count
  assert "nan" in next(line for line in printed.splitlines()
                       if line.startswith("judge mean"))


def test_bad_config_names_the_field(tmp_path, capsys):
  code = cli.main(["eval", "--config", "configs/eval-tiny.yaml",
                   "--set", "candidates=[{name: a}, {name: a}]"])
  assert code == 2
  assert "candidates: names must be unique" in capsys.readouterr().err
