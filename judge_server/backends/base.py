"""The backend interface every judge model implements."""

import abc
import dataclasses


@dataclasses.dataclass(frozen=True)
class Judgement:
  """The judge's answer to one prompt.

  score: in [0, 1], or None when the judge's answer could not be used.
  mass: probability the judge put on valid score tokens (1.0 when the score
    was parsed from text).
  reason: why score is None.
  method: how the score was read: "probabilities" (the expectation over the
    judge's score-token probabilities) or "parsed" (the number it wrote, where
    the backend gives no probabilities).
  """
  score: float | None
  mass: float
  reason: str = ""
  method: str = "probabilities"


class Backend(abc.ABC):
  """Scores judge prompts that end where one score digit is expected."""

  name: str = ""
  model: str = ""
  # The most prompts one `judge` call should get; the batcher respects it.
  max_batch: int = 8

  @abc.abstractmethod
  async def judge(self, prompts: list[str]) -> list[Judgement]:
    """One Judgement per prompt, in order. Never raises for one bad prompt:
    that prompt gets a Judgement with score None and a reason."""

  async def close(self) -> None:
    """Releases what the backend holds (devices, connections)."""
