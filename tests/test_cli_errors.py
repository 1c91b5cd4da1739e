"""The CLI tells a user's mistake (one line, exit 2) from a bug (a
traceback), and --debug shows the traceback of either."""

import numpy as np
import pytest

from grar_config.strict import ConfigError
from orchestrator import cli
from orchestrator.data import tasks
from processes import grar


def _raised(fn):
  try:
    fn()
  except Exception as e:  # noqa: BLE001 - the exception is the result
    return e
  raise AssertionError("did not raise")


def test_our_value_errors_are_the_users_and_library_ones_are_bugs():
  ours = _raised(lambda: tasks.parse_options(["chain_sum.max_terms"],
                                             ["chain_sum"]))
  numpy_bug = _raised(lambda: np.zeros(3).reshape(2))
  stdlib_bug = _raised(lambda: int("three"))
  assert isinstance(ours, ValueError) and cli.user_error(ours)
  assert isinstance(numpy_bug, ValueError) and not cli.user_error(numpy_bug)
  assert cli.user_error(ConfigError("train.steps: expected int"))
  assert not cli.user_error(RuntimeError("x"))
  # int() is C code: its error's last frame is this file, which is not in
  # grar's packages, so it counts as a bug.
  assert not cli.user_error(stdlib_bug)


def test_main_prints_one_line_for_a_mistake_and_raises_a_bug(monkeypatch,
                                                              capsys):
  monkeypatch.setattr(cli, "_inspect", lambda args: tasks.parse_options(
      ["nonsense"], ["chain_sum"]))
  assert cli.main(["inspect", "runs/x"]) == 2
  (line,) = capsys.readouterr().err.strip().splitlines()
  assert line.startswith("grar: error: ")
  with pytest.raises(ValueError):
    cli.main(["--debug", "inspect", "runs/x"])
  monkeypatch.setattr(cli, "_inspect",
                      lambda args: np.zeros(3).reshape(2))
  with pytest.raises(ValueError, match="reshape"):
    cli.main(["inspect", "runs/x"])


def test_debug_shows_the_traceback_of_a_config_error(tmp_path):
  bad = tmp_path / "bad.yaml"
  bad.write_text("train:\n  stepz: 3\n")
  proc = grar("--debug", "train", "--config", str(bad), timeout=120)
  assert proc.returncode == 1
  assert "Traceback (most recent call last)" in proc.stderr
  assert "ConfigError: train.stepz: unknown key" in proc.stderr
