"""A judge behind Gemini: the Gemini API with a key, or Vertex AI with the
machine's Google credentials (GeminiConfig.vertex), through the google-genai
SDK (judge_server.remote_models).

As with the openai backend, each judge prompt is one request for a single
token with its top log-probabilities (response_logprobs and logprobs), and
the score is the expectation of the digit over those of "0".."9" (binary
format: of yes and no, any case and spacing) among the first token's
top candidates. A model that gives no log-probabilities (or a config that
asks for none) gets the answer it wrote parsed instead, and the Judgement
says so (method "parsed"). No jax here.
"""

from judge_server import prompts, remote_models
from judge_server.backends import base, http_judge
from judge_server.backends.base import Judgement
from judge_server.config import BackendConfig, GeminiConfig


def _top_candidates(candidate) -> list[tuple[str, float]] | None:
  """(token, log-probability) of the first generated token's alternatives,
  or None when the answer has none."""
  tops = (candidate.logprobs_result.top_candidates
          if candidate.logprobs_result else None)
  if not tops or not tops[0].candidates:
    return None
  return [(c.token, c.log_probability) for c in tops[0].candidates]


class GeminiBackend(http_judge.HttpBackend):
  """One request per judge prompt, at most `max_concurrency` in flight."""

  name = "gemini"

  def __init__(self, config: GeminiConfig, *, max_batch: int,
               min_score_mass: float, answer: str = prompts.SCALE):
    self._model = remote_models.GeminiModel(config, "backend.gemini")
    super().__init__(self._model, answer)
    self._cfg = config
    self._min_score_mass = min_score_mass
    self.model = config.model
    self.max_batch = max_batch
    self.max_calls_in_flight = config.max_calls_in_flight

  @property
  def identity(self) -> str:
    return (f"gemini:{self._model.url}:top_logprobs={self._cfg.top_logprobs}:"
            f"min_score_mass={self._min_score_mass}:answer={self.answer}")

  async def _judge_one(self, prompt: str) -> Judgement:
    k = self._cfg.top_logprobs
    logprobs = {"response_logprobs": True, "logprobs": k} if k else {}
    return await self._model.generate(
        prompt, self._read, temperature=0.0,
        max_output_tokens=1 if k else http_judge.PARSE_MAX_TOKENS, **logprobs)

  def _read(self, response) -> Judgement:
    if not response.candidates:
      # No candidates at all: the prompt was blocked, or the shape is new
      # (then the model's call reports the answer).
      if not response.prompt_feedback:
        raise IndexError("no candidates")
      return base.unparseable(
          f"{self._model.url} gave no answer: {response.prompt_feedback}")
    candidate = response.candidates[0]
    tops = _top_candidates(candidate) if self._cfg.top_logprobs else None
    return http_judge.score(remote_models.candidate_text(candidate), tops,
                            self._min_score_mass, self.answer)


def build(config: BackendConfig) -> GeminiBackend:
  return GeminiBackend(config.gemini, max_batch=config.max_batch,
                       min_score_mass=config.min_score_mass,
                       answer=config.criteria.format)
