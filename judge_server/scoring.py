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


def _rubric_prompts(job: Job, answer: str, few_shot: bool) -> list[str]:
  """The judge prompts of the job's rubric: one holistic prompt (implicit),
  or one per criterion (explicit)."""
  if job.aggregation == "implicit":
    return [prompts.implicit_prompt(
        job.prompt, job.completion, job.reference, job.rubric, answer,
        prompts.implicit_examples(job.rubric) if few_shot else ())]
  return [prompts.explicit_prompt(
      job.prompt, job.completion, job.reference, c, answer,
      prompts.explicit_examples(job.rubric, i) if few_shot else ())
          for i, c in enumerate(job.rubric.criteria)]


async def score(job: Job, batcher: MicroBatcher,
                criteria: CriteriaConfig = CriteriaConfig()) -> Outcome:
  """Asks the judge in `criteria`'s format (the one its backend reads), with
  the rubric's worked examples when few_shot is on, and, with answer_check
  and a reference, the extraction criterion, which takes that share of the
  reward; a rollout backend scores the rollout and the rubric is not
  read."""
  answer, few_shot = criteria.format, criteria.few_shot
  if answer == ROLLOUT:
    (j,) = await batcher.submit([rollout_prompt(job.prompt, job.completion)])
    if j.score is None:
      return _unscorable(f"reward model: {j.reason}")
    return Outcome("scored", j.score)
  check = criteria.answer_check if job.reference.strip() else 0.0
  # At a share of 1 the rubric's prompts would weigh nothing: not asked.
  asked = _rubric_prompts(job, answer, few_shot) if check < 1 else []
  if check:
    asked.append(prompts.answer_check_prompt(job.reference, job.completion,
                                             answer))
  judgements = await batcher.submit(asked)
  checked = judgements.pop() if check else None
  for i, j in enumerate(judgements):
    if j.score is None:
      return _unscorable(
          f"holistic score: {j.reason}" if job.aggregation == "implicit"
          else f"criterion {i}: {j.reason}")
  if checked is not None and checked.score is None:
    return _unscorable(f"answer check: {checked.reason}")
  if not judgements:
    return Outcome("scored", checked.score)
  if job.aggregation == "implicit":
    reward = aggregation.implicit(judgements[0].score)
    per_criterion = ()
  else:
    reward = aggregation.explicit(job.rubric, [j.score for j in judgements])
    per_criterion = tuple((i, j.score, j.mass, j.method)
                          for i, j in enumerate(judgements))
  if checked is not None:
    reward = (1 - check) * reward + check * checked.score
  return Outcome("scored", reward, per_criterion)
