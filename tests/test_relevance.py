"""The relevance reward (orchestrator/relevance.py) on cases computed by
hand here, independently of the implementation: idf, cosine, the length
and repetition factors, the edges that must score 0 and not NaN, and its
config."""

import math
import pathlib

import numpy as np
import pytest

from grar_config import strict
from judge_server.packs import load_packs
from orchestrator import config as config_lib
from orchestrator.data.dataset import Example, load_jsonl
from orchestrator.relevance import Relevance, novelty, tokens
from orchestrator.rewards import composite, extract_reasoning, rule_rewards
from orchestrator.rundir import grpo_records

SAMPLE = (pathlib.Path(__file__).resolve().parents[1] / "data"
          / "reasoning-sample.jsonl")
# Two documents. what, is, the, of: in both (df 2); boiling, point, water,
# capital, france: in one (df 1); anything else: in none (df 0).
CORPUS = ["What is the boiling point of water?",
          "What is the capital of France?"]
IDF_BOTH = math.log(3 / 3) + 1    # 1.0
IDF_ONE = math.log(3 / 2) + 1     # 1.405...
IDF_NONE = math.log(3 / 1) + 1    # 2.098...


def _example(prompt, answer="", id="x"):
  return Example(id, "general", prompt, answer, None, "general-reasoning")


def _completion(reasoning, answer="x"):
  return f"<reasoning>{reasoning}</reasoning>\n<answer>{answer}</answer>"


@pytest.fixture
def scorer():
  return Relevance.fit(CORPUS, max_tokens=64, repeat_ngram=3)


def test_tokens_are_lower_case_runs_of_letters_and_digits():
  assert tokens("What is 47 + 38? It's 85_000.") == [
      "what", "is", "47", "38", "it", "s", "85", "000"]
  assert tokens("  ... ?! ") == []


def test_idf_by_hand(scorer):
  assert scorer.num_docs == 2
  assert scorer.idf("what") == pytest.approx(IDF_BOTH)
  assert scorer.idf("of") == pytest.approx(IDF_BOTH)
  assert scorer.idf("water") == pytest.approx(IDF_ONE)
  assert scorer.idf("france") == pytest.approx(IDF_ONE)
  assert scorer.idf("paris") == pytest.approx(IDF_NONE)


def test_cosine_by_hand(scorer):
  # Question 1 and reference "100": the target bag is what, is, the, of
  # (idf 1), boiling, point, water (IDF_ONE) and 100 (IDF_NONE), once each.
  # The reasoning "Water boils at 100": water (IDF_ONE), boils, at, 100
  # (IDF_NONE); it shares water and 100.
  a, u = IDF_ONE, IDF_NONE
  dot = a * a + u * u
  want = dot / (math.sqrt(a * a + 3 * u * u)
                * math.sqrt(4 * 1.0 + 3 * a * a + u * u))
  example = _example(CORPUS[0], "100")
  got = scorer.score(_completion("Water boils at 100."), example)
  assert got == pytest.approx(want)
  # 6.379 / (3.897 * 3.785); 4 words, no repeated trigram: no factor < 1.
  assert got == pytest.approx(0.43243, abs=1e-5)


def test_restating_the_question_and_answer_is_full_credit(scorer):
  example = _example(CORPUS[1], "Paris")
  assert scorer.score(_completion("what is the capital of France: Paris"),
                      example) == pytest.approx(1.0)


def test_on_topic_beats_off_topic(scorer):
  example = _example(CORPUS[1], "Paris")
  on = scorer.score(_completion("The capital of France is Paris."), example)
  off = scorer.score(_completion("Water boils at one hundred degrees."),
                     example)
  assert on > 0.5 and off == 0.0  # off shares no word with the target
  # Off-topic words dilute on-topic ones: they are not dropped.
  mixed = scorer.score(_completion(
      "The capital of France is Paris. Water boils at one hundred degrees."),
      example)
  assert off < mixed < on


def test_length_factor_by_hand():
  # "paris" ten times, L0 = 5, no repetition factor: the cosine of one
  # word (scale does not change it) times 5/10. Target: what, is, the, of
  # (idf 1), capital, france (IDF_ONE), paris (IDF_NONE).
  scorer = Relevance.fit(CORPUS, max_tokens=5, repeat_ngram=0)
  cos = IDF_NONE / math.sqrt(4 + 2 * IDF_ONE ** 2 + IDF_NONE ** 2)
  example = _example(CORPUS[1], "Paris")
  assert scorer.score(_completion("Paris " * 10), example) == pytest.approx(
      cos * 5 / 10)
  assert scorer.score(_completion("Paris " * 5), example) == pytest.approx(
      cos)
  # With trigrams: 8 trigrams, 1 distinct.
  scorer = Relevance.fit(CORPUS, max_tokens=5, repeat_ngram=3)
  assert scorer.score(_completion("Paris " * 10), example) == pytest.approx(
      cos * 5 / 10 * 1 / 8)


def test_novelty_by_hand():
  assert novelty(["a", "b", "c", "d"], 3) == 1.0
  # A 5-word sentence said 4 times: 18 trigrams, the 5 of the sentence.
  assert novelty("a b c d e".split() * 4, 3) == pytest.approx(5 / 18)
  assert novelty(["a", "a"], 3) == 1.0  # too short to measure
  assert novelty(["a"] * 9, 0) == 1.0   # off
  assert novelty(["a", "a", "b", "b"], 1) == pytest.approx(2 / 4)


def test_padding_scores_below_the_same_focused_reasoning(scorer):
  example = _example(CORPUS[1], "Paris")
  focused = "The capital of France is Paris."
  base = scorer.score(_completion(focused), example)
  repeated = scorer.score(_completion(" ".join([focused] * 4)), example)
  # Repeating leaves the cosine as it was; only the novelty falls:
  # 24 words, 22 trigrams, 6 distinct (the sentence's 6 cyclic trigrams).
  assert repeated == pytest.approx(base * 6 / 22)
  filler = ("Let me think about this carefully and step by step, because it "
            "is important to be thorough and consider every single detail "
            "before I write down anything at all. ") * 3
  padded = scorer.score(_completion(focused + " " + filler), example)
  assert padded < base / 2
  long_on_topic = Relevance.fit(CORPUS, max_tokens=10, repeat_ngram=0)
  words = "capital France Paris " * 10  # 30 words, all on topic
  assert long_on_topic.score(_completion(words), example) == pytest.approx(
      long_on_topic.score(_completion("capital France Paris"), example)
      * 10 / 30)


@pytest.mark.parametrize("completion", [
    "<answer>Paris</answer>",                          # no reasoning block
    "The capital of France is Paris.",                 # no tags at all
    "<reasoning>The capital of France is Paris",       # cut before </reasoning>
    "<reasoning>  </reasoning><answer>Paris</answer>",  # blank
    "<reasoning>... ?! --</reasoning><answer>Paris</answer>",  # no words
])
def test_no_reasoning_words_scores_zero(scorer, completion):
  assert scorer.score(completion, _example(CORPUS[1], "Paris")) == 0.0


def test_empty_or_unknown_vocabulary_scores_zero_not_nan(scorer):
  focused = _completion("The capital of France is Paris.")
  example = _example(CORPUS[1], "Paris")
  for empty in (Relevance.fit([]), Relevance.fit(["?!", "..."])):
    assert empty.score(focused, example) == 0.0
  # Words no prompt has and the target lacks.
  assert scorer.score(_completion("zyx qwv plonk"), example) == 0.0
  # A question and reference without a word.
  assert scorer.score(focused, _example("???", "")) == 0.0
  assert scorer.score(focused, _example("?", "!")) == 0.0


def test_the_reference_counts_when_given(scorer):
  reasoning = _completion("So it is Paris.")
  with_ref = scorer.score(reasoning, _example(CORPUS[1], "Paris"))
  without = scorer.score(reasoning, _example(CORPUS[1], ""))
  assert with_ref > without > 0  # "is" is in the question


def test_extract_reasoning_joins_well_formed_blocks():
  assert extract_reasoning("<reasoning>a</reasoning> x <reasoning>b"
                           "</reasoning>") == "a\nb"
  assert extract_reasoning("<reasoning>a") is None
  assert extract_reasoning("<answer>1</answer>") is None


def test_shipped_examples_score_in_range_and_relevance_is_not_a_rule():
  examples = load_jsonl(SAMPLE, load_packs())
  scorer = Relevance.fit([ex.prompt for ex in examples])
  for ex in examples:
    for text in (_completion(f"{ex.prompt} {ex.answer}", ex.answer),
                 _completion("Let me think. " * 30, ex.answer),
                 f"<answer>{ex.answer}</answer>"):
      score = scorer.score(text, ex)
      assert 0.0 <= score <= 1.0 and math.isfinite(score), (ex.id, text)
  # The trainer adds it beside the rules; the rules stay (str, Example).
  assert "relevance" not in rule_rewards()


def test_config_defaults_and_one_line_errors(tmp_path):
  rewards = config_lib.RewardsConfig()
  assert rewards.weights == {"format": 0.2, "answer": 0.5, "judge": 0.3}
  assert (rewards.relevance_max_tokens, rewards.relevance_repeat_ngram) == (
      64, 3)
  assert config_lib.RewardsConfig(
      weights={"answer": 1.0, "relevance": 0.5}).weights["relevance"] == 0.5
  cls = config_lib.RunConfig
  for override, message in [
      ("rewards.relevance_max_tokens=0",
       "rewards.relevance_max_tokens: must be > 0, got 0"),
      ("rewards.relevance_repeat_ngram=-1",
       "rewards.relevance_repeat_ngram: must be >= 0 (0: no repetition "
       "penalty), got -1"),
      ("rewards.weights={relevance: -1}",
       "rewards.weights.relevance: must be >= 0")]:
    with pytest.raises(strict.ConfigError) as e:
      strict.load(cls, None, [override])
    assert str(e.value) == message


def test_relevance_gets_metrics_columns_and_a_weighted_composite():
  components = {"format": np.array([1.0, 0.0]),
                "answer": np.array([1.0, 0.0]),
                "relevance": np.array([0.75, 0.25]),
                "judge": np.array([0.5, 0.5])}
  np.testing.assert_allclose(
      composite(components, {"answer": 1.0, "relevance": 2.0}), [2.5, 0.5])
  assert grpo_records.summary("relevance", components["relevance"]) == {
      "relevance_mean": 0.5, "relevance_std": 0.25}
