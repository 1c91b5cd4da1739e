"""Scoring one rollout against its rubric: prompts out, one reward back."""

import dataclasses
import json

from judge_server import aggregation, prompts
from judge_server.batching import MicroBatcher
from judge_server.config import ROLLOUT, CriteriaConfig
from protos.rubric import Rubric

AGGREGATIONS = ("explicit", "implicit")


@dataclasses.dataclass(frozen=True)
class Job:
  """One rollout to score; checked on construction, errors name the field."""
  rollout_id: str
  prompt: str
  completion: str
  reference: str
  rubric: Rubric
  aggregation: str

  def __post_init__(self):
    for name in ("rollout_id", "prompt", "completion", "reference"):
      if not isinstance(getattr(self, name), str):
        raise ValueError(f"{name}: must be a string")
    if not self.rollout_id:
      raise ValueError("rollout_id: must not be empty")
    if not self.prompt.strip():
      raise ValueError("prompt: must not be empty")
    if not isinstance(self.rubric, Rubric):
      raise ValueError("rubric: must be a Rubric")
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(f"aggregation: {self.aggregation!r} is not one of "
                       f"{', '.join(AGGREGATIONS)}")


@dataclasses.dataclass(frozen=True)
class Outcome:
  """status "scored": reward in [0, 1] and, for explicit aggregation, one
  (index, score, mass, method) per criterion (method as in Judgement).
  status "unscorable": reward 0 means nothing and `reason` says why."""
  status: str
  reward: float
  criteria: tuple[tuple[int, float, float, str], ...] = ()
  reason: str = ""


def _unscorable(reason: str) -> Outcome:
  return Outcome("unscorable", 0.0, (), reason)


def rollout_prompt(prompt: str, completion: str) -> str:
  """What a backend of format rollout is given for a job: the prompt and
  completion themselves, as one string so the batcher and the cache treat
  it as any judge prompt."""
  return json.dumps([prompt, completion])


def parse_rollout(text: str) -> tuple[str, str]:
  """(prompt, completion) of a rollout_prompt."""
  prompt, completion = json.loads(text)
  return prompt, completion


async def score(job: Job, batcher: MicroBatcher,
                criteria: CriteriaConfig = CriteriaConfig()) -> Outcome:
  """Asks the judge in `criteria`'s format (the one its backend reads), with
  the rubric's worked examples when few_shot is on; a rollout backend
  scores the rollout and the rubric is not read."""
  answer, few_shot = criteria.format, criteria.few_shot
  if answer == ROLLOUT:
    (j,) = await batcher.submit([rollout_prompt(job.prompt, job.completion)])
    if j.score is None:
      return _unscorable(f"reward model: {j.reason}")
    return Outcome("scored", j.score)
  if job.aggregation == "implicit":
    examples = prompts.implicit_examples(job.rubric) if few_shot else ()
    (j,) = await batcher.submit([prompts.implicit_prompt(
        job.prompt, job.completion, job.reference, job.rubric, answer,
        examples)])
    if j.score is None:
      return _unscorable(f"holistic score: {j.reason}")
    return Outcome("scored", aggregation.implicit(j.score))
  judgements = await batcher.submit([
      prompts.explicit_prompt(
          job.prompt, job.completion, job.reference, c, answer,
          prompts.explicit_examples(job.rubric, i) if few_shot else ())
      for i, c in enumerate(job.rubric.criteria)])
  for i, j in enumerate(judgements):
    if j.score is None:
      return _unscorable(f"criterion {i}: {j.reason}")
  return Outcome(
      "scored",
      aggregation.explicit(job.rubric, [j.score for j in judgements]),
      tuple((i, j.score, j.mass, j.method) for i, j in enumerate(judgements)))
