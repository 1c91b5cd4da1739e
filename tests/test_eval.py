"""`grar eval`: base and trained policies answer the held-out set greedily,
judged by the tiny judge over loopback gRPC; and a judge that cannot score
leaves the rubric mean undefined and counts the answers, not a mean of 0."""

import dataclasses
import json
import math

import pytest

from orchestrator import cli, evaluate
from orchestrator import run_dir as run_dir_lib
from orchestrator.config import RunConfig
from policy_worker.spec import ModelSpec
from processes import free_port
from test_export import lora_checkpoint

HELDOUT = "data/heldout-sample.jsonl"
N = 8  # rows in it


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """A `grar train` run directory whose checkpoint has strong random LoRA
  adapters, so its greedy answers differ from the base model's."""
  cfg = RunConfig(model=ModelSpec(family="gemma3-tiny"))
  run_dir = run_dir_lib.create(str(tmp_path_factory.mktemp("runs")), "trained",
                               dataclasses.asdict(cfg))
  lora_checkpoint(cfg.model, run_dir_lib.checkpoint_dir(run_dir, 3),
                  rank=cfg.grpo.lora_rank, alpha=cfg.grpo.lora_alpha,
                  scale=0.5)
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


def test_before_after_table_and_rows(tmp_path, capsys, trained_run):
  printed, rows, summary = _eval(
      capsys, tmp_path / "eval",
      f"candidates=[{{name: base}}, {{name: trained, run: {trained_run}}}]")
  header = printed.split("metric")[1].splitlines()[0].split()
  assert header == ["base", "trained", "change"]
  assert "judge mean" in printed and "format accuracy" in printed
  assert [r["candidate"] for r in rows] == ["base"] * N + ["trained"] * N
  by = {name: [r for r in rows if r["candidate"] == name]
        for name in ("base", "trained")}
  # The LoRA checkpoint was applied: the greedy answers differ.
  assert ([r["completion"] for r in by["base"]]
          != [r["completion"] for r in by["trained"]])
  for name, mine in by.items():
    assert [r["example_id"] for r in mine] == [
        f"heldout-{i:03d}" for i in range(1, N + 1)]
    for r in mine:
      assert r["judge_status"] == "SCORED" and 0 <= r["judge_reward"] <= 1
      assert 1 <= r["completion_tokens"] <= 16
    assert summary[name] == pytest.approx(evaluate.summarise(mine))
    assert summary[name]["judge_scored"] == N
    assert 0 < summary[name]["judge_mean"] < 1


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
  assert base["judge_unscorable"] == N and base["judge_scored"] == 0
  assert base["judge_mean"] is None  # not 0
  assert math.isnan(evaluate.summarise(rows)["judge_mean"])
  assert base["answer_tokens_mean"] > 0  # the rule measures still count
  assert "nan" in next(line for line in printed.splitlines()
                       if line.startswith("judge mean"))


def test_bad_config_names_the_field(tmp_path, capsys):
  code = cli.main(["eval", "--config", "configs/eval-tiny.yaml",
                   "--set", "candidates=[{name: a}, {name: a}]"])
  assert code == 2
  assert "candidates: names must be unique" in capsys.readouterr().err
