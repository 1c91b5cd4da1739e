"""Curriculum over dataset levels, advanced by the policy's success rate.

Level 0 is data.path; curriculum.levels are the harder datasets after it
(e.g. `grar data make` with wider generator options). Every batch is drawn
from the current level. After each trained step of the current level, the
step's success rate (the mean of one reward component over its rollouts,
NaN left out: for `answer`, the fraction answered right) joins a window of
the last `min_steps` steps at that level; once the level has had min_steps
steps and the window's mean reaches `threshold`, the next batch comes from
the next level. A level is never left for an easier one, and the last level
is kept to the end.

With train.staleness 1 the batch of step k + 1 is drawn before step k is
trained, so a level change shows one step later; a batch drawn at a level
already left still trains but does not count for the new level.

The state is a small value saved beside each checkpoint, so a resumed run
is at the level, and the window, it had when it stopped.
"""

import dataclasses
import json
import math
import os
import pathlib


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The rule: levels (how many, data.path counted), threshold, min_steps."""
  levels: int
  threshold: float
  min_steps: int


@dataclasses.dataclass(frozen=True)
class State:
  level: int = 0
  steps_at_level: int = 0
  window: tuple[float, ...] = ()  # success rates, the last min_steps


def success_rate(values) -> float:
  """The mean of a step's component values that are not NaN; NaN if none."""
  finite = [float(v) for v in values if not math.isnan(v)]
  return sum(finite) / len(finite) if finite else math.nan


def advance(state: State, level: int, success: float,
            schedule: Schedule) -> State:
  """The state after training a step whose batch was drawn at `level` and
  whose success rate was `success` (NaN: the judge scored none of a
  judge-based component; the step counts, its rate does not)."""
  if level != state.level or state.level == schedule.levels - 1:
    return state
  window = state.window if math.isnan(success) else (
      state.window + (success,))[-schedule.min_steps:]
  steps = state.steps_at_level + 1
  if (steps >= schedule.min_steps and window
      and sum(window) / len(window) >= schedule.threshold):
    return State(state.level + 1)
  return State(state.level, steps, window)


def path(checkpoint_dir: pathlib.Path) -> pathlib.Path:
  return pathlib.Path(f"{checkpoint_dir}.curriculum.json")


def save(file: pathlib.Path, state: State) -> None:
  """Writes `state` atomically (by rename), before the checkpoint's
  manifest."""
  tmp = file.with_suffix(".tmp")
  tmp.write_text(json.dumps(dataclasses.asdict(state)) + "\n")
  with open(tmp, "rb") as f:
    os.fsync(f.fileno())
  os.replace(tmp, file)


def load(file: pathlib.Path) -> State:
  data = json.loads(pathlib.Path(file).read_text())
  return State(data["level"], data["steps_at_level"], tuple(data["window"]))
