"""Scale-out on a real local Ray cluster (127.0.0.1): rollout worker actors,
judge replica actors serving the real judge over gRPC, and the trainer as
the driver. One judge replica is killed mid-run; every rollout must still be
judged exactly once, from versions within the staleness bound. A replica
whose process dies is restarted by Ray and takes work again; the replica
pool's rejoining is also tested on real judge servers without Ray. Judges
that need no model use the gemini backend against the local Gemini
stand-in (tests/gemini_standin.py): the Gemini API cannot be reached from
here."""

import collections
import contextlib
import dataclasses
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import ray

from judge_server import server as judge_server_lib
from judge_server.backends import factory as backend_factory
from judge_server.config import JudgeConfig
from orchestrator import config as config_lib
from orchestrator.rundir import journal as journal_lib
from orchestrator.scaleout import cluster as ray_cluster
from orchestrator.judge import replicas as ray_judges
from orchestrator.judge.pool import JudgePool
from orchestrator.rundir import layout as run_dir_lib
from orchestrator.stages import grpo as trainer
from orchestrator.judge.client import UNAVAILABLE, request_from_row
from protos import judge_pb2
import gemini_standin
import processes

STEPS = 3


def _wait_listening(head: subprocess.Popen, port: int, log: pathlib.Path,
                    timeout_s: float):
  """Until the head's GCS accepts connections (its log lines are not a
  reliable signal: they come late on a busy host)."""
  deadline = time.monotonic() + timeout_s
  while True:
    assert head.poll() is None, log.read_text()[-3000:]
    assert time.monotonic() < deadline, f"ray head not up in {timeout_s}s"
    with contextlib.suppress(OSError), socket.create_connection(
        ("127.0.0.1", port), timeout=1):
      return
    time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
  """A head node of 4 CPUs on loopback, without token auth (nothing but
  this machine reaches it). Stopped by ending its process group: `ray stop`
  would stop every Ray cluster of this user."""
  port = processes.free_port()
  saved = os.environ.get("RAY_AUTH_MODE")
  os.environ["RAY_AUTH_MODE"] = "disabled"
  directory = tmp_path_factory.mktemp("ray")
  log = directory / "head.log"
  with open(log, "w") as out:
    head = subprocess.Popen(
        [pathlib.Path(sys.executable).parent / "ray", "start", "--head",
         "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=4", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={directory}"],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        # The actors' processes inherit it: the stand-in's key for replicas
        # of the gemini backend.
        env=os.environ | {gemini_standin.KEY_ENV: gemini_standin.KEY})
  try:
    _wait_listening(head, port, log, 120)
    ray.init(address=f"127.0.0.1:{port}", namespace=ray_cluster.NAMESPACE)
    yield
  finally:
    ray.shutdown()
    head.terminate()
    try:
      head.wait(timeout=60)
    finally:
      with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)  # what did not stop in time
    if saved is None:
      os.environ.pop("RAY_AUTH_MODE")
    else:
      os.environ["RAY_AUTH_MODE"] = saved


def _rows(path: pathlib.Path) -> int:
  return max(len(path.read_text().splitlines()) - 1, 0) if path.exists() else 0


@pytest.mark.ray
@pytest.mark.e2e
@pytest.mark.slow
def test_training_survives_a_judge_replica_dying(cluster, tmp_path):
  cfg = config_lib.load(
      processes.ROOT / "configs" / "ray-tiny.yaml",
      [f"output_dir={tmp_path}", "run_name=ray", f"train.steps={STEPS}",
       f"data.path={processes.ROOT}/"
       "data/reasoning-sample.jsonl"])
  run_dir = tmp_path / "ray"
  outcome = {}

  def train():
    try:
      outcome["result"] = trainer.train(cfg)
    except BaseException as e:  # reported by the test's thread
      outcome["error"] = e

  run = threading.Thread(target=train, daemon=True)
  run.start()
  # Killed once step 1 is trained: later batches are still to be judged.
  deadline = time.monotonic() + 900
  while _rows(run_dir / run_dir_lib.METRICS) < 1 and run.is_alive():
    assert time.monotonic() < deadline, "step 1 did not finish in 900s"
    time.sleep(0.2)
  assert "error" not in outcome, outcome["error"]
  ray.kill(ray.get_actor(ray_judges.replica_name("ray", 0),
                         namespace=ray_cluster.NAMESPACE))
  run.join(900)
  assert "result" in outcome, outcome.get("error", "the run did not finish")
  rows = outcome["result"].rows
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  assert rows[-1]["judge_retries"] > 0  # the dead replica's share was re-sent
  assert all(r["stale_dropped"] == 0 for r in rows)

  entries = list(journal_lib.read(run_dir / run_dir_lib.JOURNAL))
  per_step = collections.Counter(e["step"] for e in entries)
  batch = cfg.train.batch_size * cfg.rollout.num_generations
  assert per_step == {s: batch for s in range(1, STEPS + 1)}
  ids = [e["rollout_id"] for e in entries]
  assert len(set(ids)) == len(ids)
  for e in entries:
    assert e["judge_status"] == "SCORED" or (
        e["judge_status"] == "UNSCORABLE" and e["judge_reason"]
        and not e["judge_reason"].startswith(UNAVAILABLE)), e
    # Generated by the version after step - 1 - staleness updates.
    assert 0 <= e["staleness"] <= cfg.train.staleness
    assert e["policy_version"] == e["step"] - 1 - e["staleness"]


def _requests(tag: str) -> list[judge_pb2.ScoreRequest]:
  row = {"prompt": "What is 2 + 2?", "completion": "<answer>4</answer>",
         "rubric_id": "math-solution", "aggregation": "implicit"}
  return [request_from_row(row, f"{tag}-{i}") for i in range(4)]


def _all_scored(results: dict) -> bool:
  return all(r.status == judge_pb2.SCORED for r in results.values())


def _back_at(capsys, index: int) -> list[str]:
  return re.findall(rf"grar: judge replica {index} back at (\S+)",
                    capsys.readouterr().err)


def test_a_lost_replica_takes_work_again_where_it_is_found(monkeypatch,
                                                            capsys):
  """Without Ray: the one replica stops and another judge serves in its
  place; the call that finds it lost waits for it and is answered."""
  monkeypatch.setenv(gemini_standin.KEY_ENV, gemini_standin.KEY)
  with gemini_standin.serving() as standin:
    cfg = JudgeConfig(backend=gemini_standin.backend_config(standin),
                      host="127.0.0.1", port=0)
    with judge_server_lib.on_loopback(
        cfg, backend_factory.build(cfg.backend)) as second:
      first = judge_server_lib.run_in_thread(
          cfg, backend_factory.build(cfg.backend))
      with JudgePool([first.address], 60,
                     locate=lambda i, _: second) as pool:
        try:
          assert _all_scored(pool.score(_requests("before")))
          retries = pool.retries
        finally:
          first.stop(0)
        assert _all_scored(pool.score(_requests("after")))
        assert _back_at(capsys, 0) == [second]
        assert pool.target == second
        assert pool.retries > retries


@pytest.mark.ray
@pytest.mark.slow
def test_a_judge_replica_whose_process_dies_is_restarted_and_rejoins(
    cluster, capsys):
  with gemini_standin.serving() as standin:
    cfg = config_lib.load(processes.ROOT / "configs" / "ray-tiny.yaml",
                          ["ray.judge_replicas=1"])
    cfg = dataclasses.replace(cfg, judge=dataclasses.replace(
        cfg.judge, server=dataclasses.replace(
            cfg.judge.server,
            backend=gemini_standin.backend_config(standin))))
    with ray_judges.started(cfg, "restarts") as serving, JudgePool(
        serving.addresses, 60, locate=serving.locate) as pool:
      (actor,) = serving.actors
      os.kill(ray.get(actor.__ray_call__.remote(lambda _: os.getpid())),
              signal.SIGKILL)
      # The only replica: every result comes from it once restarted.
      assert _all_scored(pool.score(_requests("after")))
      (back,) = _back_at(capsys, 0)
      assert back != serving.addresses[0]
      assert _all_scored(pool.score(_requests("later")))


@pytest.mark.parametrize("override, message", [
    ("ray.judge_replicas=0", "ray.judge_replicas: must be >= 1 exactly when"),
    ("ray.rollout_workers=3", "ray.rollout_workers: 3 workers for "
                              "train.batch_size=2"),
    ("ray.judge_replica.resources={TPU: 0}",
     "ray.judge_replica.resources.TPU: must be > 0"),
    ("ray.startup_timeout_s=0", "ray.startup_timeout_s: must be > 0"),
    ("ray.judge_replica_restarts=-2",
     "ray.judge_replica_restarts: must be >= 0, or -1 for without limit, "
     "got -2"),
])
def test_ray_config_errors_name_the_field(override, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    config_lib.load(processes.ROOT / "configs" / "ray-tiny.yaml", [override])
