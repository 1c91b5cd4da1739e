"""Every rubric pack shipped with the judge server loads and is complete: a
unique id, a version, essentials to earn reward and pitfalls to lose it."""

import pathlib

import pytest
import yaml

from judge_server.packs import PACK_DIR, load_pack, load_packs
from protos.rubric import Rubric, RubricError

PATHS = sorted(PACK_DIR.glob("*.yaml"))
DOMAINS = {"general-reasoning", "math-solution", "science-explanation",
           "medical-answer", "chemistry-problem", "legal-analysis",
           "robotics-planning", "creative-writing"}


def test_the_shipped_packs_cover_the_domains_with_unique_ids():
  ids = [load_pack(p).id for p in PATHS]
  assert len(ids) == len(set(ids))
  assert set(ids) >= DOMAINS
  assert set(load_packs()) == set(ids)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_pack_is_complete(path: pathlib.Path):
  raw = yaml.safe_load(path.read_text())
  # Written out, not defaulted: a pack is read by people choosing one.
  assert isinstance(raw.get("version"), int) and raw["version"] >= 1
  assert raw.get("description", "").strip()
  for item in raw["criteria"]:
    assert set(item) == {"text", "category", "weight", "polarity"}, item
  rubric = load_pack(path)
  assert rubric.id == path.stem
  categories = [c.category for c in rubric.criteria]
  assert "essential" in categories and "pitfall" in categories
  for c in rubric.criteria:
    # A pitfall is a mistake: meeting it must lower the score.
    assert (c.category == "pitfall") == (c.polarity == "negative"), c.text
  texts = [c.text for c in rubric.criteria]
  assert len(texts) == len(set(texts))


def test_duplicate_ids_across_packs_are_refused(tmp_path):
  for name in ("a", "b"):
    (tmp_path / f"{name}.yaml").write_text(
        "id: same\nversion: 1\ncriteria:\n"
        "  - {text: t, category: essential, weight: 1}\n")
  with pytest.raises(RubricError, match="b.yaml: id: 'same' is defined twice"):
    load_packs(tmp_path)


PACK = ("id: ex\nversion: 1\ncriteria:\n"
        "  - {text: right answer, category: essential, weight: 5}\n"
        "  - {text: no answer, category: pitfall, weight: 2}\n")
EXAMPLE = ("  - question: What is 6 * 7?\n    reference: 42\n"
           "    response: <answer>42</answer>\n")


def test_pack_examples_load_with_yes_no_and_scores(tmp_path):
  path = tmp_path / "ex.yaml"
  path.write_text(PACK + "examples:\n" + EXAMPLE + "    answers: [yes, no]\n"
                  + EXAMPLE + "    answers: [3, 'No']\n")
  rubric = load_pack(path)
  assert [e.answers for e in rubric.examples] == [(1.0, 0.0), (3 / 9, 0.0)]
  first = rubric.examples[0]
  assert (first.question, first.reference, first.response) == (
      "What is 6 * 7?", "42", "<answer>42</answer>")


@pytest.mark.parametrize("examples, match", [
    (EXAMPLE + "    answers: [yes, no]\n    score: 9\n",
     r"examples\[0\]\.score: unknown key \(known: question, reference, "
     r"response, answers\)"),
    (EXAMPLE + "    answers: [yes]\n",
     r"examples\[0\]\.answers: 1 answers for 2 criteria"),
    (EXAMPLE + "    answers: [yes, 10]\n",
     r"examples\[0\]\.answers\[1\]: must be yes, no or a score 0-9, got 10"),
    (EXAMPLE + "    answers: [yes, maybe]\n",
     r"examples\[0\]\.answers\[1\]: must be yes, no or a score 0-9, got "
     r"'maybe'"),
    (EXAMPLE + "    answers: yes\n",
     r"examples\[0\]\.answers: must be a list, one per criterion"),
    ("  - {question: q, answers: [yes, no]}\n",
     r"examples\[0\]\.response: missing"),
    ("  - {question: ' ', response: r, answers: [yes, no]}\n",
     r"examples\[0\]\.question: must not be empty"),
    ("  - {question: q, response: [r], answers: [yes, no]}\n",
     r"examples\[0\]\.response: must be a string"),
    ("  - just text\n", r"examples\[0\]: must be a mapping"),
    ((EXAMPLE + "    answers: [yes, no]\n") * 4,
     r"examples: 4 examples, more than 3"),
])
def test_bad_pack_examples_are_refused_with_the_key_named(
    tmp_path, examples, match):
  path = tmp_path / "ex.yaml"
  path.write_text(PACK + "examples:\n" + examples)
  with pytest.raises(RubricError, match=f"ex.yaml.{match}"):
    load_pack(path)


def test_examples_are_a_packs_own(tmp_path):
  """A rubric from a dataset row or a request carries no examples."""
  with pytest.raises(RubricError, match=r"rubric\.examples: unknown key"):
    Rubric.from_dict({"criteria": [
        {"text": "a", "category": "essential", "weight": 1}],
        "examples": []})
  path = tmp_path / "ex.yaml"
  path.write_text(PACK + "examples: {question: q}\n")
  with pytest.raises(RubricError, match=r"ex.yaml.examples: must be a list"):
    load_pack(path)
