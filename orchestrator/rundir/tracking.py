"""Experiment trackers (the config's tracking section): TensorBoard, W&B and
MLflow behind one small interface, fed the rows metrics.csv gets.

wandb and mlflow are imported only by the tracker that names them: the
judge server and every run without them start as before. Each tracker's
id in its service is kept in RUN_DIR/tracking.json, so that a resumed run,
or a pipeline logging its evaluation after the GRPO stage, goes on in the
same tracked run.
"""

import json
import math
import os
import pathlib
import sys
import time

from orchestrator.config import TrackingConfig

IDS = "tracking.json"


class TrackingError(ValueError):
  """A tracker that could not start; the message names it."""


class Tracker:
  """One backend. Its methods raise on failure; Trackers decides what a
  failure means for the run."""

  # The id that resumes this tracker's run in its service (None: nothing to
  # resume, as for TensorBoard, which appends to its directory).
  run_id: str | None = None

  def metrics(self, step: int, values: dict[str, float]) -> None:
    raise NotImplementedError

  def table(self, name: str, columns: list[str], rows: list[list],
            step: int) -> None:
    raise NotImplementedError

  def plot(self, path: pathlib.Path, step: int) -> None:
    raise NotImplementedError

  def close(self, failed: bool) -> None:
    raise NotImplementedError


class TensorBoard(Tracker):
  """RUN_DIR/tensorboard: scalars, the config and tables as text, plots as
  images."""

  def __init__(self, cfg: TrackingConfig, run_dir: pathlib.Path,
               config: dict | None, run_id: str | None):
    from tensorboardX import SummaryWriter
    self._writer = SummaryWriter(str(run_dir / "tensorboard"))
    if config is not None:
      self._writer.add_text("config", f"```\n{json.dumps(config, indent=2)}"
                            "\n```")

  def metrics(self, step, values):
    for key, value in values.items():
      self._writer.add_scalar(key, value, step)
    self._writer.flush()

  def table(self, name, columns, rows, step):
    lines = [columns, ["---"] * len(columns), *rows]
    self._writer.add_text(name, "\n".join(
        "| " + " | ".join(map(str, line)) + " |" for line in lines), step)
    self._writer.flush()

  def plot(self, path, step):
    import matplotlib.image
    self._writer.add_image(f"plots/{path.stem}", matplotlib.image.imread(
        path), step, dataformats="HWC")
    self._writer.flush()

  def close(self, failed):
    self._writer.close()


class WandB(Tracker):
  """A W&B run (offline: a directory `wandb sync` uploads later): the
  config as its config, plots as images."""

  def __init__(self, cfg: TrackingConfig, run_dir: pathlib.Path,
               config: dict | None, run_id: str | None):
    directory = pathlib.Path(cfg.wandb.dir or run_dir)
    # Made here: W&B falls back to the system's temporary directory, where
    # nobody would look for the run.
    directory.mkdir(parents=True, exist_ok=True)
    import wandb
    self._wandb = wandb
    self._run = wandb.init(
        project=cfg.project, entity=cfg.wandb.entity or None,
        name=cfg.run_name or run_dir.name, config=config,
        dir=str(directory), mode=cfg.wandb.mode, id=run_id,
        resume="allow" if run_id else None,
        # Off: grar's progress lines are its console, and W&B's capture
        # would move them into its own stream.
        settings=wandb.Settings(console="off"))
    self.run_id = self._run.id

  def metrics(self, step, values):
    self._run.log(values, step=step)

  # At an explicit step: a resumed offline run counts from 0 again, and
  # `wandb sync` drops a step below the run's last.
  def table(self, name, columns, rows, step):
    self._run.log({name: self._wandb.Table(columns=columns, data=rows)},
                  step=step)

  def plot(self, path, step):
    self._run.log({f"plots/{path.stem}": self._wandb.Image(str(path))},
                  step=step)

  def close(self, failed):
    self._run.finish(exit_code=1 if failed else 0)


class MLflow(Tracker):
  """An MLflow run, by the client API (no process-wide active run): the
  config as flat params and config.json, tables as MLflow tables, plots as
  artifacts under plots/."""

  # MLflow's limit on the params of one log_batch call.
  _PARAMS_PER_CALL = 100

  def __init__(self, cfg: TrackingConfig, run_dir: pathlib.Path,
               config: dict | None, run_id: str | None):
    uri = cfg.mlflow.tracking_uri or (run_dir / "mlruns").resolve().as_uri()
    if uri.startswith("file:"):
      # MLflow 3 refuses its file store unless asked: it is the one store
      # that needs no server and no database, which is why grar uses it.
      os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient
    self._client = MlflowClient(uri)
    if run_id:
      self._client.update_run(run_id, status="RUNNING")
    else:
      name = cfg.mlflow.experiment or cfg.project
      experiment = self._client.get_experiment_by_name(name)
      run_id = self._client.create_run(
          experiment.experiment_id if experiment
          else self._client.create_experiment(name),
          run_name=cfg.run_name or run_dir.name).info.run_id
      if config is not None:
        params = [Param(k, v) for k, v in _flat(config)]
        for i in range(0, len(params), self._PARAMS_PER_CALL):
          self._client.log_batch(
              run_id, params=params[i:i + self._PARAMS_PER_CALL])
        self._client.log_dict(run_id, config, "config.json")
    self.run_id = run_id

  def metrics(self, step, values):
    from mlflow.entities import Metric
    now = int(time.time() * 1000)
    self._client.log_batch(self.run_id, metrics=[
        Metric(k, v, now, step) for k, v in values.items()])

  def table(self, name, columns, rows, step):
    self._client.log_table(
        self.run_id, {c: [r[i] for r in rows] for i, c in enumerate(columns)},
        f"{name}.json")

  def plot(self, path, step):
    self._client.log_artifact(self.run_id, str(path), "plots")

  def close(self, failed):
    self._client.set_terminated(self.run_id,
                                "FAILED" if failed else "FINISHED")


BACKENDS: dict[str, type[Tracker]] = {
    "tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}


class Trackers:
  """Every tracker of a run, as one. A tracker that raises is warned about
  once and dropped, and the others go on: a tracking service must not end
  a training run (metrics.csv keeps every row)."""

  def __init__(self, trackers: dict[str, Tracker], out=sys.stderr):
    self._trackers = trackers
    self._out = out

  def metrics(self, row: dict[str, float]) -> None:
    """A metrics.csv row; NaN is a metric the step does not have, so no
    tracker gets a point for it (tensorboardX would also warn each time)."""
    step = int(row["step"])
    values = {k: v for k, v in row.items()
              if k != "step" and math.isfinite(v)}
    self._each(f"step {step}", lambda t: t.metrics(step, values))

  def table(self, name: str, columns: list[str], rows: list[list],
            step: int) -> None:
    self._each(f"table {name}", lambda t: t.table(name, columns, rows, step))

  def plot(self, path: pathlib.Path, step: int) -> None:
    self._each(f"plot {path.name}", lambda t: t.plot(path, step))

  def close(self) -> None:
    # Called from `finally`: an exception on its way out is the run failing.
    failed = sys.exc_info()[0] is not None
    self._each("close", lambda t: t.close(failed))
    self._trackers = {}

  def _each(self, what: str, call) -> None:
    for name, tracker in list(self._trackers.items()):
      try:
        call(tracker)
      except Exception as e:  # noqa: BLE001 (any failure of the service)
        del self._trackers[name]
        print(f"grar: warning: tracking.{name} failed at {what} "
              f"({type(e).__name__}: {e}); it is dropped for the rest of "
              "the run", file=self._out, flush=True)


def start(cfg: TrackingConfig, run_dir: pathlib.Path, config: dict | None,
          out=sys.stderr) -> Trackers:
  """cfg's trackers for run_dir, resuming the runs tracking.json names;
  `config` (None: none to log) is logged to new runs. Raises TrackingError
  for a tracker that cannot start, after closing those that did."""
  ids_path = run_dir / IDS
  ids = json.loads(ids_path.read_text()) if ids_path.exists() else {}
  started: dict[str, Tracker] = {}
  for name in cfg.backends:
    try:
      started[name] = BACKENDS[name](cfg, run_dir, config, ids.get(name))
    except Exception as e:
      Trackers(started, out).close()
      raise TrackingError(f"tracking.{name}: could not start "
                          f"({type(e).__name__}: {e})") from e
    if started[name].run_id is not None:
      ids[name] = started[name].run_id
  if ids:
    ids_path.write_text(json.dumps(ids, indent=2) + "\n")
  return Trackers(started, out)


def record_evaluation(cfg: TrackingConfig, run_dir: pathlib.Path,
                      summaries: dict[str, dict], plots: list[pathlib.Path],
                      step: int) -> None:
  """Logs a held-out evaluation (evaluate's summaries: candidate -> its
  measures) as the table `eval`, a row per candidate with its numeric
  measures, and `plots`, at `step` (the run's last), to run_dir's tracked
  runs."""
  first = next(iter(summaries.values()))
  columns = [k for k, v in first.items()
             if isinstance(v, (int, float)) or v is None]
  rows = [[name, *(math.nan if s.get(k) is None else s[k] for k in columns)]
          for name, s in summaries.items()]
  trackers = start(cfg, run_dir, None)
  try:
    trackers.table("eval", ["candidate", *columns], rows, step)
    for path in plots:
      trackers.plot(path, step)
  finally:
    trackers.close()


def _flat(tree: dict, prefix: str = ""):
  """(dotted key, value as text) of each leaf of a nested config dict."""
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      yield from _flat(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", str(value)
