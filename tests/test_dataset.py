import json
import pathlib

import pytest

from judge_server.packs import load_packs
from orchestrator.data.dataset import DatasetError, Example, load_jsonl

SAMPLE = (pathlib.Path(__file__).resolve().parents[1] / "data"
          / "reasoning-sample.jsonl")
KNOWN = ("general-reasoning", "math-solution", "science-explanation")
RUBRIC = {"criteria": [{"text": "Gives 4", "category": "essential",
                        "weight": 5}]}


def _row(**fields) -> dict:
  row = {"id": "q1", "prompt": "What is 2 + 2?", "answer": "4",
         "rubric_id": "math-solution"}
  row.update(fields)
  return {k: v for k, v in row.items() if v is not None}


def _write(tmp_path, *lines) -> pathlib.Path:
  path = tmp_path / "data.jsonl"
  path.write_text("".join(
      (line if isinstance(line, str) else json.dumps(line)) + "\n"
      for line in lines))
  return path


def _error(tmp_path, *lines, known=KNOWN) -> str:
  path = _write(tmp_path, *lines)
  with pytest.raises(DatasetError) as e:
    load_jsonl(path, known)
  return str(e.value).removeprefix(f"{path}:")


def test_shipped_sample_loads():
  examples = load_jsonl(SAMPLE, load_packs())
  assert len(examples) >= 60
  assert {e.domain for e in examples} == {"math", "science", "everyday"}
  assert len({e.id for e in examples}) == len(examples)
  for e in examples:
    assert (e.rubric is None) != (e.rubric_id == "")
  inline = next(e for e in examples if e.id == "math-001")
  assert inline.rubric.criteria[0].text == "States that the sum is 85"
  assert inline.rubric.criteria[2].polarity == "negative"
  by_pack = next(e for e in examples if e.id == "math-003")
  assert (by_pack.rubric, by_pack.rubric_id) == (None, "math-solution")


def test_fields_defaults_and_blank_lines(tmp_path):
  path = _write(tmp_path, "", _row(), "   ",
                _row(id="q2", domain="maths", rubric_id=None, rubric=RUBRIC))
  first, second = load_jsonl(path, KNOWN)
  assert first == Example(id="q1", domain="general", prompt="What is 2 + 2?",
                          answer="4", rubric=None, rubric_id="math-solution")
  assert second.domain == "maths"
  assert second.rubric.criteria[0].weight == 5
  assert second.rubric_id == ""


def test_neither_rubric_nor_id_takes_the_general_pack(tmp_path):
  path = _write(tmp_path, _row(rubric_id=None))
  (example,) = load_jsonl(path, KNOWN)
  assert (example.rubric, example.rubric_id) == (None, "general-reasoning")


def test_neither_rubric_nor_id_without_the_general_pack(tmp_path):
  assert _error(tmp_path, _row(rubric_id=None), known=["math-solution"]) == (
      "1: rubric_id: missing; give rubric or rubric_id (the default "
      "'general-reasoning' is not a known rubric)")


@pytest.mark.parametrize("line,message", [
    ('{"id": "q1", "prompt": ', "row: invalid JSON: Expecting value"),
    ("[1, 2]", "row: must be a JSON object, got list"),
    (_row(id=None), "id: missing"),
    (_row(id=""), "id: empty"),
    (_row(id=7), "id: must be a string, got int"),
    (_row(prompt=None), "prompt: missing"),
    (_row(prompt="  \n"), "prompt: empty"),
    (_row(prompt=["What?"]), "prompt: must be a string, got list"),
    (_row(answer=None), "answer: missing"),
    (_row(answer=""), "answer: empty"),
    (_row(answer=4), "answer: must be a string, got int"),
    (_row(domain=3), "domain: must be a string, got int"),
    (_row(Answer="4"), "Answer: unknown key (known: id, domain, prompt, "
                       "answer, rubric, rubric_id, task, metadata)"),
    (_row(rubric=RUBRIC), "rubric: give rubric or rubric_id, not both"),
    (_row(rubric_id="maths"), "rubric_id: unknown rubric 'maths' (known: "
                              "general-reasoning, math-solution, "
                              "science-explanation)"),
    (_row(rubric_id=""), "rubric_id: empty"),
    (_row(rubric_id=None, rubric={"criteria": [
        {"text": "Gives 4", "category": "essential", "weight": 5},
        {"text": "Guesses", "category": "pitfall", "weight": -1}]}),
     "rubric.criteria[1].weight: must be a finite number > 0"),
    (_row(rubric_id=None, rubric={"criteria": []}),
     "rubric.criteria: a rubric needs at least one criterion"),
    (_row(rubric_id=None, rubric="math"),
     "rubric: must be a mapping with 'criteria'"),
])
def test_bad_row_names_line_and_field(tmp_path, line, message):
  assert _error(tmp_path, _row(id="q0"), "", line).startswith(f"3: {message}")


def test_duplicate_id_names_the_first_line(tmp_path):
  assert _error(tmp_path, _row(), _row(id="q2"), _row()) == (
      "3: id: duplicate 'q1' (first on line 1)")


def test_not_utf8(tmp_path):
  path = tmp_path / "data.jsonl"
  path.write_bytes(json.dumps(_row()).encode() + b"\n\xff\xfe\n")
  with pytest.raises(DatasetError, match=r"data.jsonl:2: row: not UTF-8"):
    load_jsonl(path, KNOWN)


@pytest.mark.parametrize("text", ["", "\n  \n\n"])
def test_empty_file(tmp_path, text):
  path = tmp_path / "data.jsonl"
  path.write_text(text)
  with pytest.raises(DatasetError) as e:
    load_jsonl(path, KNOWN)
  assert str(e.value) == f"{path}: no examples (the file is empty or blank)"


def test_missing_file(tmp_path):
  with pytest.raises(DatasetError, match="nope.jsonl: cannot read: No such"):
    load_jsonl(tmp_path / "nope.jsonl", KNOWN)
