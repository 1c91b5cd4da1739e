"""The run directory, and what makes a run resumable after a crash.

A step is complete when its checkpoint directory and its manifest
`checkpoints/step_N.json` both exist; the manifest is written last, by
rename, so a crash never leaves a manifest without its checkpoint. The
manifest records how far the journal and metrics had got, so a resumed run
cuts off whatever a crashed run wrote after its last complete step.
"""

import dataclasses
import datetime
import json
import os
import pathlib
import re

import yaml

from orchestrator import version

CONFIG = "config.yaml"
METRICS = "metrics.csv"
JOURNAL = "journal.msgpack"
CHECKPOINTS = "checkpoints"
_MANIFEST = re.compile(r"step_(\d+)\.json")


class RunDirError(RuntimeError):
  pass


@dataclasses.dataclass(frozen=True)
class Manifest:
  step: int
  journal_bytes: int  # journal length after this step's records


def create(output_dir: str, run_name: str, config_dict: dict) -> pathlib.Path:
  name = run_name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  run_dir = pathlib.Path(output_dir) / name
  if run_dir.exists() and any(run_dir.iterdir()):
    raise RunDirError(f"run directory {run_dir} exists and is not empty; "
                      "pick another run_name, or resume it with --resume")
  (run_dir / CHECKPOINTS).mkdir(parents=True)
  write_config(run_dir, config_dict)
  return run_dir


def write_config(run_dir: pathlib.Path, config_dict: dict) -> None:
  """RUN_DIR/config.yaml: the run's config, headed by the version of grar
  that wrote it. A comment, so the copy still loads as the config it is
  (--resume reads it back; unknown keys are errors)."""
  (run_dir / CONFIG).write_text(
      f"# written by grar {version.version()}\n"
      + yaml.safe_dump(config_dict, sort_keys=False))


def checkpoint_dir(run_dir: pathlib.Path, step: int) -> pathlib.Path:
  return run_dir / CHECKPOINTS / f"step_{step}"


def write_manifest(run_dir: pathlib.Path, manifest: Manifest) -> None:
  path = run_dir / CHECKPOINTS / f"step_{manifest.step}.json"
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(dataclasses.asdict(manifest)))
  os.replace(tmp, path)


def latest_manifest(run_dir: pathlib.Path) -> Manifest | None:
  """The last complete step's manifest, or None if no step completed."""
  steps = sorted(
      (int(m.group(1)) for p in (run_dir / CHECKPOINTS).glob("step_*.json")
       if (m := _MANIFEST.fullmatch(p.name))), reverse=True)
  for step in steps:
    if checkpoint_dir(run_dir, step).is_dir():
      data = json.loads((run_dir / CHECKPOINTS / f"step_{step}.json").read_text())
      return Manifest(**data)
  return None


def rewind(run_dir: pathlib.Path, manifest: Manifest | None) -> None:
  """Drops journal bytes and metrics rows written after the manifest's step."""
  journal = run_dir / JOURNAL
  if journal.exists():
    with open(journal, "r+b") as f:
      f.truncate(manifest.journal_bytes if manifest else 0)
  metrics = run_dir / METRICS
  if metrics.exists():
    lines = metrics.read_text().splitlines(keepends=True)
    keep = manifest.step if manifest else 0
    # The header, then one row per step in order.
    metrics.write_text("".join(lines[:1 + keep]) if keep else "")
