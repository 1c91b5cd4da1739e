"""The backend interface every judge model implements."""

import abc
import dataclasses

from judge_server import aggregation, config, prompts

# Every unscorable Judgement's reason starts with one of these, whatever the
# backend: the judge could not be asked or did not answer (worth retrying
# when `transient`, counted by the circuit breaker), or it answered with
# nothing a score can come from (asking again the same way would not help).
INFRASTRUCTURE = "infrastructure: "
UNPARSEABLE = "unparseable: "


@dataclasses.dataclass(frozen=True)
class Judgement:
  """The judge's answer to one prompt.

  score: in [0, 1], or None when the judge's answer could not be used.
  mass: probability the judge put on valid answer tokens (the digits, or yes
    and no; 1.0 when the score was parsed from text).
  reason: why score is None; starts with INFRASTRUCTURE or UNPARSEABLE.
  method: how the score was read: "probabilities" (the expectation over the
    judge's answer-token probabilities) or "parsed" (the digit, or yes or
    no, it wrote, where the backend gives no probabilities). Which answer
    format is the backend's `answer`, known from its config.
  transient: the failure may pass (connection refused, timeout, HTTP 429 or
    5xx), so the same prompt may be tried again.
  retry_after_s: the least wait before trying again that the judge asked for
    (HTTP Retry-After); 0 when it said nothing.
  """
  score: float | None
  mass: float
  reason: str = ""
  method: str = "probabilities"
  transient: bool = False
  retry_after_s: float = 0.0

  @property
  def infrastructure_failure(self) -> bool:
    return self.score is None and self.reason.startswith(INFRASTRUCTURE)


def infrastructure(reason: str, *, transient: bool = False,
                   retry_after_s: float = 0.0) -> Judgement:
  return Judgement(None, 0.0, INFRASTRUCTURE + reason, transient=transient,
                   retry_after_s=retry_after_s)


def unparseable(reason: str, mass: float = 0.0,
                method: str = "probabilities") -> Judgement:
  return Judgement(None, mass, UNPARSEABLE + reason, method=method)


def from_choice_probs(probs, min_score_mass: float, answer: str,
                      seen: str = "", wrote: str = "") -> Judgement:
  """The judgement of one prompt's answer-choice probabilities ([K+1],
  aggregation.expected_score), unscorable below min_score_mass; `seen`
  says where the mass was looked for, `wrote` what the judge wrote."""
  score, mass = aggregation.expected_score(probs, min_score_mass)
  if score is not None:
    return Judgement(score, mass)
  return unparseable(
      f"judge put {mass:.2g} probability on the "
      f"{prompts.ANSWER_NAMES[answer]}{seen}, below "
      f"min_score_mass={min_score_mass}{wrote}", mass)


@dataclasses.dataclass(frozen=True)
class LogprobsQuery:
  """A completion to read under the model as a teacher: token ids as the
  model reads them (the prompt's BOS included), both non-empty."""
  prompt: tuple[int, ...]
  completion: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Logprobs:
  """The teacher's answer to a LogprobsQuery: log p(completion[t] |
  prompt, completion[:t]) at temperature 1, one per completion token. A
  query that could not be answered gets a Judgement with score None
  instead (infrastructure() or unparseable()), so retries, the circuit
  breaker and the batcher treat both paths alike; these fields are the
  ones they read."""
  values: tuple[float, ...]
  reason: str = ""
  transient: bool = False
  retry_after_s: float = 0.0
  infrastructure_failure: bool = False


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
  """vocab_size: ids are in [0, vocab_size); 0 when unknown.
  fingerprint: contract.fingerprint of the model's tokenizer."""
  vocab_size: int
  fingerprint: str


class Backend(abc.ABC):
  """Scores judge prompts that end where the first answer token is
  expected: a digit 0-9, or yes or no (`answer`, prompts.FORMATS)."""

  name: str = ""
  model: str = ""
  # The answer format of the prompts it is given, so which tokens it reads;
  # by default the server's.
  answer: str = config.CriteriaConfig().format
  # The most prompts one `judge` call should get; the batcher respects it.
  max_batch: int = 8
  # The most `judge` calls the batcher runs at once. One for a backend that
  # owns its devices; more for an endpoint that serves many requests at once.
  max_calls_in_flight: int = 1

  @property
  def identity(self) -> str:
    """Everything besides the prompt that decides a judgement (model,
    weights, how the score is read, the answer format); judgements are
    cached under it."""
    return f"{self.name}:{self.model}"

  @abc.abstractmethod
  async def judge(self, prompts: list[str]) -> list[Judgement]:
    """One Judgement per prompt, in order. Never raises for one bad prompt:
    that prompt gets a Judgement with score None and a reason."""

  async def tokenizer_info(self) -> TokenizerInfo | None:
    """The tokenizer token_logprobs reads ids with; None when the backend
    gives no token log-probs (the default), and TokenLogprobs is refused."""
    return None

  async def token_logprobs(self, queries: list[LogprobsQuery]
                           ) -> list["Logprobs | Judgement"]:
    """One Logprobs per query, in order, or a Judgement with score None
    for a query that could not be answered; never raises for one bad
    query. Called only when tokenizer_info() is not None."""
    raise NotImplementedError(f"backend {self.name} gives no token log-probs")

  async def close(self) -> None:
    """Releases what the backend holds (devices, connections)."""
