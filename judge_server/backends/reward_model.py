"""A learned reward model (`grar rm train`) as the judge: the rollout's
reward is its raw score, normalised to [0, 1] by the fit stored with the
checkpoint.

It reads rollouts, not judge prompts (answer format rollout: the scorer
hands it scoring.rollout_prompt of each job), so it needs no rubric and no
answer tokens. With step_labels, a completion that marks its reasoning
steps is also scored at the end of each step (the prefix up to the next
step's label), and its reward is the lowest of those and the whole: as in
process reward models, a chain is as good as its weakest step, and a wrong
step is not redeemed by a confident ending.
"""

import asyncio
import re
from typing import Sequence

import jax

from judge_server import scoring
from judge_server.backends import base
from judge_server.backends.base import Backend, Judgement
from judge_server.config import ROLLOUT, BackendConfig


def step_prefixes(completion: str, labels: Sequence[str]) -> list[str]:
  """The completion cut before each step label after the first, then whole:
  the prefixes ending at each step. A label is a step's name and a colon
  (any case) starting a line or the reasoning block, as the trainer's
  scaffold reward reads them (orchestrator.rewards)."""
  if not labels:
    return [completion]
  label = re.compile(r"(?:^|<reasoning>)[ \t]*(?:{}):".format(
      "|".join(re.escape(n) for n in labels)), re.IGNORECASE | re.MULTILINE)
  starts = [m.start() for m in label.finditer(completion)][1:]
  return [completion[:s].rstrip() for s in starts] + [completion]


class RewardModelBackend(Backend):
  name = "reward_model"
  answer = ROLLOUT

  def __init__(self, rm, tokenizer, norm: dict, mesh: jax.sharding.Mesh,
               model: str, checkpoint: str, labels: Sequence[str],
               max_batch: int):
    self._rm, self._tokenizer, self._norm = rm, tokenizer, norm
    self._mesh = mesh
    self._labels = tuple(labels)
    self.model = model
    self.max_batch = max_batch
    self._checkpoint = checkpoint

  @property
  def identity(self) -> str:
    return (f"{self.name}:{self.model}:{self._checkpoint}:"
            f"{','.join(self._labels)}")

  def _too_long(self, prompt: str, completion: str) -> str:
    n = 2 + len(self._tokenizer.encode(prompt)) + len(
        self._tokenizer.encode(completion))
    limit = self._norm["max_tokens"]
    return (f"rollout has {n} tokens, more than the reward model's "
            f"max_tokens={limit}") if n > limit else ""

  def _judge_sync(self, prompts: list[str]) -> list[Judgement]:
    from policy_worker import reward_model as rm_lib
    results: list[Judgement | None] = [None] * len(prompts)
    rows, owner = [], []
    for i, text in enumerate(prompts):
      prompt, completion = scoring.parse_rollout(text)
      if reason := self._too_long(prompt, completion):
        results[i] = base.infrastructure(reason)
        continue
      for prefix in step_prefixes(completion, self._labels):
        rows.append((prompt, prefix))
        owner.append(i)
    if rows:
      with jax.set_mesh(self._mesh):
        raw = rm_lib.rewards(self._rm, self._tokenizer,
                             [p for p, _ in rows], [c for _, c in rows],
                             self.max_batch, self._norm["max_tokens"])
      scores = rm_lib.normalise(raw, self._norm["mean"], self._norm["std"])
      for i in set(owner):
        worst = min(s for s, o in zip(scores, owner) if o == i)
        results[i] = Judgement(float(worst), 1.0, method="reward_model")
    return results

  async def judge(self, prompts: list[str]) -> list[Judgement]:
    return await asyncio.to_thread(self._judge_sync, prompts)


def build(cfg: BackendConfig, mesh: jax.sharding.Mesh) -> RewardModelBackend:
  """The reward model of cfg.reward_model.checkpoint on `mesh`."""
  from policy_worker import reward_model as rm_lib
  rm, tokenizer, norm = rm_lib.load(cfg.reward_model.checkpoint, cfg.model,
                                    mesh)
  return RewardModelBackend(rm, tokenizer, norm, mesh, cfg.model.family,
                            cfg.reward_model.checkpoint,
                            cfg.reward_model.step_labels, cfg.max_batch)
