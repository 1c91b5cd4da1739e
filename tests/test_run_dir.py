"""Crash-safety pieces without a model: manifests, rewinding, the journal's
torn tail, and batches that depend on the step alone."""

import pathlib

import msgpack
import numpy as np
import pytest

from orchestrator.rundir import inflight
from orchestrator.rundir import journal
from orchestrator.rundir import layout as run_dir
from orchestrator.data.batches import batch_for_step
from policy_worker.rollout import Rollouts


def _new_run(tmp_path) -> pathlib.Path:
  return run_dir.create(str(tmp_path), "r", {"a": 1})


def test_latest_manifest_needs_both_checkpoint_and_manifest(tmp_path):
  rd = _new_run(tmp_path)
  assert run_dir.latest_manifest(rd) is None
  for step in (1, 2):
    run_dir.checkpoint_dir(rd, step).mkdir()
    run_dir.write_manifest(rd, run_dir.Manifest(step, step * 100))
  # step 3's checkpoint was being written when the process died: no manifest.
  run_dir.checkpoint_dir(rd, 3).mkdir()
  assert run_dir.latest_manifest(rd) == run_dir.Manifest(2, 200)
  # A manifest whose checkpoint directory is gone does not count either.
  run_dir.write_manifest(rd, run_dir.Manifest(4, 400))
  assert run_dir.latest_manifest(rd) == run_dir.Manifest(2, 200)


def test_rewind_cuts_journal_and_metrics_to_the_manifest(tmp_path):
  rd = _new_run(tmp_path)
  j = journal.Journal(rd / run_dir.JOURNAL)
  j.append([{"step": 1, "i": 0}, {"step": 1, "i": 1}])
  offset = j.tell()
  j.append([{"step": 2, "i": 0}])
  j.close()
  (rd / run_dir.METRICS).write_text("step,x\n1,0.5\n2,0.6\n")
  run_dir.rewind(rd, run_dir.Manifest(1, offset))
  assert [r["step"] for r in journal.read(rd / run_dir.JOURNAL)] == [1, 1]
  assert (rd / run_dir.METRICS).read_text() == "step,x\n1,0.5\n"
  run_dir.rewind(rd, None)
  assert list(journal.read(rd / run_dir.JOURNAL)) == []
  assert (rd / run_dir.METRICS).read_text() == ""


def test_journal_skips_a_torn_tail(tmp_path):
  path = tmp_path / "j.msgpack"
  j = journal.Journal(path)
  j.append([{"step": 1, "completion": "x" * 100}])
  j.close()
  torn = msgpack.packb({"step": 2, "completion": "y" * 100})
  with open(path, "ab") as f:
    f.write(torn[:len(torn) // 2])  # the process died mid-write
  assert [r["step"] for r in journal.read(path)] == [1]


def test_refuses_to_reuse_a_non_empty_run_directory(tmp_path):
  _new_run(tmp_path)
  with pytest.raises(run_dir.RunDirError, match="--resume"):
    _new_run(tmp_path)


def test_batches_depend_on_the_step_only_and_cover_each_epoch():
  n, b = 10, 3
  epoch = [batch_for_step(n, b, 7, s) for s in range(1, 4)]
  flat = [i for batch in epoch for i in batch]
  assert len(set(flat)) == 9  # three whole batches of distinct examples
  assert batch_for_step(n, b, 7, 2) == epoch[1]  # same step, same batch
  # The next epoch is a new permutation (fixed seeds, so this is stable).
  assert [batch_for_step(n, b, 7, s) for s in range(4, 7)] != epoch
  assert batch_for_step(n, b, 8, 1) != epoch[0]


def test_batches_in_flight_keep_the_engines_log_probs(tmp_path):
  """A batch vLLM sampled is trained after a resume with vLLM's log-probs
  (truncated importance sampling needs them); one the trainer sampled has
  none."""
  rd = _new_run(tmp_path)
  (rd / run_dir.CHECKPOINTS).mkdir(exist_ok=True)
  tokens = np.array([[5, 6, 0], [7, 0, 0]], np.int32)
  engine = np.array([[-0.5, -1.25, 0], [-2.0, 0, 0]], np.float32)

  def generated(step, logps):
    return inflight.Generated(
        step, Rollouts(np.ones((2, 4), np.int32), tokens, ["a", "b"], logps),
        {"format": np.zeros(2)}, None, engine - 0.1, np.zeros(2, np.int64),
        1.0, (0.0, 1.0))

  file = inflight.path(rd, 1)
  inflight.save(file, [generated(2, engine), generated(3, None)])
  vllm_batch, own_batch = inflight.load(file)
  np.testing.assert_array_equal(vllm_batch.rollouts.logps, engine)
  np.testing.assert_array_equal(vllm_batch.old_logps, engine - 0.1)
  assert own_batch.rollouts.logps is None
