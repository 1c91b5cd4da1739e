import pathlib

import numpy as np
import pytest

from judge_server.packs import load_packs
from orchestrator.data import templates
from orchestrator.data.dataset import load_jsonl
from orchestrator.rewards import (composite, exact_answer_reward,
                                  group_normalized,
                                  extract_answer, format_reward, rule_rewards)

SAMPLE = (pathlib.Path(__file__).resolve().parents[1] / "data"
          / "reasoning-sample.jsonl")


def _answer(text: str) -> str:
  return f"<reasoning>work</reasoning><answer>{text}</answer>"


@pytest.mark.parametrize("completion,level", [
    ("<reasoning>8 + 4 = 12</reasoning><answer>12</answer>", 1.0),
    ("  <reasoning>\nadd\n</reasoning>\n\n<answer> 12 </answer>\n", 1.0),
    ("Sure! <reasoning>add</reasoning><answer>12</answer>", 0.5),
    ("<reasoning>add</reasoning><answer>12</answer> Hope this helps.", 0.5),
    ("<answer>12</answer><reasoning>add</reasoning>", 0.5),
    ("<reasoning>a</reasoning><answer>12</answer><answer>13</answer>", 0.5),
    ("<reasoning>a</reasoning>text<answer>12</answer>", 0.5),
    ("<reasoning> </reasoning><answer>12</answer>", 0.25),
    ("<answer>12</answer>", 0.25),
    ("<reasoning>a<answer>b</reasoning><answer>12</answer>", 0.25),
    ("<reasoning>add</reasoning><answer>  </answer>", 0.0),
    ("<reasoning>add</reasoning><answer>12", 0.0),
    ("<reasoning>add</reasoning> 12", 0.0),
    ("", 0.0),
])
def test_format_levels(completion, level):
  assert format_reward(completion) == level


def test_the_template_names_the_tags_the_rewards_read():
  prompt = templates.render("  What is 2 + 2?\n")
  for tag in (templates.REASONING_START, templates.REASONING_END,
              templates.ANSWER_START, templates.ANSWER_END):
    assert tag in prompt
  assert prompt.endswith("Question: What is 2 + 2?\n")
  # Parroting the instruction must not earn a format reward.
  assert format_reward(prompt) == 0.0


@pytest.mark.parametrize("completion,answer", [
    ("<answer> 12 </answer>", "12"),
    ("<answer>1</answer> then <answer>\n2\n</answer>", "2"),
    ("<answer></answer>", ""),
    ("<answer>12", None),
    ("no tags", None),
])
def test_extract_answer(completion, answer):
  assert extract_answer(completion) == answer


@pytest.mark.parametrize("got,reference", [
    ("85", "85"), ("1,000", "1000"), ("1000", "1,000"), ("3.50", "3.5"),
    ("$8.75", "8.75"), ("-7", "-7"), ("\u22127", "-7"), ("0.25", "1/4"),
    ("1 / 4", "0.25"), ("40 square metres", "40"), ("100\u00b0C", "100"),
    ("10km", "10"), ("85.", "85"), ("2e3", "2000"), ("50%", "50%"),
    ("50 %", "50%"), ("0.3333", "1/3"), ("0.375", "0.375000001"),
    ("85.0", "85"), ("793546072", "793,546,072"),
])
def test_numbers_match(got, reference):
  assert exact_answer_reward(_answer(got), reference) == 1.0


@pytest.mark.parametrize("got,reference", [
    ("86", "85"), ("0.5", "50%"), ("50%", "0.5"), ("36%", "36"),
    ("75", "-75"), ("1,5", "15"), ("5 + 3", "8"), ("The answer is 85", "85"),
    ("1/0", "0"), ("0.333", "1/3"),
    # Whole numbers are compared exactly: the relative tolerance would
    # pass an off-by-one answer to a large product.
    ("793546073", "793546072"), ("1,000,001", "1000000"),
])
def test_numbers_that_do_not_match(got, reference):
  assert exact_answer_reward(_answer(got), reference) == 0.0


def test_numeric_tolerance_is_adjustable():
  assert exact_answer_reward(_answer("3.14"), "3.14159") == 0.0
  assert exact_answer_reward(_answer("3.14"), "3.14159", rel_tol=1e-3) == 1.0
  assert exact_answer_reward(_answer("0.0000001"), "0") == 1.0
  assert exact_answer_reward(_answer("0.0000001"), "0", abs_tol=0) == 0.0


@pytest.mark.parametrize("got,reference,score", [
    ("Thursday", "thursday", 1.0), ("The mitochondria.", "mitochondria", 1.0),
    ("carbon-dioxide", "Carbon dioxide", 1.0), ("an  Iron", "iron", 1.0),
    ("EAST!", "east", 1.0), ("west", "east", 0.0),
    ("carbon monoxide", "carbon dioxide", 0.0), ("the", "the", 0.0),
])
def test_strings_are_normalised(got, reference, score):
  assert exact_answer_reward(_answer(got), reference) == score


def test_no_answer_block_scores_zero():
  assert exact_answer_reward("<reasoning>85</reasoning> 85", "85") == 0.0


def test_every_shipped_answer_matches_itself():
  examples = load_jsonl(SAMPLE, load_packs())
  assert len(examples) == 72
  for example in examples:
    completion = f"<reasoning>x</reasoning><answer>{example.answer}</answer>"
    scores = {name: reward(completion, example)
              for name, reward in rule_rewards().items()}
    assert scores == {"format": 1.0, "answer": 1.0}, example.id


def test_composite_weights_and_ignores_unweighted():
  components = {"format": np.array([1.0, 0.5, 0.0]),
                "answer": np.array([1.0, 0.0, 1.0]),
                "judge": np.array([np.nan, np.nan, np.nan])}
  got = composite(components, {"format": 0.2, "answer": 1.0, "judge": 0.0})
  np.testing.assert_allclose(got, [1.2, 0.1, 1.0])
  np.testing.assert_allclose(composite(components, {"answer": -1.0}),
                             [-1.0, 0.0, -1.0])


def test_composite_keeps_nan():
  components = {"answer": np.array([1.0, 0.0, 1.0]),
                "judge": np.array([0.5, np.nan, 0.25])}
  got = composite(components, {"answer": 1.0, "judge": 2.0})
  np.testing.assert_allclose(got[[0, 2]], [2.0, 1.5])
  assert np.isnan(got[1])


@pytest.mark.parametrize("components,weights,message", [
    ({"answer": np.ones(3)}, {"answer": 1.0, "judge": 1.0},
     "'judge' names no reward component"),
    ({"answer": np.ones(3)}, {"answer": float("nan")}, "must be finite"),
    ({"answer": np.ones(3)}, {"answer": 0.0}, "every weight is 0"),
    ({"answer": np.ones(3), "format": np.ones(2)},
     {"answer": 1.0, "format": 1.0}, "one N"),
    ({"answer": np.ones((3, 1))}, {"answer": 1.0}, "one N"),
])
def test_composite_refuses(components, weights, message):
  with pytest.raises(ValueError, match=message):
    composite(components, weights)


def test_group_normalized_standardises_each_component_in_its_group():
  comps = {"answer": np.array([1.0, 0.0, 1.0, 0.0]),
           "judge": np.array([0.50, 0.52, np.nan, 0.54])}
  z = group_normalized(comps, 4)
  # answer: mean 0.5, std 0.5 -> +-1; judge: scored three, mean 0.52.
  np.testing.assert_allclose(z["answer"], [1, -1, 1, -1], atol=1e-4)
  std = np.std([0.50, 0.52, 0.54])
  np.testing.assert_allclose(z["judge"][[0, 1, 3]],
                             [-0.02 / std, 0.0, 0.02 / std], atol=1e-3)
  assert np.isnan(z["judge"][2])  # unscorable stays unscorable
  # Weighted after normalising: the judge's tiny spread now counts as much
  # as the answer's large one.
  total = composite(z, {"answer": 1.0, "judge": 1.0})
  assert np.isnan(total[2]) and abs(total[3]) > 0.2
