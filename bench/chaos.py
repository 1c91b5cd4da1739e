"""Chaos: a GRPO run of the tiny models while its judge and its trainer are
killed and stalled on a seeded schedule; nothing may be lost or counted twice.

Two runs, each of --steps steps (default 40) with a checkpoint every step:

- process: the judge server in its own process (`python -m judge_server`,
  json logs, its judgement cache in SQLite), the trainer reaching it as
  judge.placement remote. The schedule SIGKILLs the judge three times (it is
  started again on the same port), SIGSTOPs it for --stall-s seconds once,
  and SIGKILLs the trainer once, which is then started again with
  `grar train --resume`.
- ray: configs/ray-tiny.yaml on a Ray head this script starts (two rollout
  workers, two judge replicas). The same schedule, the judge being a
  replica's worker process: Ray restarts it (ray.judge_replica_restarts) and
  the trainer's pool takes it back.

Each event fires once the run's metrics.csv has the schedule's step (five
distinct steps in 3 .. steps-3, drawn with --seed). Then, from the run
directory and the judge's own logs, it checks and prints:

- every step's metrics row exactly once, and the run's last step reached
  (the trainer exits 0, its manifest at the last step);
- every rollout in the journal exactly once, batch_size x num_generations
  a step, each SCORED or UNSCORABLE with a reason;
- no reward judged twice for one rollout: the journal holds one reward for
  it, and (process run, from the judge's json log) a rollout the judge
  answered more than once (a share re-sent after a kill) got the same
  reward each time, its judgement cache surviving the kill. Ray replicas
  log no line per result, so the ray run has the journal's counts only.

The last line is name=value pairs, prefixed by the run (process_..., ray_...).
Takes about 15 minutes on 2 cores.

  .venv/bin/python bench/chaos.py [--steps 40] [--seed 0] [--only process|ray]
"""

import argparse
import collections
import contextlib
import csv
import json
import math
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import processes  # noqa: E402
from orchestrator import devices  # noqa: E402
from orchestrator.judge.process import READY_PREFIX  # noqa: E402
from orchestrator.rundir import journal as journal_lib  # noqa: E402
from orchestrator.rundir import layout  # noqa: E402

EVENTS = ("judge_kill", "judge_kill", "judge_kill", "judge_stop",
          "trainer_kill")
# The tiny judge on one virtual device, as in configs/ray-tiny.yaml.
JUDGE_BACKEND = {"kind": "jax", "model": {"family": "gemma3-tiny", "seed": 1},
                 "mesh": {"fsdp": 1, "tp": 1}, "max_batch": 8}
BATCH, GENERATIONS = 2, 4
TRAIN_SETTINGS = ["train.checkpoint_every=1", f"train.batch_size={BATCH}",
                  f"rollout.num_generations={GENERATIONS}",
                  "rollout.max_new_tokens=16",
                  "mesh.policy.tp=1", "judge.timeout_s=300",
                  f"data.path={ROOT}/data/reasoning-sample.jsonl"]


def schedule(steps: int, seed: int) -> list[tuple[int, str]]:
  """EVENTS at distinct steps in 3 .. steps-3, in step order."""
  rng = random.Random(seed)
  at = sorted(rng.sample(range(3, steps - 2), len(EVENTS)))
  events = list(EVENTS)
  rng.shuffle(events)
  return list(zip(at, events))


def _wait_for(predicate, timeout_s: float, what: str) -> None:
  deadline = time.monotonic() + timeout_s
  while not predicate():
    if time.monotonic() > deadline:
      sys.exit(f"chaos: {what} within {timeout_s:g} s")
    time.sleep(0.2)


def _metrics_rows(run_dir: pathlib.Path) -> list[dict]:
  path = run_dir / layout.METRICS
  if not path.exists():
    return []
  with open(path) as f:
    return list(csv.DictReader(f))


class _Process:
  """A child process whose output goes to a log file of its own each time
  it is started."""

  def __init__(self, name: str, command: list[str], env: dict,
               out: pathlib.Path):
    self.name, self._command, self._env, self._out = name, command, env, out
    self.logs: list[pathlib.Path] = []
    self.proc: subprocess.Popen | None = None

  def start(self) -> None:
    self.logs.append(self._out / f"{self.name}-{len(self.logs)}.log")
    with open(self.logs[-1], "w") as out:
      self.proc = subprocess.Popen(self._command, cwd=ROOT, env=self._env,
                                   stdout=out, stderr=subprocess.STDOUT)

  @property
  def pid(self) -> int:
    return self.proc.pid

  def kill(self) -> None:
    self.proc.kill()
    self.proc.wait()

  def stop(self) -> None:
    if self.proc and self.proc.poll() is None:
      self.proc.terminate()
      try:
        self.proc.wait(60)
      except subprocess.TimeoutExpired:
        self.kill()


class _Judge(_Process):
  """The process run's judge: one port and one cache file, started again
  after each kill."""

  def __init__(self, out: pathlib.Path, env: dict):
    self.port = processes.free_port()
    config = {"host": "127.0.0.1", "port": self.port, "log_format": "json",
              "backend": JUDGE_BACKEND,
              "cache": {"path": str(out / "judge-cache.sqlite")}}
    path = out / "judge.yaml"
    path.write_text(yaml.safe_dump(config))
    super().__init__(
        "judge", [sys.executable, "-m", "judge_server", "--config", str(path)],
        {**env, **devices.process_env("cpu", 0, 1, tpu_port=0)}, out)

  def start(self) -> None:
    super().start()
    _wait_for(lambda: READY_PREFIX in self.logs[-1].read_text()
              or self.proc.poll() is not None, 300, "judge listening")
    if self.proc.poll() is not None:
      sys.exit(f"chaos: the judge exited:\n{self.logs[-1].read_text()}")

  def kill(self) -> None:
    super().kill()
    self.start()


class _Replica:
  """The ray run's judge: a judge replica's worker process, which Ray
  starts again itself after a kill (ray.judge_replica_restarts)."""

  @property
  def pid(self) -> int:
    def found():
      return subprocess.run(["pgrep", "-f", "ray::JudgeReplica"],
                            capture_output=True, text=True).stdout.split()
    _wait_for(found, 300, "a judge replica process")
    return min(map(int, found()))

  def kill(self) -> None:
    os.kill(self.pid, signal.SIGKILL)


def _chaos_run(name: str, out: pathlib.Path, env: dict, config: pathlib.Path,
               settings: list[str], judge, steps: int, seed: int,
               stall_s: float) -> dict:
  """Runs the trainer through the schedule; returns the counts of what
  happened and the checks' inputs."""
  run_dir = out / name
  grar = [sys.executable, "-m", "orchestrator.cli", "train"]
  settings = [f"train.steps={steps}", f"output_dir={out}",
              f"run_name={name}", *settings]
  trainer = _Process(
      "trainer", [*grar, "--config", str(config),
                  *(a for s in settings for a in ("--set", s))], env, out)
  resumed = _Process("trainer-resumed", [*grar, "--resume", str(run_dir)],
                     env, out)
  counts = collections.Counter()
  plan = schedule(steps, seed)
  print(f"[{name}] schedule: "
        + ", ".join(f"{event} after step {s}" for s, event in plan),
        flush=True)
  began = time.monotonic()
  trainer.start()
  running = trainer
  for at, event in plan:
    _wait_for(lambda: len(_metrics_rows(run_dir)) >= at
              or running.proc.poll() is not None, 1800, f"step {at}")
    if running.proc.poll() is not None:
      break
    print(f"[{name}] {time.monotonic() - began:6.0f} s step "
          f"{len(_metrics_rows(run_dir))}: {event}", flush=True)
    if event == "judge_kill":
      judge.kill()
    elif event == "judge_stop":
      pid = judge.pid
      os.kill(pid, signal.SIGSTOP)
      time.sleep(stall_s)
      os.kill(pid, signal.SIGCONT)
    else:
      running.kill()
      resumed.start()
      running = resumed
    counts[event] += 1
  try:
    code = running.proc.wait(3600)
  except subprocess.TimeoutExpired:
    running.kill()
    code = "timeout"
  print(f"[{name}] trainer exited {code} after "
        f"{time.monotonic() - began:.0f} s; logs in {out}", flush=True)
  if code != 0:
    print(running.logs[-1].read_text()[-3000:], flush=True)
  return {"counts": counts, "exit": code, "run_dir": run_dir}


def _judge_answers(logs: list[pathlib.Path]) -> dict[str, list]:
  """rollout_id -> the rewards the judge logged for it (None: unscorable)."""
  answers = collections.defaultdict(list)
  for log in logs:
    for line in log.read_text().splitlines():
      with contextlib.suppress(ValueError):
        entry = json.loads(line)
        if isinstance(entry, dict) and entry.get("message") == "result":
          answers[entry["rollout_id"]].append(entry.get("reward"))
  return answers


def check(run: dict, steps: int, group: int,
          judge_logs: list[pathlib.Path]) -> dict:
  """The run's counts and checks, as name -> number."""
  run_dir = run["run_dir"]
  rows = collections.Counter(int(r["step"]) for r in _metrics_rows(run_dir))
  journal = run_dir / layout.JOURNAL
  entries = list(journal_lib.read(journal)) if journal.exists() else []
  ids = collections.Counter(e["rollout_id"] for e in entries)
  per_step = collections.Counter(e["step"] for e in entries)
  unscorable = [e for e in entries if e["judge_status"] != "SCORED"]
  manifest = layout.latest_manifest(run_dir)
  last = manifest.step if manifest else 0
  answers = _judge_answers(judge_logs)
  again = {i: r for i, r in answers.items() if len(r) > 1}
  differing = sum(
      1 for r in again.values()
      if any(x is None or y is None or not math.isclose(x, y, abs_tol=1e-6)
             for x, y in zip(r, r[1:])))
  result = {
      "steps": steps, "exit_code": run["exit"] if run["exit"] != "timeout"
      else -1,
      "metrics_rows": sum(rows.values()),
      "missing_steps": len(set(range(1, steps + 1)) - set(rows)),
      "duplicate_rows": sum(n - 1 for n in rows.values()),
      "reached_last_step": int(run["exit"] == 0 and last == steps
                               and max(rows, default=0) == steps),
      "journal_rows": len(entries),
      "steps_not_full": sum(1 for s in range(1, steps + 1)
                            if per_step[s] != group),
      "duplicate_rollouts": sum(n - 1 for n in ids.values()),
      "unscorable": len(unscorable),
      "masked_without_reason": sum(1 for e in unscorable
                                   if not e["judge_reason"]),
      "judge_answers": sum(len(r) for r in answers.values()),
      "answered_again": len(again),
      "answered_again_differently": differing,
      **{f"{k}s": v for k, v in run["counts"].items()}}
  result["ok"] = int(
      result["reached_last_step"] == 1 and result["metrics_rows"] == steps
      and not result["missing_steps"] and not result["duplicate_rows"]
      and result["journal_rows"] == steps * group
      and not result["steps_not_full"] and not result["duplicate_rollouts"]
      and not result["masked_without_reason"] and not differing)
  return result


def process_run(out: pathlib.Path, env: dict, args) -> dict:
  judge = _Judge(out, env)
  judge.start()
  try:
    run = _chaos_run(
        "process", out, env, ROOT / "configs" / "cpu-tiny.yaml",
        [*TRAIN_SETTINGS, "judge.placement=remote",
         f"judge.target=127.0.0.1:{judge.port}"],
        judge, args.steps, args.seed, args.stall_s)
  finally:
    judge.stop()
  return check(run, args.steps, BATCH * GENERATIONS, judge.logs)


def ray_run(out: pathlib.Path, env: dict, args) -> dict:
  env = {**env, "RAY_AUTH_MODE": "disabled"}
  cluster = out / "ray-cluster"
  cluster.mkdir(exist_ok=True)
  with processes.ray_head(cluster, env) as port:
    run = _chaos_run(
        "ray", out, env, ROOT / "configs" / "ray-tiny.yaml",
        [*TRAIN_SETTINGS, f"ray.address=127.0.0.1:{port}"],
        _Replica(), args.steps, args.seed, args.stall_s)
  # A replica logs no line per result (it would flood the driver's
  # console, where Ray sends its output): the journal's counts only.
  return check(run, args.steps, BATCH * GENERATIONS, [])


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--steps", type=int, default=40)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--stall-s", type=float, default=20.0,
                  help="how long the judge is SIGSTOPped")
  ap.add_argument("--only", choices=("process", "ray"))
  ap.add_argument("--keep", default="",
                  help="a directory for the runs and logs, kept (default: "
                       "a temporary one, deleted)")
  args = ap.parse_args()
  if args.steps < 3 + len(EVENTS) + 2:
    ap.error(f"--steps: at least {3 + len(EVENTS) + 2}, for the schedule")
  base = (pathlib.Path(args.keep).resolve() if args.keep
          else pathlib.Path(tempfile.mkdtemp(prefix="grar-chaos-")))
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  results = {}
  for name, run in (("process", process_run), ("ray", ray_run)):
    if args.only in (None, name):
      out = base / name
      out.mkdir(parents=True, exist_ok=True)
      results[name] = run(out, env, args)
      print(f"[{name}] " + " ".join(f"{k}={v}" for k, v in
                                    results[name].items()), flush=True)
  print(" ".join(f"{name}_{k}={v}" for name, r in results.items()
                 for k, v in r.items()))
  if not args.keep:
    import shutil
    shutil.rmtree(base, ignore_errors=True)
  sys.exit(0 if all(r["ok"] for r in results.values()) else 1)


if __name__ == "__main__":
  main()
