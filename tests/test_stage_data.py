"""SFT rows and preference pairs from JSON Lines, parquet and datasets saved
to disk; bad rows and configs are refused naming the file, row and field."""

import json
import pathlib

import datasets
import pyarrow
import pyarrow.parquet
import pytest

from grar_config.strict import ConfigError
from orchestrator import cli
from orchestrator.stages import sft as sft_stage
from orchestrator.stages import simpo as simpo_stage
from orchestrator.data.dataset import DatasetError
from orchestrator.data.preference_pairs import PreferencePair, load_pairs
from orchestrator.rewards import format_reward
from orchestrator.data.sft_rows import SFTRow, completion, load_sft, split_eval

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROW = {"prompt": "What is 2 + 2?", "reasoning": "2 and 2 make 4.",
       "answer": "4"}
PAIR = {"prompt": "What is 2 + 2?", "chosen": "<answer>4</answer>",
        "rejected": "5"}


def _jsonl(tmp_path, *rows) -> pathlib.Path:
  path = tmp_path / "rows.jsonl"
  path.write_text("".join(
      (r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return path


def _error(load, path) -> str:
  with pytest.raises(DatasetError) as e:
    load(path)
  return str(e.value)


def test_shipped_samples_load_and_teach_the_format():
  rows = load_sft(ROOT / "data" / "sft-sample.jsonl")
  assert 40 <= len(rows) <= 60
  assert len({r.prompt for r in rows}) == len(rows)
  for r in rows:
    assert format_reward(completion(r.reasoning, r.answer)) == 1.0
  pairs = load_pairs(ROOT / "data" / "pairs-sample.jsonl")
  assert len(pairs) >= 12
  for p in pairs:
    assert format_reward(p.chosen) == 1.0


def test_three_formats_give_the_same_rows(tmp_path):
  second = dict(ROW, prompt="What is 3 + 3?", answer="6")
  expected = [SFTRow(**ROW), SFTRow(**second)]
  assert load_sft(_jsonl(tmp_path, ROW, "", second)) == expected
  pyarrow.parquet.write_table(pyarrow.Table.from_pylist([ROW, second]),
                              tmp_path / "rows.parquet")
  assert load_sft(tmp_path / "rows.parquet") == expected
  datasets.Dataset.from_list([PAIR]).save_to_disk(str(tmp_path / "pairs"))
  assert load_pairs(tmp_path / "pairs") == [PreferencePair(**PAIR)]


def test_jsonl_errors_name_line_and_field(tmp_path):
  bad = dict(ROW)
  del bad["reasoning"]
  path = _jsonl(tmp_path, ROW, "", bad)
  assert _error(load_sft, path) == f"{path}:3: reasoning: missing"
  path = _jsonl(tmp_path, dict(ROW, answer=4))
  assert _error(load_sft, path) == (
      f"{path}:1: answer: must be a string, got int")
  path = _jsonl(tmp_path, dict(ROW, resoning="x"))
  assert _error(load_sft, path).startswith(f"{path}:1: resoning: unknown key")
  path = _jsonl(tmp_path, ROW, "{not json")
  assert _error(load_sft, path).startswith(f"{path}:2: row: invalid JSON")
  path = _jsonl(tmp_path, "[1, 2]")
  assert _error(load_sft, path) == f"{path}:1: row: must be an object, got list"
  path = _jsonl(tmp_path, dict(PAIR, rejected=PAIR["chosen"]))
  assert _error(load_pairs, path).startswith(
      f"{path}:1: rejected: the same text as chosen")
  path = _jsonl(tmp_path, dict(PAIR, chosen="  "))
  assert _error(load_pairs, path) == f"{path}:1: chosen: empty"
  path = _jsonl(tmp_path, "", "")
  assert _error(load_pairs, path) == (
      f"{path}: no rows (the file is empty or blank)")
  assert "cannot read" in _error(load_sft, tmp_path / "missing.jsonl")


def test_parquet_and_saved_dataset_errors_name_the_row(tmp_path):
  path = tmp_path / "pairs.parquet"
  pyarrow.parquet.write_table(pyarrow.Table.from_pylist(
      [PAIR, dict(PAIR, rejected=None)]), path)
  assert _error(load_pairs, path) == f"{path}: row 1: rejected: missing"
  (tmp_path / "junk.parquet").write_text("not parquet")
  assert "cannot read as parquet" in _error(load_pairs,
                                            tmp_path / "junk.parquet")
  saved = tmp_path / "saved"
  datasets.Dataset.from_list([ROW, dict(ROW, answer="")]).save_to_disk(
      str(saved))
  assert _error(load_sft, saved) == f"{saved}: row 1: answer: empty"
  splits = tmp_path / "splits"
  datasets.DatasetDict({"train": datasets.Dataset.from_list([ROW])}
                       ).save_to_disk(str(splits))
  assert _error(load_sft, splits) == (
      f"{splits}: holds the splits train; give one of them, e.g. "
      f"{splits / 'train'}")
  (tmp_path / "empty_dir").mkdir()
  assert "save_to_disk" in _error(load_sft, tmp_path / "empty_dir")


def test_held_out_split_is_seeded_whole_batches():
  items = list(range(50))
  train, held = split_eval(items, 0.1, 4, seed=0)
  assert len(held) == 4 and sorted(train + held) == items
  assert split_eval(items, 0.1, 4, seed=0) == (train, held)
  assert split_eval(items, 0.1, 4, seed=1) != (train, held)
  with pytest.raises(ValueError, match="eval_fraction"):
    split_eval(list(range(4)), 0.5, 4, seed=0)


def test_configs_refuse_bad_fields():
  for module, section in ((sft_stage, "sft"), (simpo_stage, "simpo")):
    with pytest.raises(ConfigError, match=f"^{section}.eval_every: must be 0 "
                       "or divide steps=20, got 3"):
      module.load(None, [f"{section}.steps=20", f"{section}.eval_every=3"])
    with pytest.raises(ConfigError, match=f"^{section}.lr: unknown key"):
      module.load(None, [f"{section}.lr=0.1"])
  with pytest.raises(ConfigError, match="^simpo.beta: must be > 0"):
    simpo_stage.load(None, ["simpo.beta=0"])
  for name in ("sft-tiny", "simpo-tiny"):
    module = sft_stage if name == "sft-tiny" else simpo_stage
    module.load(ROOT / "configs" / f"{name}.yaml")


def test_cli_reports_a_bad_row_before_building_the_model(tmp_path, capsys):
  bad = _jsonl(tmp_path, ROW, dict(ROW, prompt=7))
  code = cli.main(["sft", "--config", str(ROOT / "configs" / "sft-tiny.yaml"),
                   "--set", f"sft.data={bad}",
                   "--set", f"output_dir={tmp_path}"])
  assert code == 2
  assert capsys.readouterr().err.strip() == (
      f"grar: error: {bad}:2: prompt: must be a string, got int")
  assert not any(tmp_path.glob("*-sft"))
