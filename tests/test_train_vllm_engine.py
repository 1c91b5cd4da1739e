"""End to end: `grar train` with rollout.engine vllm, the trainer starting
vLLM (the CPU build in .venv-vllm) on the tiny random model exported into
its run directory, loading each version's adapters, and stopping it; then
the run resumed from its checkpoint.

The tiny model's head_dim is 32: vLLM's CPU attention has no kernel for
the default 16. Its mismatch to the trainer is larger than the 270M's
(mean |d log p| about 0.007 against 2e-5, measured): a random two-layer
model's logits are large, so float32 rounding in two implementations
shows more; the bounds below hold it, and are far under what a wrong
temperature or stale adapters give (test_vllm_rollouts.py).
"""

import math
import subprocess

import pytest

from orchestrator.rundir import journal
from orchestrator.rundir import metrics
from processes import grar

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.e2e]

STEPS, BATCH, G = 2, 2, 2
ARGS = ("--config", "configs/cpu-tiny.yaml",
        "--set", "model.head_dim=32",
        "--set", "rollout.engine=vllm",
        "--set", "rollout.vllm.extra_args=[--enforce-eager]",
        "--set", f"train.batch_size={BATCH}",
        "--set", f"rollout.num_generations={G}",
        "--set", "rollout.max_new_tokens=16",
        "--set", "judge.validation.on_fail=skip")


def _vllm_of(run_dir) -> str:
  """The processes still running with the run directory on their command
  line (a server started for it has its exported model there)."""
  return subprocess.run(["pgrep", "-af", str(run_dir)], capture_output=True,
                        text=True).stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  out = tmp_path_factory.mktemp("runs")
  proc = grar("train", *ARGS, "--set", f"train.steps={STEPS}",
              "--set", f"output_dir={out}", "--set", "run_name=vllm")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out / "vllm", proc


def test_the_trainer_starts_vllm_and_stops_it(run):
  run_dir, proc = run
  assert "starting vLLM for the rollouts" in proc.stderr
  assert "Application startup complete" in (run_dir / "vllm.log").read_text()
  assert not _vllm_of(run_dir)
  # Each version's adapter went once the next replaced it; the last with
  # the run.
  assert not any((run_dir / "adapters").iterdir())


def test_every_rollout_was_sampled_by_vllm_judged_and_weighed(run):
  run_dir, proc = run
  records = list(journal.read(run_dir / "journal.msgpack"))
  assert len(records) == STEPS * BATCH * G
  assert all(r["judge_status"] == "SCORED" for r in records)
  rows = metrics.read(run_dir / "metrics.csv")
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  for row in rows:
    assert 0 < row["engine_logp_mismatch"] < 0.05, row
    assert 0.9 < row["tis_weight_mean"] < 1.1, row
    assert 0 <= row["tis_truncated_frac"] < 0.05, row
    assert math.isfinite(row["loss"])
  assert "engine |dlogp|" in proc.stderr


def test_a_resumed_run_starts_vllm_again_on_the_checkpoints_adapters(run):
  run_dir, _ = run
  proc = grar("train", "--resume", str(run_dir), "--set",
              f"train.steps={STEPS + 1}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = metrics.read(run_dir / "metrics.csv")
  assert [r["step"] for r in rows] == list(range(1, STEPS + 2))
  # Sampled from the restored version's adapters: a stale or missing
  # adapter would put the mismatch far above the bound.
  assert 0 < rows[-1]["engine_logp_mismatch"] < 0.05
  assert rows[-1]["staleness"] == 0
  assert not _vllm_of(run_dir)
