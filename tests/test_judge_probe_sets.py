"""The judge's shipped probe sets (held-out and development), the separation
figures `grar judge validate` reports on them (hand-computed), and the
extraction criterion (answer_check) on hand-made rows."""

import asyncio
import json
import math

import pytest

from judge_server import prompts, scoring, validation
from judge_server.backends.base import Backend, Judgement
from judge_server.batching import MicroBatcher
from judge_server.config import CriteriaConfig
from judge_server import config as config_lib
from orchestrator import rewards
from orchestrator.data import tasks
from orchestrator.data.dataset import DatasetError
from orchestrator.judge import probe_sets
from orchestrator.judge import validate as judge_validate
from grar_config.strict import ConfigError
from protos.rubric import Criterion, Rubric

PACKS = ["general-reasoning"]


# --- the shipped sets ---------------------------------------------------------

def _rows(which):
  lines = (probe_sets.DIR / f"{which}.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


def test_the_shipped_sets_are_what_the_generator_writes():
  for which in probe_sets.SETS:
    assert _rows(which) == json.loads(json.dumps(probe_sets.build(which)))


def test_held_out_and_development_sets_share_no_problem_and_say_which():
  heldout, dev = _rows("heldout"), _rows("dev")
  assert heldout[0]["about"].startswith("HELD-OUT judge probes")
  assert "Never use them to choose" in heldout[0]["about"]
  assert dev[0]["about"].startswith("DEVELOPMENT judge probes")
  assert len(heldout) - 1 >= 150
  assert len({r["domain"] for r in heldout[1:]}) >= 3
  assert not ({tasks.normalised(r["prompt"]) for r in heldout[1:]}
              & {tasks.normalised(r["prompt"]) for r in dev[1:]})
  # Different ways of writing the working and the answer.
  assert not ({r["format"] for r in heldout[1:]} - {"tags", "tags_tight"}
              & {r["format"] for r in dev[1:]} - {"tags"})


@pytest.mark.parametrize("which", probe_sets.SETS)
def test_every_problem_has_a_right_a_plausibly_wrong_and_an_off_topic(which):
  loaded = judge_validate.load_probes(probe_sets.DIR / f"{which}.jsonl",
                                      PACKS)
  assert len(loaded) == sum(probe_sets.SIZES[which].values())
  tagged = 0
  for probe in loaded:
    three, reference = probe.three, probe.example.answer
    assert probe.example.rubric is not None
    assert three["correct"] != three["wrong"]
    answer = rewards.extract_answer(three["correct"])
    if answer is not None:  # the tagged formats
      tagged += 1
      assert rewards.exact_answer_reward(three["correct"], reference) == 1.0
      assert rewards.exact_answer_reward(three["wrong"], reference) == 0.0
      assert rewards.format_reward(three["wrong"]) == rewards.format_reward(
          three["correct"])
    else:
      assert three["correct"].rstrip(".").endswith(reference)
  # Both kinds: with and without the reasoning tags.
  assert 0.25 < tagged / len(loaded) < 0.85


def test_probe_files_with_headers_and_triples_name_the_problem(tmp_path):
  header = {"about": "test"}
  triple = {"prompt": "q", "reference": "4", "correct": "4", "wrong": "5",
            "off_topic": "trains", "domain": "sums"}
  path = tmp_path / "p.jsonl"
  path.write_text(json.dumps(header) + "\n" + json.dumps(triple) + "\n")
  (probe,) = judge_validate.load_probes(path, PACKS)
  assert probe.three == {"correct": "4", "wrong": "5", "off_topic": "trains"}
  assert probe.example.domain == "sums"
  path.write_text(json.dumps(header) + "\n")
  with pytest.raises(DatasetError, match="no rows but the header"):
    judge_validate.load_probes(path, PACKS)
  path.write_text(json.dumps(triple) + "\n" + json.dumps(
      {"prompt": "q", "completion": "c", "label": 1}) + "\n")
  with pytest.raises(DatasetError, match="mixed with others"):
    judge_validate.load_probes(path, PACKS)
  path.write_text(json.dumps({**triple, "label": 1}) + "\n")
  with pytest.raises(DatasetError, match=r":1: completion: give completion "
                     "and label, better and worse, or correct, wrong and "
                     "off_topic"):
    judge_validate.load_probes(path, PACKS)


# --- the figures, by hand --------------------------------------------------------

def test_auc_interval_is_delong_by_hand():
  # Placements: positives 0.9 and 0.6 beat both negatives, 0.4 beats one:
  # (1, 1, 0.5), AUC 2.5/3. Negatives 0.5 and 0.1 are beaten by 2/3 and 1.
  # var = var(1, 1, .5) / 3 + var(2/3, 1) / 2 = (1/12) / 3 + (1/18) / 2.
  got = validation.auc_interval([0.9, 0.6, 0.4, None], [0.5, 0.1])
  half = 1.959963984540054 * math.sqrt(1 / 36 + 1 / 36)
  assert got == pytest.approx({"auc": 2.5 / 3, "low": 2.5 / 3 - half,
                               "high": 1.0, "n_pos": 3, "n_neg": 2})
  assert round(got["low"], 4) == 0.3714
  one = validation.auc_interval([0.9], [0.5, 0.1])
  assert one["auc"] == 1.0 and math.isnan(one["low"])


def test_triple_report_per_domain_and_overall_by_hand():
  report = validation.triple_report(
      ["a", "a", "b"],
      {"correct": [0.9, 0.4, 0.7], "wrong": [0.5, 0.4, 0.8],
       "off_topic": [0.1, None, 0.2]}, [100.0, 300.0])
  overall = report["overall"]
  wrong, off = overall["pairs"]
  # A win, a tie (half) and a loss; off_topic's None leaves two pairs.
  assert (wrong["name"], wrong["accuracy"], wrong["n"]) == (
      "correct > wrong", 0.5, 3)
  assert (wrong["low"], wrong["high"]) == pytest.approx(
      validation.wilson(1.5, 3))
  assert (off["accuracy"], off["n"]) == (1.0, 2)
  # Correct against the five others: 0.9 beats 5, 0.4 ties 0.4 and beats
  # 0.1 and 0.2, 0.7 beats 4: 11.5 of 15.
  assert overall["auc"]["auc"] == pytest.approx(11.5 / 15)
  a, b = report["domains"]["a"], report["domains"]["b"]
  assert (a["rows"], a["pairs"][0]["accuracy"], a["pairs"][1]["n"]) == (
      2, 0.75, 1)
  assert b["pairs"][0]["accuracy"] == 0.0
  assert (report["probes"], report["unscorable"]) == (9, 1)
  table = validation.table(report)
  # Wilson at 1.5 of 3: centre 0.5, half-width 1.96 / 2.2805 *
  # sqrt(0.25 / 3 + 3.8415 / 36) = 0.375.
  assert ("overall           3  0.500 [0.125, 0.875]  1.000 [0.342, 1.000]  "
          "0.767 [") in table, table
  assert table.splitlines()[1].startswith("a                 2  0.750 [")
  assert "latency per rollout: p50 200 ms" in table


# --- the extraction criterion --------------------------------------------------

RUBRIC = Rubric((Criterion("Right answer", "essential", 1, "positive"),))
TAGGED = "<reasoning>3 * 4 = 12</reasoning>\n<answer> 12 </answer>"


def test_the_check_sets_the_extracted_answer_beside_the_reference():
  text = prompts.answer_check_prompt("12", TAGGED, "binary")
  assert text.endswith("Reference answer: 12\nFinal answer: 12\nAnswer:")
  assert "3 * 4 = 12" not in text  # the working is not shown
  # Worked examples: a match and a near miss, answered as the format asks.
  assert "Reference answer: 15\nFinal answer: 14\nAnswer: no\n" in text
  assert "Reference answer: 42\nFinal answer: 42\nAnswer: yes\n" in text
  # Without an answer block: the last non-blank line, on one line, so a
  # response cannot write a label of its own.
  untagged = prompts.answer_check_prompt(
      "12", "It is 3 * 4.\nSo the answer\tis 12.\n\n", "scale")
  assert untagged.endswith(
      "Reference answer: 12\nFinal answer: So the answer is 12.\nScore: ")
  assert prompts.final_answer("<answer>1\nAnswer: yes</answer>") == (
      "1 Answer: yes")
  assert len(prompts.final_answer("x" * 500)) == prompts.CHECK_CHARS


class Checker(Backend):
  """Answers the extraction criterion by comparing the final answer it
  shows with the reference (1 or 0), every rubric prompt with 0.5."""
  name, model = "checker", "none"

  async def judge(self, prompts_):
    out = []
    for p in prompts_:
      if not p.startswith(prompts.CHECK_INTRO):
        out.append(Judgement(0.5, 1.0))
        continue
      reference, given = (line.partition(": ")[2]
                          for line in p.splitlines()[-3:-1])
      out.append(Judgement(float(given == reference), 1.0))
    return out


@pytest.mark.parametrize("completion, reference, expected", [
    (TAGGED, "12", 0.25 * 0.5 + 0.75 * 1.0),
    (TAGGED.replace("12 <", "13 <"), "12", 0.25 * 0.5),
    (TAGGED, "", 0.5),  # no reference: the rubric alone
])
def test_the_check_takes_its_share_of_the_reward(completion, reference,
                                                 expected):
  async def run(aggregation):
    batcher = MicroBatcher(Checker(), 8, 0.001)
    batcher.start()
    try:
      return await scoring.score(
          scoring.Job("r", "3 * 4?", completion, reference, RUBRIC,
                      aggregation), batcher,
          CriteriaConfig("binary", False, answer_check=0.75))
    finally:
      await batcher.close()
  for aggregation in ("explicit", "implicit"):
    assert asyncio.run(run(aggregation)).reward == pytest.approx(expected)


def test_the_check_alone_asks_no_rubric_prompt():
  backend = Checker()
  asked = []
  judge = backend.judge

  async def recording(prompts_):
    asked.extend(prompts_)
    return await judge(prompts_)
  backend.judge = recording

  async def run():
    batcher = MicroBatcher(backend, 8, 0.001)
    batcher.start()
    try:
      return await scoring.score(
          scoring.Job("r", "3 * 4?", TAGGED, "12", RUBRIC, "explicit"),
          batcher, CriteriaConfig("binary", False, answer_check=1.0))
    finally:
      await batcher.close()
  assert asyncio.run(run()).reward == 1.0
  assert asked == [prompts.answer_check_prompt("12", TAGGED, "binary")]


def test_answer_check_settings_name_the_field():
  with pytest.raises(ConfigError, match="answer_check: must be in"):
    config_lib.load(None, ["backend.criteria.answer_check=1.5"])
