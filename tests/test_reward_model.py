"""The learned reward model: a short run on the tiny model learns a
separable pair set (held-out pairwise accuracy), its checkpoint and
normalisation reload, and the real judge server with kind reward_model
scores chosen over rejected in [0, 1]."""

import asyncio
import dataclasses
import json
import pathlib
import random

import grpc
import jax
import numpy as np
import pytest

from grar_config.model import ModelSpec
from judge_server import scoring
from judge_server.backends import reward_model as rm_backend
from orchestrator.data.dataset import DatasetError
from orchestrator.rundir import metrics
from orchestrator.stages import reward_model as rm_stage
from policy_worker import reward_model as rm_lib
from protos import judge_pb2, judge_pb2_grpc
import processes

SPEC = ModelSpec(num_layers=1)
STEPS = 6
LABELS = ("Plan", "Check")


def pair(rng: random.Random) -> dict:
  """Same reasoning, then the sum or no answer: separable by one block."""
  a, b = rng.randint(1, 50), rng.randint(1, 50)
  work = f"<reasoning>{a} + {b} = {a + b}.</reasoning>\n"
  return {"prompt": f"What is {a} + {b}?",
          "chosen": f"{work}<answer>{a + b}</answer>",
          "rejected": f"{work}<answer>unknown</answer>"}


def write(path: pathlib.Path, rows) -> pathlib.Path:
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


@pytest.fixture(scope="module")
def mesh():
  return jax.sharding.Mesh(np.array(jax.devices()[:4]).reshape(1, 4),
                           ("fsdp", "tp"))


@pytest.fixture(scope="module")
def pairs():
  rng = random.Random(0)
  return [pair(rng) for _ in range(40)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mesh, pairs):
  """(checkpoint directory, metrics rows) of one run."""
  tmp = tmp_path_factory.mktemp("rm")
  cfg = rm_stage.RewardModelConfig(
      data=str(write(tmp / "pairs.jsonl", pairs)), steps=STEPS, batch_size=4,
      learning_rate=0.01, eval_fraction=0.2, max_tokens=128, eval_every=3)
  final = rm_stage.run_reward_model(cfg, SPEC, mesh, tmp / "run")
  return final, metrics.read(tmp / "run" / "metrics.csv")


def test_training_raises_held_out_pairwise_accuracy(trained):
  _, rows = trained
  before, after = rows[0], rows[-1]
  print("rm eval accuracy:", before["eval_rewards_accuracy"], "->",
        after["eval_rewards_accuracy"], "eval loss:", before["eval_loss"],
        "->", after["eval_loss"])
  assert after["eval_rewards_accuracy"] >= 0.9
  assert after["eval_loss"] < before["eval_loss"] - 0.2


def test_checkpoint_and_normalisation_reload(trained, mesh, pairs):
  final, _ = trained
  norm = json.loads((final / rm_lib.NORMALISATION).read_text())
  assert norm["std"] > 0 and norm["max_tokens"] == 128
  rm, tokenizer, loaded = rm_lib.load(final, SPEC, mesh)
  assert loaded == norm
  held = pairs[-8:]
  with jax.set_mesh(mesh):
    raw = rm_lib.rewards(rm, tokenizer, [p["prompt"] for p in held] * 2,
                         [p["chosen"] for p in held]
                         + [p["rejected"] for p in held], 4, 128)
  assert (raw[:8] > raw[8:]).mean() >= 0.9


def test_a_bad_pair_row_is_one_line(tmp_path, mesh, pairs):
  bad = write(tmp_path / "bad.jsonl",
              [*pairs[:3], {"prompt": "What is 1 + 1?", "chosen": "2"}])
  cfg = rm_stage.RewardModelConfig(data=str(bad), batch_size=1)
  with pytest.raises(DatasetError) as e:
    rm_stage.run_reward_model(cfg, SPEC, mesh, tmp_path / "run")
  assert "\n" not in str(e.value) and "rejected" in str(e.value)
  print(e.value)


def test_step_prefixes_end_at_each_step():
  text = "plan: add.\nCompute: 2 + 2 = 4\ncheck: 4 - 2 = 2\n<answer>4</answer>"
  assert rm_backend.step_prefixes(text, LABELS) == [
      "plan: add.\nCompute: 2 + 2 = 4", text]
  assert rm_backend.step_prefixes(text, ()) == [text]


def test_per_step_reward_is_the_lowest_prefix(trained, mesh):
  final, _ = trained
  rm, tokenizer, norm = rm_lib.load(final, SPEC, mesh)
  completion = ("<reasoning>Plan: add.\nCheck: 3 - 1 = 2</reasoning>\n"
                "<answer>3</answer>")

  def score(text, labels):
    backend = rm_backend.RewardModelBackend(rm, tokenizer, norm, mesh, "t",
                                            str(final), labels, 4)
    (j,) = asyncio.run(backend.judge(
        [scoring.rollout_prompt("What is 1 + 2?", text)]))
    return j.score
  prefixes = rm_backend.step_prefixes(completion, LABELS)
  assert len(prefixes) == 2
  assert score(completion, LABELS) == pytest.approx(
      min(score(p, ()) for p in prefixes))


def test_judge_server_scores_chosen_above_rejected(trained, pairs,
                                                   tmp_path):
  final, _ = trained
  proc = processes.start_judge(
      {"backend": {"kind": "reward_model", "model": dataclasses.asdict(SPEC),
                   "mesh": {"fsdp": 1, "tp": 4}, "max_batch": 4,
                   "criteria": {"format": "rollout"},
                   "reward_model": {"checkpoint": str(final),
                                    "step_labels": list(LABELS)}}},
      tmp_path, env={"JAX_PLATFORMS": "cpu",
                     "XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  try:
    target = processes.judge_address(proc)
    held = pairs[-4:]
    requests = [judge_pb2.ScoreRequest(
        rollout_id=f"{side}-{i}", prompt=p["prompt"], completion=p[side],
        rubric_id="general-reasoning")
        for i, p in enumerate(held) for side in ("chosen", "rejected")]
    with grpc.insecure_channel(target) as channel:
      stub = judge_pb2_grpc.JudgeServiceStub(channel)
      results = stub.ScoreBatch(
          judge_pb2.ScoreBatchRequest(requests=requests), timeout=120).results
  finally:
    processes.stop(proc)
  reward = {r.rollout_id: r.reward for r in results}
  assert all(r.status == judge_pb2.SCORED for r in results), results
  assert all(0 <= x <= 1 for x in reward.values())
  wins = [reward[f"chosen-{i}"] > reward[f"rejected-{i}"] for i in range(4)]
  print("judge rewards:", reward)
  assert all(wins), reward
