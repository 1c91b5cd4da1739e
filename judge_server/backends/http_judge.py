"""What the remote judge backends (openai, gemini) share: reading a score
from the top alternatives of the first answer token (a digit, or yes or no)
or from the written text, and one request per judge prompt through their
model's client (judge_server.remote_models).

No jax here: a judge server with a remote backend runs on machines without
it.
"""

import abc
import asyncio
import math

import numpy as np

from judge_server import parsing, prompts, remote_models
from judge_server.backends import base
from judge_server.backends.base import Backend, Judgement

# Room for a written answer such as "7/9" or "Score: 7" when the digit is
# parsed rather than read from probabilities.
PARSE_MAX_TOKENS = 8


def choice_probs(tops: list[tuple[str, float]],
                 choices: tuple[str, ...]) -> np.ndarray:
  """[K+1] probability of each answer among (token, log-probability)
  alternatives. An answer can come as more than one token ("7" and " 7",
  "yes", " Yes"): all of them mean the judge writes it."""
  probs = np.zeros(len(choices))
  for token, logprob in tops:
    word = token.strip().lower()
    if word in choices:
      probs[choices.index(word)] += math.exp(logprob)
  return probs


def _parse(text: str, answer: str) -> float:
  if answer == prompts.BINARY:
    return float(parsing.parse_yes_no(text))
  return parsing.parse_score(text) / prompts.MAX_SCORE


def score(text: str, tops: list[tuple[str, float]] | None,
          min_score_mass: float, answer: str) -> Judgement:
  """The expected score over the answers of format `answer` among `tops`,
  or the answer written in `text` where the endpoint gave no alternatives
  (method "parsed")."""
  if tops is None:
    try:
      value = _parse(text, answer)
    except parsing.UnparseableScore as e:
      return base.unparseable(str(e), method="parsed")
    return Judgement(value, 1.0, method="parsed")
  return base.from_choice_probs(
      choice_probs(tops, prompts.CHOICES[answer]), min_score_mass, answer,
      f" among its top {len(tops)} tokens", f" (it wrote {text!r})")


class HttpBackend(Backend):
  """One request per judge prompt to `remote` (a remote_models model, its
  requests in flight bounded by its endpoint's max_concurrency), answers
  read in format `answer`; subclasses ask and read."""

  def __init__(self, remote: remote_models.RemoteModel, answer: str):
    if answer not in prompts.CHOICES:
      raise ValueError(f"answer: {answer!r} is not one of "
                       f"{', '.join(prompts.FORMATS)}")
    self.answer = answer
    self._remote = remote

  @abc.abstractmethod
  async def _judge_one(self, prompt: str) -> Judgement:
    """The judgement of one prompt, never raised."""

  async def judge(self, prompts: list[str]) -> list[Judgement]:
    return list(await asyncio.gather(*map(self._judge_one, prompts)))

  async def close(self) -> None:
    await self._remote.close()
