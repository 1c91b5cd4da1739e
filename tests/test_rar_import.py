"""Rubrics-as-Rewards import: RaR items become grar criteria with the sign
made explicit, through the module and through `grar judge import-rar`, on a
small fixture in RaR's row shape (tests/data/rar-sample.jsonl)."""

import json
import pathlib

import pytest

from judge_server import aggregation, rar, server
from judge_server.packs import load_pack, load_packs
from protos.rubric import Rubric
from orchestrator import cli
from orchestrator.data import dataset

SAMPLE = pathlib.Path(__file__).resolve().parent / "data" / "rar-sample.jsonl"


def _rows() -> list[dict]:
  return [json.loads(line) for line in SAMPLE.read_text().splitlines()]


def test_items_map_to_criteria_with_explicit_polarity():
  imported = rar.convert(_rows()[0]["rubric"])
  assert imported.rubric["criteria"] == [
      {"text": "Identifies acute aortic dissection as the most likely "
               "diagnosis.", "category": "essential", "weight": 5,
       "polarity": "positive"},
      {"text": "Recommends CT angiography of the chest as the first imaging "
               "test in a stable patient.", "category": "important",
       "weight": 4, "polarity": "positive"},
      {"text": "Links the unequal arm pressures to involvement of the aortic "
               "arch branches.", "category": "optional", "weight": 2,
       "polarity": "positive"},
      # The mistake itself: satisfying it must cost its weight.
      {"text": "Does not mention that thrombolysis is contraindicated if "
               "dissection is suspected.", "category": "pitfall",
       "weight": 2, "polarity": "negative"},
      # Written as the good behaviour: satisfying it earns the weight.
      {"text": "Avoids relying on an ECG alone to rule out the diagnosis.",
       "category": "pitfall", "weight": 1, "polarity": "positive"},
  ]
  assert imported.flipped == (4,)


def test_prefix_case_and_spacing_are_tolerated():
  c, flipped = rar.criterion(_rows()[1]["rubric"][1], "item")
  assert (c["category"], c["text"], flipped) == (
      "important", "Explains that hydrogen bonding fixes the molecules in an "
      "open lattice.", False)


def test_a_satisfied_pitfall_lowers_the_reward():
  rubric = Rubric.from_dict(rar.convert(_rows()[1]["rubric"]).rubric)
  clean = aggregation.explicit(rubric, [1.0, 1.0, 0.0])
  fooled = aggregation.explicit(rubric, [1.0, 1.0, 1.0])
  assert clean == 1.0
  assert fooled == pytest.approx((5 + 3 - 2) / 8)


BAD = [
    ([{"description": "States the answer.", "weight": 5}],
     "rubric[0].description: does not start with a category"),
    ([{"description": "Essential Criteria: x", "weight": 0}],
     "rubric[0].weight: must be a non-zero number, got 0"),
    ([{"description": "Essential Criteria: x", "weight": "5"}],
     "rubric[0].weight: must be a non-zero number, got '5'"),
    ([{"description": "Essential Criteria: x", "weight": True}],
     "rubric[0].weight: must be a non-zero number, got True"),
    ([{"description": "Essential Criteria:   ", "weight": 5}],
     "rubric[0].description: nothing after the category"),
    ([{"title": "t", "weight": 5}],
     "rubric[0].description: must be a non-empty string"),
    (["Essential Criteria: x"], "rubric[0]: must be an object"),
    ([], "rubric: must be a non-empty list"),
    ([{"description": "Pitfall Criteria: Guesses.", "weight": -1}],
     "rubric.criteria: at least one criterion must have positive polarity"),
]


@pytest.mark.parametrize("items, problem", BAD, ids=[p for _, p in BAD])
def test_bad_items_name_the_item_and_field(items, problem):
  with pytest.raises(rar.RaRError) as e:
    rar.convert(items)
  assert str(e.value).startswith(problem)


def test_bad_rows_name_the_row_and_field():
  good, second = _rows()
  for row, problem in [
      ({**good, "question": ""}, "rows[1].question: must be a non-empty"),
      ({k: v for k, v in good.items() if k != "rubric"},
       "rows[1].rubric: missing"),
      ({**good, "rubric": [{**good["rubric"][0], "weight": None}]},
       "rows[1].rubric[0].weight: must be a non-zero number"),
      ({**second, "id": "rar-1"}, "rows[1].id: duplicate 'rar-1'"),
  ]:
    with pytest.raises(rar.RaRError) as e:
      rar.dataset_rows([good, row], "rar")
    assert str(e.value).startswith(problem)


def test_cli_writes_a_pack_the_server_loads(tmp_path, capsys):
  (tmp_path / "row.json").write_text(json.dumps(_rows()[0]))
  packs = tmp_path / "packs"
  packs.mkdir()
  out = packs / "aortic.yaml"
  assert cli.main(["judge", "import-rar", str(tmp_path / "row.json"),
                   "--out", str(out), "--id", "rar-aortic", "--version", "3",
                   "--description", "imported"]) == 0
  assert "5 criteria; 1 negative-weight item(s) phrased as an avoidance" in (
      capsys.readouterr().out)
  rubric = load_pack(out)
  assert (rubric.id, rubric.version, len(rubric.criteria)) == (
      "rar-aortic", 3, 5)
  assert server.load_packs(str(packs))["rar-aortic"] == rubric


def test_cli_writes_dataset_rows_the_trainer_loads(tmp_path, capsys):
  out = tmp_path / "rar.jsonl"
  assert cli.main(["judge", "import-rar", str(SAMPLE), "--dataset", str(out),
                   "--id-prefix", "med", "--domain", "medicine"]) == 0
  assert f"{out}: 2 rows" in capsys.readouterr().out
  first, second = dataset.load_jsonl(out, load_packs())
  assert (first.id, first.domain, second.id) == ("med-1", "medicine", "med-2")
  assert first.prompt.startswith("A 45-year-old presents")
  assert second.answer.startswith("Ice is less dense")
  assert [c.polarity for c in second.rubric.criteria] == [
      "positive", "positive", "negative"]


def test_cli_refuses_ambiguous_or_bad_input(tmp_path, capsys):
  out = str(tmp_path / "x.yaml")
  assert cli.main(["judge", "import-rar", str(SAMPLE), "--out", out]) == 2
  assert "--id: required with --out" in capsys.readouterr().err
  assert cli.main(["judge", "import-rar", str(SAMPLE), "--out", out,
                   "--dataset", out, "--id", "x"]) == 2
  assert "give --out PACK.yaml (one rubric) or --dataset" in (
      capsys.readouterr().err)
  # Two rows are not one rubric.
  assert cli.main(["judge", "import-rar", str(SAMPLE), "--out", out,
                   "--id", "x"]) == 2
  assert "2 rows with a rubric each; a pack holds one rubric" in (
      capsys.readouterr().err)
  (tmp_path / "bad.jsonl").write_text('{"question": 1}\n{oops\n')
  assert cli.main(["judge", "import-rar", str(tmp_path / "bad.jsonl"),
                   "--dataset", out]) == 2
  assert "bad.jsonl:2: neither JSON nor JSON Lines" in capsys.readouterr().err
