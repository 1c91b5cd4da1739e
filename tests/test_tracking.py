"""Experiment tracking, for real: a tiny `grar train` with W&B (offline),
MLflow (a local file store) and TensorBoard, each read back from what it
wrote and compared with metrics.csv; trackers that fail to start or fail
part way, by real failures (a file where a directory must be, a store
deleted under a running tracker).

W&B is kept off the network by its offline mode and by the environment
below (no system stats, which probe a cloud metadata address; no git, no
error reports), set for this module and the grar it runs."""

import io
import json
import math
import pathlib
import shutil
import struct
import subprocess
import sys

import pytest
import yaml

from orchestrator import cli
from orchestrator.config import (MlflowTrackingConfig, TrackingConfig,
                                 WandbTrackingConfig)
from orchestrator.rundir import inspect_run
from orchestrator.rundir import metrics
from orchestrator.rundir import tracking
from processes import ROOT, grar

STEPS = 2


@pytest.fixture(scope="module", autouse=True)
def offline_wandb(tmp_path_factory):
  home = tmp_path_factory.mktemp("wandb-home")
  with pytest.MonkeyPatch.context() as mp:
    for name, value in {
        "WANDB_SILENT": "true", "WANDB__DISABLE_STATS": "true",
        "WANDB_DISABLE_GIT": "true", "WANDB_ERROR_REPORTING": "false",
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
        # For the tests' own MLflow client, as tracking sets it for grar's.
        "MLFLOW_ALLOW_FILE_STORE": "true"}.items():
      mp.setenv(name, value)
    yield


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  out = tmp_path_factory.mktemp("runs")
  proc = grar("train", "--config", "configs/cpu-tiny.yaml",
              "--set", f"train.steps={STEPS}", "--set", "train.batch_size=2",
              "--set", "rollout.max_new_tokens=16",
              "--set", "tracking.backends=[wandb, mlflow, tensorboard]",
              "--set", "tracking.project=tiny",
              "--set", f"output_dir={out}", "--set", "run_name=tracked")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out / "tracked"


def csv_points(run_dir) -> dict[str, list[tuple[int, float]]]:
  """metrics.csv as (step, value) per column, its empty cells left out."""
  rows = metrics.read(run_dir / "metrics.csv")
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  points = {key: [(int(r["step"]), r[key]) for r in rows
                  if math.isfinite(r[key])]
            for key in rows[0] if key != "step"}
  # A column empty at every step (judge_length_corr where the judge's
  # scores have no spread) reaches no tracker.
  return {key: p for key, p in points.items() if p}


def assert_same(points, expected):
  # metrics.csv keeps 6 significant digits; the trackers keep the floats.
  assert set(points) == set(expected)
  for key, want in expected.items():
    got = points[key]
    assert [s for s, _ in got] == [s for s, _ in want], key
    assert [v for _, v in got] == pytest.approx(
        [v for _, v in want], rel=1e-5, abs=1e-9), key


def mlflow_client(run_dir):
  from mlflow.tracking import MlflowClient
  return MlflowClient((run_dir / "mlruns").as_uri())


def test_mlflow_metrics_read_back_equal_to_metrics_csv(run):
  client = mlflow_client(run)
  run_id = json.loads((run / "tracking.json").read_text())["mlflow"]
  tracked = client.get_run(run_id)
  assert tracked.info.status == "FINISHED"
  assert tracked.info.run_name == "tracked"
  assert client.get_experiment(tracked.info.experiment_id).name == "tiny"
  expected = csv_points(run)
  assert_same({key: [(m.step, m.value)
                     for m in client.get_metric_history(run_id, key)]
               for key in tracked.data.metrics}, expected)
  # The config: flat params, and the whole of it as config.json.
  assert tracked.data.params["train.steps"] == str(STEPS)
  assert tracked.data.params["tracking.backends"] == str(
      ("wandb", "mlflow", "tensorboard"))
  config = yaml.safe_load((run / "config.yaml").read_text())
  local = client.download_artifacts(run_id, "config.json", str(run / "dl"))
  assert json.loads(pathlib.Path(local).read_text()) == json.loads(
      json.dumps(config))


def wandb_runs(run_dir) -> list[list]:
  """The records of each W&B offline run file under run_dir, in the order
  they were written.
  wandb 0.31 has no Python reader of its own: the file is a 7-byte header
  and then LevelDB's log format (32 KiB blocks; each record a 7-byte
  header, crc32 + length + type, with records split across blocks as
  first/middle/last), each record a wandb_internal_pb2.Record."""
  from wandb.proto import wandb_internal_pb2
  block, full, last = 32768, 1, 4
  runs = []
  for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
    data = path.read_bytes()
    records = []
    assert data[:7] == b":W&B\xe1\xbe\x00", data[:7]
    pos, parts = 7, []
    while pos + 7 <= len(data):
      if block - pos % block < 7:  # the block's zero padding
        pos += block - pos % block
        continue
      length, kind = struct.unpack_from("<HB", data, pos + 4)
      parts.append(data[pos + 7:pos + 7 + length])
      pos += 7 + length
      if kind in (full, last):
        records.append(wandb_internal_pb2.Record.FromString(b"".join(parts)))
        parts = []
    runs.append(records)
  return runs


def item_key(item) -> str:
  """A W&B history or config item's key (wandb-core writes nested keys)."""
  return item.key or "/".join(item.nested_key)


def test_wandb_offline_run_holds_metrics_csv_and_the_config(run):
  records = wandb_runs(run)[0]  # the training's (an evaluation may follow)
  (run_record,) = [r.run for r in records if r.HasField("run")]
  assert run_record.run_id == json.loads(
      (run / "tracking.json").read_text())["wandb"]
  assert (run_record.project, run_record.display_name) == ("tiny", "tracked")
  points: dict[str, list] = {}
  for r in records:
    if r.HasField("history"):
      items = {item_key(i): json.loads(i.value_json) for i in r.history.item}
      step = items.pop("_step")
      for key, value in items.items():
        if not key.startswith("_"):  # W&B's own: _runtime, _timestamp
          points.setdefault(key, []).append((step, value))
  assert_same(points, csv_points(run))
  # The config, as the run started with it: config.yaml's.
  config = {item_key(i): json.loads(i.value_json)
            for i in run_record.config.update if item_key(i) != "_wandb"}
  assert config == json.loads(json.dumps(
      yaml.safe_load((run / "config.yaml").read_text())))
  assert any(r.HasField("exit") and r.exit.exit_code == 0 for r in records)


def tensorboard_scalars(directory) -> dict[str, list[tuple[int, float]]]:
  """The scalars of the TFRecord event files in `directory` (each record:
  length, its crc, the Event, its crc)."""
  from tensorboardX.proto import event_pb2
  points: dict[str, list] = {}
  for path in sorted(directory.glob("events.out.tfevents.*")):
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack_from("<Q", data, pos)
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for value in event.summary.value:
        if value.HasField("simple_value"):
          points.setdefault(value.tag, []).append(
              (event.step, value.simple_value))
  return points


def test_tensorboard_holds_metrics_csv(run):
  points = tensorboard_scalars(run / "tensorboard")
  expected = csv_points(run)
  # TensorBoard keeps float32.
  assert set(points) == set(expected)
  for key, want in expected.items():
    assert points[key] == [(s, pytest.approx(v, rel=1e-5, abs=1e-6))
                           for s, v in want], key


def test_evaluation_goes_to_the_same_tracked_runs(run):
  """As a pipeline logs its held-out evaluation after the GRPO stage: the
  table and the plots go to the runs the training steps went to."""
  plot = inspect_run.plot_rewards(run)
  summaries = {"base": {"examples": 4, "answer_accuracy": 0.25,
                        "answer_accuracy_ci": [0.05, 0.7],
                        "judge_mean": None, "per_task": {}},
               "grpo": {"examples": 4, "answer_accuracy": 0.5,
                        "answer_accuracy_ci": [0.15, 0.85],
                        "judge_mean": 0.4, "per_task": {}}}
  cfg = TrackingConfig(backends=("wandb", "mlflow"), project="tiny")
  tracking.record_evaluation(cfg, run, summaries, [plot], STEPS)

  client = mlflow_client(run)
  run_id = json.loads((run / "tracking.json").read_text())["mlflow"]
  assert client.get_run(run_id).info.status == "FINISHED"
  table = json.loads(pathlib.Path(client.download_artifacts(
      run_id, "eval.json", str(run / "dl"))).read_text())
  assert table["columns"] == ["candidate", "examples", "answer_accuracy",
                              "judge_mean"]
  assert table["data"][1] == ["grpo", 4, 0.5, 0.4]
  assert [f.path for f in client.list_artifacts(run_id, "plots")] == [
      "plots/rewards.png"]

  runs = wandb_runs(run)
  # The resumed W&B run is the same run (an offline directory each time
  # it is opened, which `wandb sync` joins).
  assert len(runs) == 2
  assert {r.run.run_id for records in runs for r in records
          if r.HasField("run")} == {
      json.loads((run / "tracking.json").read_text())["wandb"]}
  records = runs[1]
  logged = [(item_key(i), json.loads(i.value_json)) for r in records
            if r.HasField("history") for i in r.history.item]
  for pair in (("eval/_type", "table-file"), ("eval/nrows", 2),
               ("plots/rewards/_type", "image-file")):
    assert pair in logged
  # At the last training step, not at a step 0 of the resumed run's own.
  assert {v for k, v in logged if k == "_step"} == {STEPS}


def test_a_tracker_that_fails_part_way_is_warned_about_once(tmp_path):
  out = io.StringIO()
  cfg = TrackingConfig(backends=("mlflow", "tensorboard"))
  trackers = tracking.start(cfg, tmp_path, {"train": {"steps": 3}}, out)
  trackers.metrics({"step": 1, "loss": 0.5})
  shutil.rmtree(tmp_path / "mlruns")  # the store is gone under the run
  trackers.metrics({"step": 2, "loss": 0.25})
  trackers.metrics({"step": 3, "loss": 0.125})
  trackers.close()
  warnings = out.getvalue().splitlines()
  assert len(warnings) == 1, warnings
  assert warnings[0].startswith(
      "grar: warning: tracking.mlflow failed at step 2 ("), warnings
  # The others went on.
  assert tensorboard_scalars(tmp_path / "tensorboard")["loss"] == [
      (1, 0.5), (2, 0.25), (3, 0.125)]


@pytest.mark.parametrize("backend", ["wandb", "mlflow", "tensorboard"])
def test_a_tracker_that_cannot_start_stops_the_run_with_one_line(
    tmp_path, backend):
  # A regular file where each backend must make its directory.
  blocker = tmp_path / "not-a-dir"
  blocker.write_text("")
  cfg = TrackingConfig(
      backends=("tensorboard", backend) if backend != "tensorboard"
      else (backend,),
      wandb=WandbTrackingConfig(dir=str(blocker / "sub")),
      mlflow=MlflowTrackingConfig(tracking_uri=(blocker / "sub").as_uri()))
  run_dir = blocker if backend == "tensorboard" else tmp_path
  with pytest.raises(tracking.TrackingError) as err:
    tracking.start(cfg, run_dir, {}, io.StringIO())
  assert str(err.value).startswith(f"tracking.{backend}: could not start (")
  assert "\n" not in str(err.value)
  # What grar's main takes for a user's error: one line, no traceback.
  assert cli.user_error(err.value)
  assert not (tmp_path / "tracking.json").exists()


def test_config_refuses_a_backend_twice_and_unknown_ones():
  with pytest.raises(ValueError, match="each at most once"):
    TrackingConfig(backends=("mlflow", "mlflow"))
  with pytest.raises(ValueError):
    TrackingConfig(backends=("comet",))


def test_wandb_and_mlflow_load_only_when_named():
  code = ("import sys\n"
          "import judge_server.server, orchestrator.cli\n"
          "from orchestrator.stages import grpo, pipeline\n"
          "from orchestrator.rundir import metrics, tracking\n"
          "import pathlib, tempfile\n"
          "d = pathlib.Path(tempfile.mkdtemp())\n"
          "metrics.MetricsWriter(d, 'metrics.csv', 1, 1).close()\n"
          "print(sorted(m for m in sys.modules\n"
          "             if m.split('.')[0] in ('wandb', 'mlflow')))\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == "[]"
