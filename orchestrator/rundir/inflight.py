"""The batches a checkpoint leaves in flight, kept so that a resumed run is
the run that would have happened.

With `train.staleness` = s, when step N's checkpoint is written up to s later
batches are already generated, by older policy versions, and with the judge.
Generating them again after a resume would sample from the newer weights: a
different run. So their tokens and the log-probs recorded at generation time
are saved beside the checkpoint, before the manifest that completes it, and a
resumed run sends them to the judge again instead.
"""

import dataclasses
import os
import pathlib

import numpy as np

from orchestrator.rundir import layout
from policy_worker.rollout import Rollouts


@dataclasses.dataclass(frozen=True)
class Generated:
  """A step's batch as the policy side leaves it: N rollouts, their rule
  reward components [N] and per-token log-probs [N, T] (None where the run
  does not compute them), and the policy version of each rollout [N]."""
  step: int
  rollouts: Rollouts
  components: dict[str, np.ndarray]
  ref_logps: np.ndarray | None
  old_logps: np.ndarray | None
  versions: np.ndarray
  time_generate: float
  generated_at: tuple[float, float]  # unix times generation began, ended
  level: int = 0  # the curriculum level its batch was drawn from


def path(run_dir: pathlib.Path, step: int) -> pathlib.Path:
  return run_dir / layout.CHECKPOINTS / f"step_{step}.inflight.npz"


def save(file: pathlib.Path, batches: list[Generated]) -> None:
  """Writes `batches` atomically (by rename): a kill leaves the old file or
  the new one."""
  arrays = {"steps": np.array([b.step for b in batches], np.int64),
            "levels": np.array([b.level for b in batches], np.int64)}
  for i, b in enumerate(batches):
    arrays |= {
        f"{i}/prompt_tokens": b.rollouts.prompt_tokens,
        f"{i}/completion_tokens": b.rollouts.completion_tokens,
        f"{i}/texts": np.array(b.rollouts.texts, dtype=np.str_),
        f"{i}/versions": np.asarray(b.versions),
        f"{i}/times": np.array([b.time_generate, *b.generated_at]),
        **{f"{i}/component/{k}": v for k, v in b.components.items()},
        **{f"{i}/{k}": np.asarray(v) for k, v in (
            ("ref_logps", b.ref_logps), ("old_logps", b.old_logps),
            ("engine_logps", b.rollouts.logps)) if v is not None}}
  tmp = file.with_suffix(".tmp")
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, file)


def load(file: pathlib.Path) -> list[Generated]:
  """The batches `save` wrote; none when the file is absent (a run with
  staleness 0, or whose checkpoint was its last step)."""
  if not file.exists():
    return []
  with np.load(file, allow_pickle=False) as z:
    batches = []
    # Files written before curriculum levels existed hold no "levels".
    levels = (z["levels"].tolist() if "levels" in z.files
              else [0] * len(z["steps"]))
    for i, step in enumerate(z["steps"].tolist()):
      prefix = f"{i}/"

      def optional(key, prefix=prefix):
        return z[prefix + key] if prefix + key in z.files else None

      time_generate, *generated_at = z[prefix + "times"].tolist()
      batches.append(Generated(
          step=step,
          rollouts=Rollouts(z[prefix + "prompt_tokens"],
                            z[prefix + "completion_tokens"],
                            z[prefix + "texts"].tolist(),
                            optional("engine_logps")),
          components={k.removeprefix(prefix + "component/"): z[k]
                      for k in z.files if k.startswith(prefix + "component/")},
          ref_logps=optional("ref_logps"), old_logps=optional("old_logps"),
          versions=z[prefix + "versions"],
          time_generate=time_generate,
          generated_at=tuple(generated_at), level=levels[i]))
  return batches
