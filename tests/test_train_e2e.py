"""End to end: `grar train` as a user runs it, judge on the judge mesh.

The trainer runs as a real subprocess (its own 8 virtual devices: 4 policy,
4 judge), with the judge backend on the judge mesh behind a loopback gRPC
server, exactly as `make demo` does, only shorter.
"""

import json
import math
import numpy as np
import pytest

from orchestrator.rundir import journal
from orchestrator.rundir import metrics
from policy_worker import checkpoint
from processes import grar

STEPS, BATCH, G = 2, 2, 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  out = tmp_path_factory.mktemp("runs")
  proc = grar("train", "--config", "configs/cpu-tiny.yaml",
              "--set", f"train.steps={STEPS}", "--set", f"train.batch_size={BATCH}",
              "--set", f"rollout.num_generations={G}",
              "--set", "rollout.max_new_tokens=16",
              "--set", f"output_dir={out}", "--set", "run_name=e2e")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out / "e2e", proc


def test_run_directory_and_summary(run):
  run_dir, proc = run
  assert f"run directory: {run_dir}" in proc.stdout
  assert (run_dir / "config.yaml").exists()
  # The printed table has a row per step.
  table = proc.stdout.split("run directory:")[1].splitlines()[2:]
  assert [line.split()[0] for line in table] == [str(s) for s in range(1, STEPS + 1)]
  assert f"step {STEPS}/{STEPS}" in proc.stderr  # progress lines


def test_every_rollout_was_judged(run):
  run_dir, _ = run
  records = list(journal.read(run_dir / "journal.msgpack"))
  assert len(records) == STEPS * BATCH * G
  assert len({r["rollout_id"] for r in records}) == len(records)
  for r in records:
    assert r["judge_status"] == "SCORED", r
    assert 0.0 <= r["rewards"]["judge"] <= 1.0
    assert set(r["rewards"]) == {"format", "answer", "judge", "relevance"}


def test_metrics_have_every_component_and_a_finite_loss(run):
  run_dir, _ = run
  rows = metrics.read(run_dir / "metrics.csv")
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  for row in rows:
    for name in ("reward", "format", "answer", "judge"):
      assert f"{name}_mean" in row and f"{name}_std" in row
    assert math.isfinite(row["loss"]) and math.isfinite(row["kl"])
    # The relevance reward: computed and logged at weight 0.
    assert 0 <= row["relevance_mean"] <= 1, row["relevance_mean"]
    assert row["judge_scored"] == BATCH * G and row["judge_unscorable"] == 0
    # The judge's rubric reward is continuous, not a parsed constant.
    assert 0.0 < row["judge_mean"] < 1.0
    # The reward-hacking watch: nan only where it is undefined.
    assert -1 <= row["judge_length_corr"] <= 1 or math.isnan(
        row["judge_length_corr"])
    assert 0 <= row["judge_answer_agreement"] <= 1


def test_the_random_judge_was_validated_and_warned_about(run):
  run_dir, proc = run
  # cpu-tiny.yaml: judge.validation.on_fail warn, on 2 examples.
  assert "grar: warning: the judge cannot tell a correct answer" in proc.stderr
  report = json.loads((run_dir / "judge_validation.json").read_text())
  assert report["rows"] == 2 and report["probes"] == 12
  assert (run_dir / "judge_validation.txt").read_text().startswith(
      "judge validation on 2 examples\ndomain ")


def test_lora_parameters_changed(run):
  run_dir, _ = run
  saved = checkpoint.load_lora(run_dir / "checkpoints" / f"step_{STEPS}")
  leaves = [np.asarray(x) for x in _leaves(saved)]
  # qwix starts every LoRA "b" matrix at zero, so the base model is untouched
  # at step 0; after training they must have moved.
  b_mats = [x for path, x in _items(saved) if path.endswith("lora_b")]
  assert b_mats and any(np.abs(b).max() > 0 for b in b_mats)
  assert all(np.isfinite(x).all() for x in leaves)


def _items(tree, prefix=""):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _items(v, f"{prefix}/{k}")
    else:
      yield f"{prefix}/{k}", v


def _leaves(tree):
  return [v for _, v in _items(tree)]


def test_bad_config_is_one_line_and_exit_2(tmp_path):
  bad = tmp_path / "bad.yaml"
  bad.write_text("train:\n  stepz: 3\n")
  proc = grar("train", "--config", str(bad), timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "grar: error: train.stepz: unknown key (known: batch_size, "
      "checkpoint_every, seed, staleness, steps)"]


def test_bad_override_value_names_the_key():
  proc = grar("train", "--config", "configs/cpu-tiny.yaml",
              "--set", "rollout.temperature=hot", timeout=120)
  assert proc.returncode == 2
  assert "rollout.temperature: expected a number, got 'hot'" in proc.stderr


def test_bad_dataset_row_names_line_and_field(tmp_path):
  data = tmp_path / "d.jsonl"
  rows = [{"id": "a", "prompt": "1+1?", "answer": "2", "rubric_id": "math-solution"},
          {"id": "b", "prompt": "2+2?", "answer": "4",
           "rubric": {"criteria": [{"text": "x", "category": "essential",
                                    "weight": -1}]}}]
  data.write_text("\n".join(json.dumps(r) for r in rows))
  proc = grar("train", "--config", "configs/cpu-tiny.yaml",
              "--set", f"data.path={data}", "--set", f"output_dir={tmp_path}",
              timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f"grar: error: {data}:2: rubric.criteria[0].weight:"), last


def test_inspect_summarises_the_run_and_plots_it(run):
  run_dir, _ = run
  proc = grar("inspect", str(run_dir), "--samples", "2", timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = proc.stdout
  assert f"{STEPS} steps, {STEPS * BATCH * G} rollouts, 0 unscorable" in out
  assert "judge~length" in out and "judge=answer" in out
  assert "best 2:" in out and "worst 2:" in out
  # Explicit aggregation: the samples show per-criterion judge scores.
  assert "c0=" in out
  for name in ("rewards", "judge_latency", "time_split"):
    png = run_dir / "plots" / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_inspect_of_a_non_run_is_one_line(tmp_path):
  proc = grar("inspect", str(tmp_path), timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f"grar: error: {tmp_path}: no metrics.csv; not a run directory, or no "
      "step has finished"]


def test_pipeline_staleness_and_policy_versions_are_logged(run):
  run_dir, _ = run
  rows = metrics.read(run_dir / "metrics.csv")
  # staleness 1: batch 2 was generated by version 0 while batch 1 was judged.
  assert [r["staleness"] for r in rows] == [0, 1]
  entries = list(journal.read(run_dir / "journal.msgpack"))
  versions = {(r["step"], r["policy_version"], r["staleness"])
              for r in entries}
  assert versions == {(1, 0, 0), (2, 0, 1)}
  # ...while batch 1's judge call was out: the trainer sent batch 1, then
  # generated batch 2, and only then waited for batch 1's judgements. (A
  # loop that waited for the judge before generating again has them in the
  # other order.)
  times = {r["step"]: (r["generate_began_at"], r["generated_at"],
                       r["judge_wait_began_at"], r["judged_at"])
           for r in entries}
  (began1, sent1, waited1, judged1), (began2, sent2, _, _) = times[1], times[2]
  assert began1 < sent1 < began2 < sent2 <= waited1, times
  assert sent1 < judged1, times
  for key in ("time_generate", "time_judge_wait", "time_train",
              "judge_latency_p50_ms", "judge_latency_p99_ms", "tokens_per_s",
              "clip_frac", "zero_spread_groups", "unscorable_rate"):
    assert math.isfinite(rows[-1][key]), key
  assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
