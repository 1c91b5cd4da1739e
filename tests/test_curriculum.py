"""Curriculum over dataset levels: the schedule's rule, its config, and a
real tiny GRPO run that moves up a level, killed and resumed at the level
and window it had."""

import json
import math

import pytest

from orchestrator import config as config_lib
from orchestrator.data import curriculum, tasks
from orchestrator.rundir import journal
from orchestrator.rundir import layout as run_dir
from orchestrator.rundir import metrics
from orchestrator.stages import grpo

RULE = curriculum.Schedule(levels=3, threshold=0.5, min_steps=2)


def _run(rates, level_of=None):
  """The states after training steps with these success rates, each drawn
  at the level the state had (or at level_of[i])."""
  state, states = curriculum.State(), []
  for i, rate in enumerate(rates):
    level = state.level if level_of is None else level_of[i]
    state = curriculum.advance(state, level, rate, RULE)
    states.append(state)
  return states


def test_advances_after_the_minimum_stay_when_the_window_reaches_threshold():
  # 0.9 at once, but a level is kept for min_steps steps.
  assert [s.level for s in _run([0.9, 0.9, 0.9, 0.9])] == [0, 1, 1, 2]
  # The window is the last min_steps rates at this level: 0.2, 0.6 -> 0.4;
  # 0.6, 0.6 -> 0.6.
  assert [s.level for s in _run([0.2, 0.6, 0.6])] == [0, 0, 1]
  # A new level starts with an empty window: the rates before do not count.
  states = _run([0.9, 0.9, 0.0, 0.9])
  assert [s.level for s in states] == [0, 1, 1, 1]
  assert states[-1].window == (0.0, 0.9)


def test_last_level_is_kept_and_never_goes_back():
  states = _run([1.0] * 4 + [0.0] * 6)
  assert [s.level for s in states] == [0, 1, 1, 2] + [2] * 6


def test_a_batch_from_a_level_already_left_does_not_count():
  # Staleness 1: the batch trained third was drawn at level 0, before the
  # move; it must not count towards level 1.
  states = _run([0.9, 0.9, 0.9, 0.9, 0.9], level_of=[0, 0, 0, 1, 1])
  assert [s.level for s in states] == [0, 1, 1, 1, 2]
  assert states[2] == curriculum.State(1)


def test_a_step_without_a_rate_counts_for_the_stay_not_the_window():
  states = _run([math.nan, 0.9])
  assert states[0] == curriculum.State(0, 1, ())
  assert states[1].level == 1  # two steps stayed, the window is (0.9,)
  assert _run([math.nan, math.nan])[-1] == curriculum.State(0, 2, ())
  assert curriculum.success_rate([1.0, math.nan, 0.0, 1.0]) == pytest.approx(
      2 / 3)
  assert math.isnan(curriculum.success_rate([math.nan]))


def test_state_round_trips_through_its_file(tmp_path):
  state = curriculum.State(2, 3, (0.25, 0.5))
  file = curriculum.path(tmp_path / "step_4")
  curriculum.save(file, state)
  assert curriculum.load(file) == state
  assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("override, problem", [
    ("curriculum.threshold=1.5", "curriculum.threshold: must be in"),
    ("curriculum.min_steps=0", "curriculum.min_steps: must be > 0"),
    ("curriculum.component=length", "curriculum.component"),
])
def test_bad_curriculum_config_is_one_clear_error(override, problem):
  with pytest.raises(ValueError, match=problem):
    config_lib.load("configs/cpu-tiny.yaml", [override])


class _Killed(BaseException):
  """Not an Exception, so nothing in the run mistakes it for its own."""


def _config(tmp_path, name, level1, levels=True, steps=5):
  # Threshold 0 on a component every rollout has: the move is certain after
  # min_steps, whatever the tiny random policy writes.
  return config_lib.load("configs/cpu-tiny.yaml", [
      f"train.steps={steps}", "train.staleness=1", "train.checkpoint_every=1",
      "train.batch_size=2", "rollout.num_generations=2",
      "rollout.max_new_tokens=8", "judge.validation.on_fail=skip",
      *([f"curriculum.levels=[{json.dumps(str(level1))}]",
         "curriculum.component=format", "curriculum.threshold=0",
         "curriculum.min_steps=2"] if levels else []),
      f"output_dir={tmp_path}", f"run_name={name}"])


@pytest.mark.slow
def test_run_moves_up_and_a_resumed_run_is_at_the_same_level(
    tmp_path, monkeypatch):
  tasks.make(["chain_sum"], 8, 0, 0, tmp_path / "level1")
  level1 = tmp_path / "level1" / "train.jsonl"
  harder = {json.loads(line)["prompt"] for line in level1.open()}
  whole = grpo.train(_config(tmp_path, "whole", level1)).run_dir
  rows = metrics.read(whole / run_dir.METRICS)
  # Steps 1-2 at level 0 move the schedule; step 3 was drawn before the
  # move (staleness 1); steps 4-5 come from level 1.
  assert [r["curriculum_level"] for r in rows] == [0, 0, 0, 1, 1]
  assert all(0 <= r["curriculum_success"] <= 1 for r in rows)
  prompts = {}
  for r in journal.read(whole / run_dir.JOURNAL):
    prompts.setdefault(r["step"], set()).add(r["prompt"])
  assert all(prompts[s] <= harder for s in (4, 5))
  assert not any(prompts[s] & harder for s in (1, 2, 3))

  # Killed after step 3: the state says level 1 with an empty window, and
  # the batch in flight (step 4) was drawn at level 1.
  cfg = _config(tmp_path, "killed", level1)
  save = grpo._Trainer.checkpoint

  def checkpoint_then_die(self, at, journal_bytes, pending):
    save(self, at, journal_bytes, pending)
    if at == 3:
      raise _Killed
  with monkeypatch.context() as m:
    m.setattr(grpo._Trainer, "checkpoint", checkpoint_then_die)
    with pytest.raises(_Killed):
      grpo.train(cfg)
  killed = tmp_path / "killed"
  assert curriculum.load(curriculum.path(
      run_dir.checkpoint_dir(killed, 3))) == curriculum.State(1)
  grpo.resume(killed, cfg)
  assert [r["curriculum_level"] for r in metrics.read(
      killed / run_dir.METRICS)] == [0, 0, 0, 1, 1]
  assert [(r["rollout_id"], r["prompt"]) for r in journal.read(
      killed / run_dir.JOURNAL)] == [(r["rollout_id"], r["prompt"]) for r in
                                     journal.read(whole / run_dir.JOURNAL)]

  # A run started without levels cannot be resumed with them.
  plain = grpo.train(_config(tmp_path, "plain", level1, levels=False,
                             steps=1)).run_dir
  assert "curriculum_level" not in metrics.read(plain / run_dir.METRICS)[0]
  with pytest.raises(grpo.TrainError, match="holds no curriculum state"):
    grpo.resume(plain, _config(tmp_path, "plain", level1, steps=2))
