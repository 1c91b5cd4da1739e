"""The trainer survives what production throws at it, for real: the judge
process killed and restarted mid-run, the trainer SIGKILLed and resumed, and
a judge that never answers stopping the run with a clear message."""

import signal

import pytest

from orchestrator.rundir import journal
from orchestrator.rundir import metrics
from orchestrator.rundir import layout as run_dir
import processes

BATCH, G = 2, 4
SHORT = ["--set", f"train.batch_size={BATCH}",
         "--set", f"rollout.num_generations={G}",
         "--set", "rollout.max_new_tokens=16"]
# The judge check has its tests (test_judge_validate.py, test_train_e2e.py);
# where it is not what a test is about, it would double the run's time.
UNCHECKED = [*SHORT, "--set", "judge.validation.on_fail=skip"]


def _assert_every_step_once(rd, steps: int) -> list[dict]:
  rows = metrics.read(rd / run_dir.METRICS)
  assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))
  records = list(journal.read(rd / run_dir.JOURNAL))
  assert [r["step"] for r in records] == [
      s for s in range(1, steps + 1) for _ in range(BATCH * G)]
  assert len({r["rollout_id"] for r in records}) == len(records)
  return records


@pytest.mark.e2e
@pytest.mark.slow
def test_sigkilled_trainer_resumes_without_lost_or_repeated_steps(tmp_path):
  steps = 4
  proc = processes.start_grar(
      "train", "--config", "configs/cpu-tiny.yaml", *SHORT,
      "--set", f"train.steps={steps}", "--set", "train.checkpoint_every=1",
      "--set", f"output_dir={tmp_path}", "--set", "run_name=r")
  processes.read_until(proc, proc.stderr, f"step 2/{steps}", 600)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  rd = tmp_path / "r"
  done = run_dir.latest_manifest(rd)
  assert done is not None and done.step < steps

  resumed = processes.grar("train", "--resume", str(rd))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  # Progress restarts where the checkpoint left off.
  assert f"step {done.step + 1}/{steps}" in resumed.stderr
  assert f"step {done.step}/{steps}" not in resumed.stderr
  # The judge check of the run's start stands; it is not run again.
  assert "not probed again on resume" in resumed.stderr
  records = _assert_every_step_once(rd, steps)
  assert all(r["judge_status"] == "SCORED" for r in records)
  assert run_dir.latest_manifest(rd).step == steps


@pytest.mark.e2e
@pytest.mark.slow
def test_judge_killed_and_restarted_mid_run_loses_no_reward(tmp_path):
  steps = 4
  port = processes.free_port()
  judge_cfg = {"port": port, "backend": {"max_batch": 8}}
  judge = processes.start_judge(judge_cfg, tmp_path)
  target = processes.judge_address(judge)
  trainer = processes.start_grar(
      "train", "--config", "configs/cpu-tiny.yaml", *UNCHECKED,
      "--set", f"train.steps={steps}", "--set", "judge.placement=remote",
      "--set", f"judge.target={target}", "--set", "judge.timeout_s=300",
      "--set", f"output_dir={tmp_path}", "--set", "run_name=k")
  try:
    processes.read_until(trainer, trainer.stderr, f"step 1/{steps}", 600)
    # Batch 2 is with the judge now (staleness 1): kill it mid-judgement.
    judge.send_signal(signal.SIGKILL)
    judge.communicate()
    judge = processes.start_judge(judge_cfg, tmp_path)
    assert processes.judge_address(judge) == target
    out, err = trainer.communicate(timeout=600)
    assert trainer.returncode == 0, err[-3000:]
  finally:
    processes.stop(trainer)
    processes.stop(judge)
  records = _assert_every_step_once(tmp_path / "k", steps)
  unscored = [r for r in records if r["judge_status"] != "SCORED"]
  assert not unscored, unscored[0]
  rows = metrics.read(tmp_path / "k" / run_dir.METRICS)
  assert rows[-1]["judge_retries"] >= 1  # in-flight rollouts were re-sent


@pytest.mark.e2e
@pytest.mark.slow
def test_a_judge_that_cannot_score_stops_the_run(tmp_path):
  # A judge asked to trust only confident answers, which the tiny random
  # judge never gives: every rollout comes back UNSCORABLE.
  proc = processes.grar(
      "train", "--config", "configs/cpu-tiny.yaml", *UNCHECKED,
      "--set", "train.steps=6",
      "--set", "judge.server.backend.min_score_mass=0.99",
      "--set", "judge.unscorable_patience=2",
      "--set", f"output_dir={tmp_path}", "--set", "run_name=u")
  assert proc.returncode == 1, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("grar: error: the judge could not score 100% of "
                         "step 2's rollouts"), last
  rows = metrics.read(tmp_path / "u" / run_dir.METRICS)
  # Both steps were logged, every rollout masked rather than scored 0.
  assert [r["judge_unscorable"] for r in rows] == [BATCH * G] * 2
  assert all(r["masked_rollouts"] == BATCH * G for r in rows)
  reasons = {r["judge_reason"] for r in journal.read(tmp_path / "u" /
                                                     run_dir.JOURNAL)}
  assert all("below min_score_mass=0.99" in r for r in reasons), reasons


def test_no_judge_at_start_is_one_clear_line(tmp_path):
  proc = processes.grar(
      "train", "--config", "configs/cpu-tiny.yaml",
      "--set", "judge.placement=remote",
      "--set", f"judge.target=127.0.0.1:{processes.free_port()}",
      "--set", "judge.timeout_s=1", "--set", f"output_dir={tmp_path}")
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("grar: error: judge at 127.0.0.1:"), last
  assert "start the judge server or fix judge.target" in last


@pytest.mark.e2e
def test_judge_in_its_own_process_with_its_own_devices(tmp_path):
  steps = 2
  proc = processes.grar(
      "train", "--config", "configs/cpu-tiny.yaml", *UNCHECKED,
      "--set", f"train.steps={steps}", "--set", "judge.placement=subprocess",
      "--set", f"output_dir={tmp_path}", "--set", "run_name=s")
  assert proc.returncode == 0, proc.stderr[-3000:]
  rd = tmp_path / "s"
  # Two processes of 4 virtual CPU devices each, not one of 8.
  assert ("grar: 4 cpu devices: policy mesh on 4 (fsdp=1, tp=4), judge "
          "subprocess") in proc.stderr
  log = (rd / "judge.log").read_text()
  assert "jax backend on 4 of 4 cpu devices (fsdp=1, tp=4)" in log, log
  records = _assert_every_step_once(rd, steps)
  assert all(r["judge_status"] == "SCORED" for r in records)
