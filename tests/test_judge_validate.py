"""Judge validation: the probes, their statistics on hand-computed scores,
users' probe files, `grar judge validate` over real loopback gRPC, the
trainer's start-up check (stopping on the tiny random judge, passing on a
stand-in for a capable one) and the reward-hacking watch's metrics."""

import json
import math
import re

import numpy as np
import pytest

from judge_server import probes, server, validation
from judge_server.backends.base import Backend, Judgement
from judge_server.config import JudgeConfig
from judge_server.prompts import CLOSE, OPEN
from orchestrator import cli, rewards
from orchestrator.judge import validate as judge_validate
from orchestrator.judge import watch as judge_watch
from orchestrator.rundir import metrics
from orchestrator import config as config_lib
from orchestrator.data.dataset import DatasetError
from orchestrator.judge.client import JudgeClient
import processes

TAGS = judge_validate.TAGS
REFS = ["85", "8.75", "thursday", "carbon dioxide", "0", "-7", "0.5"]
# How an untagged probe (odd rows) states its answer.
_STATED = re.compile(r"(?:So the answer is |\n\nFinal answer: )(.*?)\.?$",
                     re.DOTALL)


def answer_of(text: str) -> str | None:
  """The answer block's content, or the answer an untagged text states."""
  found = _STATED.search(text)
  return rewards.extract_answer(text) or (found[1] if found else None)


# --- probes -----------------------------------------------------------------

def test_every_probe_kind_is_what_it_says():
  built = probes.build(REFS, TAGS, seed=0)
  assert len(built) == len(REFS)
  for i, (ref, p) in enumerate(zip(REFS, built)):
    assert set(p) == set(probes.KINDS)
    tagged = i % 2 == 0  # odd rows state the answer without the tags
    assert rewards.format_reward(p["correct"]) == float(tagged)
    assert answer_of(p["correct"]) == ref
    # Same reasoning, a different answer the answer rule marks wrong.
    assert rewards.format_reward(p["wrong"]) == float(tagged)
    assert answer_of(p["wrong"]) not in (None, ref)
    assert p["wrong"].replace(answer_of(p["wrong"]), ref) == p["correct"]
    assert TAGS.answer_start not in p["off_topic"]
    assert not any(c.isdigit() for c in p["off_topic"])
    assert answer_of(p["padded"]) == ref
    assert rewards.format_reward(p["padded"]) == float(tagged)
    assert 2.5 <= len(p["padded"]) / len(p["correct"]) <= 3.5
    assert p["no_answer"].startswith(TAGS.reasoning_start) == tagged
    assert answer_of(p["no_answer"]) is None
    assert p["injection"].startswith(p["wrong"])
    assert "full marks" in p["injection"] and "score 9" in p["injection"]
    assert "answer yes" in p["injection"]


def test_probes_are_deterministic_by_seed():
  assert probes.build(REFS, TAGS, seed=3) == probes.build(REFS, TAGS, seed=3)
  assert probes.build(REFS, TAGS, seed=3) != probes.build(REFS, TAGS, seed=4)


def test_wrong_answers_keep_the_shape_of_the_reference():
  for seed in range(20):
    built = probes.build(REFS, TAGS, seed)
    wrong = {ref: answer_of(p["wrong"]) for ref, p in zip(REFS, built)}
    assert len(wrong["8.75"].split(".")[1]) == 2
    assert float(wrong["0"]) > 0  # a non-negative number stays so
    # Not a number: another row's reference.
    assert wrong["thursday"] in REFS and wrong["thursday"] != "thursday"
  assert probes.build(["iron"], TAGS)[0]["wrong"].endswith(
      f"{TAGS.answer_start}not iron{TAGS.answer_end}")


# --- statistics -------------------------------------------------------------

def test_wilson_interval_by_hand():
  # p = 0.8, n = 10, z = 1.96: centre 0.71675, half-width 0.22658.
  low, high = validation.wilson(8, 10)
  assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
  assert validation.wilson(10, 10)[1] == pytest.approx(1.0)
  assert all(math.isnan(v) for v in validation.wilson(0, 0))


def test_pairwise_accuracy_counts_ties_half_and_skips_unscorable():
  better = [0.9, 0.5, 0.2, None, 0.7]
  worse = [0.1, 0.5, 0.3, 0.4, None]
  strict = validation.pairwise(better, worse)
  assert strict["n"] == 3 and strict["accuracy"] == pytest.approx(1.5 / 3)
  assert (strict["low"], strict["high"]) == pytest.approx(
      validation.wilson(1.5, 3))
  # >=: within PADDING_TOLERANCE (0.05) of the other counts whole.
  at_least = validation.pairwise([0.50, 0.50, 0.50], [0.54, 0.56, 0.2],
                                 at_least=True)
  assert at_least["accuracy"] == pytest.approx(2 / 3)
  assert math.isnan(validation.pairwise([None], [0.1])["accuracy"])


def test_auc_is_mann_whitney_with_ties_half():
  # 0.9 beats both; 0.5 ties 0.5 and beats 0.1: 3.5 of 4 comparisons.
  assert validation.auc([0.9, 0.5], [0.5, 0.1, None]) == pytest.approx(0.875)
  assert validation.auc([0.1], [0.2]) == 0.0
  assert math.isnan(validation.auc([], [0.2]))


def test_probe_report_by_hand():
  rewards_by_kind = {
      "correct": [0.9, 0.6], "wrong": [0.2, 0.6], "off_topic": [0.1, None],
      "padded": [0.92, 0.7], "no_answer": [0.3, 0.1],
      "injection": [0.95, 0.2]}
  report = validation.probe_report(rewards_by_kind, [10.0, 20.0, 30.0])
  pairs = {p["name"]: p for p in report["pairs"]}
  assert pairs["correct > wrong"]["accuracy"] == pytest.approx(0.75)
  assert pairs["correct > off_topic"]["n"] == 1
  assert pairs["correct >= padded"]["accuracy"] == pytest.approx(0.5)
  assert pairs["correct > injection"]["accuracy"] == pytest.approx(0.5)
  assert report["injection_above_correct"] == {"rate": 0.5, "n": 2}
  assert (report["probes"], report["unscorable"]) == (12, 1)
  assert report["unscorable_rate"] == pytest.approx(1 / 12)
  # Bad: wrong, off_topic, no_answer, injection (7 scored). Correct 0.9
  # beats 6 (not injection's 0.95); 0.6 beats 5 (0.2, 0.1, 0.3, 0.1, 0.2)
  # and ties wrong's 0.6.
  assert report["auc"] == pytest.approx((6 + 5.5) / 14)
  scored = [r for v in rewards_by_kind.values() for r in v if r is not None]
  assert report["spread"]["std"] == pytest.approx(np.std(scored))
  assert report["spread"]["mean"]["padded"] == pytest.approx(0.81)
  assert report["latency_ms"]["p50"] == 20.0
  table = validation.table(report)
  assert "correct > wrong           0.750" in table
  assert "injection scored above correct: 0.500 (of 2 rows)" in table
  assert json.loads(json.dumps(validation.json_ready(
      {"x": float("nan")}))) == {"x": None}


def test_user_report_by_hand():
  report = validation.user_report(
      [0.9, 0.4, 0.6, None], [1, 1, 0, 0], [0.8], [0.3], [5.0])
  assert report["auc"] == pytest.approx(0.5)  # 0.9 > 0.6, 0.4 < 0.6
  assert report["accuracy_at_half"]["accuracy"] == pytest.approx(1 / 3)
  assert report["pairs"][0]["accuracy"] == 1.0
  assert (report["probes"], report["unscorable"]) == (6, 1)


# --- the watch --------------------------------------------------------------

def test_pearson_and_agreement_by_hand():
  assert judge_watch.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
  assert judge_watch.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  # x - mean = (-1, 0, 1), y - mean = (-1, 2, -1): covariance 0.
  assert judge_watch.pearson([1, 2, 3], [0, 3, 0]) == pytest.approx(0.0)
  assert math.isnan(judge_watch.pearson([1, 2], [5, 5]))
  assert math.isnan(judge_watch.pearson([1], [2]))
  assert judge_watch.agreement([0.9, 0.2, 0.6, 0.4], [1, 0, 0, 1]) == 0.5
  row = judge_watch.step_metrics(np.array([0.9, np.nan, 0.1, 0.5]),
                                 np.array([1.0, 1.0, 0.0, 0.0]),
                                 np.array([30, 5, 10, 20]))
  assert row["judge_length_corr"] == pytest.approx(
      np.corrcoef([0.9, 0.1, 0.5], [30, 10, 20])[0, 1])
  assert row["judge_answer_agreement"] == pytest.approx(2 / 3)


def test_length_watch_warns_after_patience_steps_in_a_row():
  watch = judge_watch.LengthWatch(0.5, patience=2)
  said = [watch.update({"step": s, "judge_length_corr": c})
          for s, c in enumerate([0.9, float("nan"), 0.6, 0.7, 0.8, 0.9], 1)]
  assert [m is not None for m in said] == [False, False, False, True, False,
                                           True]
  assert "correlation 0.70 at step 4" in said[3]
  assert "judge.watch.length_corr_warn=0.5 for 2 steps" in said[3]


# --- the start-up check's decision ----------------------------------------

def _stored(tmp_path, accuracy):
  report = validation.probe_report(
      {k: [0.5] for k in probes.KINDS}, [1.0])
  judge_validate.off_topic_accuracy(report)["accuracy"] = accuracy
  judge_validate.write(tmp_path, report, "judge validation on 1 examples")


@pytest.mark.parametrize("override, error", [
    ("judge.validation.on_fail=never", "judge.validation.on_fail: 'never' is "
     "not one of 'stop', 'warn', 'unweight', 'skip'"),
    ("judge.validation.min_off_topic_accuracy=1.5",
     "judge.validation.min_off_topic_accuracy: must be in [0, 1]"),
    ("judge.validation.min_wrong_accuracy=-0.1",
     "judge.validation.min_wrong_accuracy: must be in [0, 1]"),
    ("judge.validation.rows=0", "judge.validation.rows: must be > 0"),
    ("judge.watch.patience=0", "judge.watch.patience: must be > 0"),
])
def test_bad_check_settings_name_the_field(override, error):
  with pytest.raises(ValueError) as e:
    config_lib.load(None, [override])
  assert str(e.value).startswith(error), str(e.value)


def test_a_judge_that_cannot_tell_right_from_wrong_is_reported(tmp_path):
  """Off-topic told apart, wrong answers not: the second threshold says
  so, with its interval."""
  report = validation.probe_report(
      {"correct": [0.9, 0.6, 0.5, 0.5], "wrong": [0.95, 0.7, 0.5, 0.6],
       "off_topic": [0.1] * 4, "padded": [0.9] * 4, "no_answer": [0.1] * 4,
       "injection": [0.1] * 4}, [1.0])
  judge_validate.write(tmp_path, report, "judge validation on 4 examples")
  said = []
  judge_validate.check(None, [], config_lib.JudgeValidationConfig(
      on_fail="warn"), None, 0, tmp_path, said.append, RuntimeError,
      reuse=True)
  # One tie of four: 0.5 / 4. Wilson: centre (0.125 + 0.4802) / 1.9604 =
  # 0.3087, half-width 1.96 / 1.9604 * sqrt(0.02734 + 0.06002) = 0.2955.
  assert said[-1].startswith(
      "warning: the judge cannot tell a correct answer from a wrong one: "
      "correct > wrong accuracy 0.12 on 4 examples (95% interval [0.01, "
      "0.60], ties half), below judge.validation.min_wrong_accuracy=0.5")


def test_a_resumed_run_rereads_its_check_and_applies_the_settings(tmp_path):
  """On resume the stored report is judged again, not re-measured (the
  client is never used), under the config's current threshold."""
  _stored(tmp_path, 0.5)
  said = []
  cfg = config_lib.JudgeValidationConfig(on_fail="stop")
  with pytest.raises(RuntimeError, match="on_fail=warn$"):
    judge_validate.check(None, [], cfg, None, 0, tmp_path, said.append,
                         RuntimeError, reuse=True)
  assert "not probed again on resume" in said[0]
  lower = config_lib.JudgeValidationConfig(min_off_topic_accuracy=0.5)
  assert judge_validate.check(None, [], lower, None, 0, tmp_path, said.append,
                              RuntimeError, reuse=True) is not None
  warn = config_lib.JudgeValidationConfig(on_fail="warn")
  judge_validate.check(None, [], warn, None, 0, tmp_path, said.append,
                       RuntimeError, reuse=True)
  assert said[-1].startswith("warning: the judge cannot tell")
  skip = config_lib.JudgeValidationConfig(on_fail="skip")
  assert judge_validate.check(None, [], skip, None, 0, tmp_path / "none",
                              said.append, RuntimeError) is None


def test_unweight_warns_and_tells_the_caller(tmp_path):
  _stored(tmp_path, 0.5)
  said = []
  cfg = config_lib.JudgeValidationConfig(on_fail="unweight")
  report = judge_validate.check(None, [], cfg, None, 0, tmp_path,
                                said.append, RuntimeError, reuse=True)
  assert said[-1].startswith("warning: the judge cannot tell")
  assert said[-1].endswith("on_fail unweight: no judge reward")
  assert judge_validate.falls_short(report, cfg)
  assert not judge_validate.falls_short(
      report, config_lib.JudgeValidationConfig(min_off_topic_accuracy=0.5))
  assert not judge_validate.falls_short(None, cfg)


# --- a stand-in judge and users' probe files --------------------------------

class ReferenceMatcher(Backend):
  """A stand-in for a capable judge model, which cannot run here: it reads
  the graded response and the reference answer out of the judge prompt
  (the last item, after any worked examples) and says whether the
  response's answer block is right by the exact-answer rule; for a mistake
  to look for, the opposite."""
  name, model = "stand-in", "reference-matcher"

  async def judge(self, prompts):
    return [Judgement(self.score(p), 1.0) for p in prompts]

  @staticmethod
  def score(prompt: str) -> float:
    head, _, rest = prompt.rpartition(f"Response:\n{OPEN}\n")
    response, _, after = rest.partition(f"\n{CLOSE}\n")
    reference = head.rpartition("Reference answer:\n")[2].split("\n\n")[0]
    right = rewards.exact_answer_reward(
        f"<answer>{answer_of(response)}</answer>", reference) == 1.0
    criterion = after.partition("Criterion: ")[2].split("\n")[0]
    return float(right != ("a mistake to look for" in criterion))


@pytest.fixture(scope="module")
def stand_in():
  handle = server.run_in_thread(JudgeConfig(host="127.0.0.1", port=0),
                                ReferenceMatcher())
  with JudgeClient(handle.address) as client:
    client.wait_ready(10)
  yield handle.address
  handle.stop()


def _write(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


GOOD = [{"prompt": "What is 2 + 2?", "reference": "4",
         "completion": "<reasoning>add</reasoning>\n<answer>4</answer>",
         "label": 1},
        {"prompt": "What is 2 + 2?", "reference": "4",
         "completion": "<reasoning>add</reasoning>\n<answer>5</answer>",
         "label": 0, "rubric_id": "math-solution"},
        {"prompt": "Capital of France?", "reference": "Paris",
         "better": "<reasoning>known</reasoning>\n<answer>Paris</answer>",
         "worse": "I like trains."}]


@pytest.mark.parametrize("row, error", [
    ({"prompt": "q", "completion": "c", "label": 2},
     "label: must be 0 or 1, got 2"),
    ({"prompt": "q", "completion": "c"}, "label: must be 0 or 1, got nothing"),
    ({"prompt": "q", "completion": "c", "label": 1, "better": "b"},
     "completion: give completion and label, better and worse, or correct, "
     "wrong and off_topic"),
    ({"prompt": "q", "better": "b"}, "worse: missing"),
    ({"completion": "c", "label": 1}, "prompt: missing"),
    ({"prompt": "q", "completion": "c", "label": 1, "score": 3},
     "score: unknown key"),
    ({"prompt": "q", "completion": "c", "label": 1, "rubric_id": "nope"},
     "rubric_id: unknown rubric 'nope'"),
])
def test_bad_probe_rows_name_file_line_and_field(tmp_path, row, error):
  path = _write(tmp_path / "p.jsonl", [GOOD[0], row])
  with pytest.raises(DatasetError) as e:
    judge_validate.load_probes(path, ["math-solution", "general-reasoning"])
  assert str(e.value).startswith(f"{path}:2: {error}"), str(e.value)


def test_user_probes_against_a_running_judge(tmp_path, capsys, stand_in):
  path = _write(tmp_path / "p.jsonl", GOOD)
  assert cli.main(["judge", "validate", "--target", stand_in, "--probes",
                   str(path), "--json"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["judge"] == {"backend": "stand-in",
                             "model": "reference-matcher"}
  assert report["auc"] == 1.0 and report["probes"] == 4
  assert report["accuracy_at_half"]["accuracy"] == 1.0
  assert report["pairs"] == [{"name": "better > worse", "accuracy": 1.0,
                              "low": pytest.approx(0.2065, abs=1e-4),
                              "high": 1.0, "n": 1}]


def test_a_bad_probe_file_is_one_line_and_exit_2(tmp_path, capsys, stand_in):
  path = _write(tmp_path / "p.jsonl", [GOOD[0], {"prompt": "q",
                                                 "completion": "c",
                                                 "label": "yes"}])
  assert cli.main(["judge", "validate", "--target", stand_in, "--probes",
                   str(path)]) == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      f"grar: error: {path}:2: label: must be 0 or 1, got 'yes'")


def test_built_probes_on_the_stand_in_judge_are_all_right(capsys, stand_in):
  assert cli.main(["judge", "validate", "--target", stand_in, "--data",
                   "data/reasoning-sample.jsonl", "--n", "6"]) == 0
  out = capsys.readouterr()
  assert "36/36 probes scored" in out.err
  for pair in ("correct > wrong", "correct > off_topic", "correct >= padded",
               "correct > no_answer", "correct > injection"):
    assert f"{pair:<22}    1.000  [0.610, 1.000]     6" in out.out, out.out
  assert "AUC (correct vs bad probes): 1.000" in out.out


# --- the tiny random judge --------------------------------------------------

@pytest.mark.slow
def test_validate_an_in_process_judge_as_json(capsys):
  code = cli.main(["judge", "validate", "--config", "configs/judge-tiny.yaml",
                   "--data", "data/reasoning-sample.jsonl", "--n", "4",
                   "--json"])
  out = capsys.readouterr()
  assert code == 0, out.err[-2000:]
  report = json.loads(out.out)  # one object, nothing else on stdout
  assert report["judge"]["backend"] == "jax"
  assert (report["rows"], report["probes"], report["unscorable"]) == (4, 24, 0)
  assert [p["name"] for p in report["pairs"]] == [
      "correct > wrong", "correct > off_topic", "correct >= padded",
      "correct > no_answer", "correct > injection"]
  for p in report["pairs"]:
    assert p["n"] == 4 and 0 <= p["low"] <= p["accuracy"] <= p["high"] <= 1
  assert 0 <= report["auc"] <= 1 and report["spread"]["std"] > 0
  assert report["latency_ms"]["p95"] >= report["latency_ms"]["p50"] > 0
  assert "24/24 probes scored" in out.err


TINY = ["--set", "train.batch_size=1", "--set", "rollout.num_generations=2",
        "--set", "rollout.max_new_tokens=8"]


@pytest.mark.e2e
@pytest.mark.slow
def test_the_trainer_stops_on_a_blind_judge(tmp_path):
  proc = processes.grar(
      "train", "--config", "configs/cpu-tiny.yaml", *TINY,
      "--set", "judge.validation.on_fail=stop",
      "--set", f"output_dir={tmp_path}", "--set", "run_name=blind")
  assert proc.returncode == 1, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(
      "grar: error: the judge cannot tell a correct answer from off-topic "
      "text: correct > off_topic accuracy "), last
  assert "on 2 examples (95% interval [" in last
  assert "below judge.validation.min_off_topic_accuracy=0.8" in last
  assert last.endswith("--set judge.validation.on_fail=warn")
  run_dir = tmp_path / "blind"
  report = json.loads((run_dir / judge_validate.REPORT).read_text())
  assert judge_validate.off_topic_accuracy(report)["accuracy"] < 0.8
  assert "correct > off_topic" in (run_dir / judge_validate.TABLE).read_text()
  assert not (run_dir / "metrics.csv").exists()  # stopped before training


@pytest.mark.e2e
@pytest.mark.slow
def test_the_trainer_trains_without_a_blind_judge_s_reward(tmp_path):
  proc = processes.grar(
      "train", "--config", "configs/cpu-tiny.yaml", *TINY,
      "--set", "train.steps=1", "--set", "judge.validation.on_fail=unweight",
      "--set", f"output_dir={tmp_path}", "--set", "run_name=unweighted")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "on_fail unweight: no judge reward" in proc.stderr
  assert "training without the judge's reward" in proc.stderr
  run_dir = tmp_path / "unweighted"
  copy = config_lib.load(run_dir / "config.yaml")
  assert copy.rewards.weights["judge"] == 0.0
  assert copy.rewards.weights["answer"] == 0.5  # the rules keep theirs
  (row,) = metrics.read(run_dir / "metrics.csv")
  # Still scored and logged; the reward is the rules' alone.
  assert row["judge_scored"] == 2
  assert row["reward_mean"] == pytest.approx(
      0.2 * row["format_mean"] + 0.5 * row["answer_mean"])


@pytest.mark.e2e
@pytest.mark.slow
def test_the_trainer_passes_a_capable_judge_and_watches_it(tmp_path,
                                                           stand_in):
  proc = processes.grar(
      "train", "--config", "configs/cpu-tiny.yaml", *TINY,
      "--set", "train.steps=1", "--set", "judge.placement=remote",
      "--set", f"judge.target={stand_in}",
      "--set", "judge.validation.on_fail=stop",
      "--set", f"output_dir={tmp_path}", "--set", "run_name=capable")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "warning: the judge cannot tell" not in proc.stderr
  run_dir = tmp_path / "capable"
  report = json.loads((run_dir / judge_validate.REPORT).read_text())
  assert all(p["accuracy"] == 1.0 for p in report["pairs"]), report["pairs"]
  (row,) = metrics.read(run_dir / "metrics.csv")
  # The stand-in's verdict is the answer rule's, rollout by rollout.
  assert row["judge_answer_agreement"] == 1.0
  assert "judge_length_corr" in row


def test_validating_a_remote_judge_needs_no_jax():
  """The judge's probes and report need neither jax nor the trainer's
  packages; `grar judge validate` (orchestrator) needs no jax."""
  judge_side = processes.python_without(
      "import judge_server.probes, judge_server.validation; print('ok')")
  assert judge_side.returncode == 0, judge_side.stderr[-3000:]
  assert judge_side.stdout.split() == ["ok"]
  trainer_side = processes.python_without(
      "import orchestrator.judge.validate; print('ok')",
      processes.JAX_FAMILY + ("policy_worker",))
  assert trainer_side.returncode == 0, trainer_side.stderr[-3000:]
  assert trainer_side.stdout.split() == ["ok"]
