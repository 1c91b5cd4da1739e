"""`grar pipeline`: SFT, SimPO and GRPO chained through their LoRA
checkpoints in one directory, and `--resume` skipping finished stages."""

import json
import shutil

import numpy as np
from flax import traverse_util
import pytest

from orchestrator import cli
from orchestrator.stages import pipeline
from orchestrator import config as config_lib
from policy_worker import checkpoint

SFT_LR, SIMPO_LR, GRPO_LR = 3e-3, 3e-3, 1e-3
ARGS = ("--set", "sft.steps=2", "--set", f"sft.learning_rate={SFT_LR}",
        "--set", "simpo.steps=1", "--set", f"simpo.learning_rate={SIMPO_LR}",
        "--set", "train.steps=1", "--set", f"grpo.learning_rate={GRPO_LR}")


def _pipeline(capsys, *args):
  code = cli.main(["pipeline", *args])
  printed = capsys.readouterr()
  assert code == 0, printed.err[-3000:]
  return printed.err


def _lora_b(path):
  return {k: v for k, v in traverse_util.flatten_dict(
      checkpoint.load_lora(path)).items() if k[-1].endswith("lora_b")}


def _moved_by_at_most(after, before, lr):
  """One optimizer step (Adam moves each parameter by at most ~lr) from
  `before`, which is itself far from qwix's fresh adapters (B = 0)."""
  step = max(np.abs(after[k] - before[k]).max() for k in before)
  return 0 < step <= 1.01 * lr and max(
      np.abs(b).max() for b in before.values()) > 2 * lr


@pytest.mark.e2e
@pytest.mark.slow
def test_stages_chain_and_resume_skips_them(tmp_path, capsys):
  _pipeline(capsys, "--config", "configs/pipeline-tiny.yaml", *ARGS,
            "--set", f"output_dir={tmp_path}", "--set", "run_name=p")
  pdir = tmp_path / "p"
  done = json.loads((pdir / pipeline.STAGES).read_text())
  assert done == {"sft": "sft/checkpoints/step_2",
                  "simpo": "simpo/checkpoints/step_1",
                  "grpo": "grpo/checkpoints/step_1"}
  grpo_cfg = config_lib.load(pdir / "grpo" / "config.yaml")
  assert grpo_cfg.grpo.init_from == str(pdir / done["simpo"])
  sft, simpo, grpo = (_lora_b(pdir / done[s]) for s in ("sft", "simpo",
                                                        "grpo"))
  # Each stage took one step from the previous stage's adapters.
  assert _moved_by_at_most(simpo, sft, SIMPO_LR)
  assert _moved_by_at_most(grpo, simpo, GRPO_LR)
  assert pipeline.trained(pdir).checkpoint == pdir / done["grpo"]

  # Everything finished: nothing runs again.
  stamps = {p: p.stat().st_mtime_ns for p in pdir.rglob("*") if p.is_file()}
  err = _pipeline(capsys, "--resume", str(pdir))
  for stage in ("sft", "simpo", "grpo"):
    assert f"{stage} finished earlier, skipped" in err
  assert {p: p.stat().st_mtime_ns for p in stamps
          if p.name != "config.yaml"} == {
              p: t for p, t in stamps.items() if p.name != "config.yaml"}

  # Stopped after SimPO: only GRPO runs, from SimPO's checkpoint.
  shutil.rmtree(pdir / "grpo")
  (pdir / pipeline.STAGES).write_text(json.dumps(
      {k: v for k, v in done.items() if k != "grpo"}))
  err = _pipeline(capsys, "--resume", str(pdir))
  assert "sft finished earlier" in err and "simpo finished earlier" in err
  assert f"grpo from {pdir / done['simpo']}" in err
  assert json.loads((pdir / pipeline.STAGES).read_text()) == done
  assert _moved_by_at_most(_lora_b(pdir / done["grpo"]), simpo, GRPO_LR)


def test_stage_lora_must_match_grpo(capsys):
  code = cli.main(["pipeline", "--config", "configs/pipeline-tiny.yaml",
                   "--set", "sft.lora_rank=8"])
  assert code == 2
  assert "sft.lora_rank: 8 differs from grpo.lora_rank=4" in (
      capsys.readouterr().err)
