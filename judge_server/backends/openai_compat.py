"""A judge behind an OpenAI-compatible HTTP endpoint: vLLM, llama.cpp's
server, hosted APIs.

Each judge prompt is one request for a single token with its top
log-probabilities. The score is the expectation of the digit over the
probabilities of "0".."9" among them (binary format: P(yes) / (P(yes) +
P(no)) over "yes", " Yes" and the like), as the jax backend reads it from the
whole distribution: an answer token missing from the top k has less
probability than each of the k, so little is lost when the judge answers as
asked, and the mass says how much it did. An endpoint that returns no
log-probabilities (or a config that asks for none) gets the digit, or the yes
or no, it wrote parsed instead, and the Judgement says so.

In completions mode a vLLM endpoint is also a teacher (TokenLogprobs): it
takes a prompt as token ids, reads them as they are, and gives the
log-probability of each (`prompt_logprobs`), so one request scores a whole
completion under its prompt.

The requests go through the openai SDK (judge_server.remote_models);
prompt_logprobs and /tokenize, which only vLLM knows, through its extra_body
and its raw POST. No jax here: a judge server with this backend runs on
machines without it.
"""

import asyncio
import functools

from judge_server import prompts, remote_models
from judge_server.backends import base, http_judge
from judge_server.backends.base import (Judgement, Logprobs, LogprobsQuery,
                                        TokenizerInfo)
from judge_server.config import BackendConfig, OpenAIConfig
from protos import contract


def _top_logprobs(chat: bool, choice) -> list[tuple[str, float]] | None:
  """(token text, log-probability) of the first generated token's top
  alternatives, or None when the endpoint gave none."""
  logprobs = choice.logprobs
  if not logprobs:
    return None
  if not chat:
    tops = logprobs.top_logprobs
    return list(tops[0].items()) if tops and tops[0] else None
  content = logprobs.content
  if not content or not content[0].top_logprobs:
    return None
  return [(t.token, t.logprob) for t in content[0].top_logprobs]


def tokenize_url(base_url: str) -> str:
  """Where vLLM tokenizes: /tokenize is vLLM's own route, served at the
  root beside /v1 rather than under it (POST /v1/tokenize is a 404), so it
  is the base URL less its trailing /v1, keeping any prefix a proxy puts
  in front."""
  return base_url.rstrip("/").removesuffix("/v1") + "/tokenize"


def _probe_ids(data) -> list[int]:
  """The ids in a /tokenize answer; TypeError when there are none to
  fingerprint, so a wrong answer is never taken for a tokenizer."""
  tokens = data["tokens"]
  if (not isinstance(tokens, list) or not tokens
      or not all(type(t) is int for t in tokens)):
    raise TypeError(f"tokens is {tokens!r}, not a list of token ids")
  return tokens


def _completion_logprobs(query: LogprobsQuery, choice) -> Logprobs:
  """The log-probabilities vLLM gave the completion's tokens among its
  prompt_logprobs (a field of the choice the SDK does not model): one
  entry per prompt token (None for the first, which nothing precedes),
  keyed by the id of the token that is there, so a value is only read for
  the very token sent."""
  entries = choice.prompt_logprobs
  start = len(query.prompt)
  if len(entries) != start + len(query.completion):
    raise IndexError(f"{len(entries)} prompt_logprobs for "
                     f"{start + len(query.completion)} tokens")
  values = []
  for position, token in enumerate(query.completion, start):
    logprob = entries[position][str(token)]["logprob"]
    if not isinstance(logprob, (int, float)):
      raise TypeError(f"logprob {logprob!r} is not a number")
    values.append(float(logprob))
  return Logprobs(values=tuple(values))


class OpenAIBackend(http_judge.HttpBackend):
  """One HTTP request per judge prompt, at most `max_concurrency` in flight;
  the endpoint batches concurrent requests itself (vLLM does)."""

  name = "openai"

  def __init__(self, config: OpenAIConfig, *, max_batch: int,
               min_score_mass: float, answer: str = prompts.SCALE):
    self._model = remote_models.OpenAIModel(config, "backend.openai")
    super().__init__(self._model, answer)
    self._cfg = config
    self._min_score_mass = min_score_mass
    self.model = config.model
    self.max_batch = max_batch
    self.max_calls_in_flight = config.max_calls_in_flight
    self._tokenize_url = tokenize_url(config.base_url)
    self._tokenizer: TokenizerInfo | None = None

  @property
  def identity(self) -> str:
    return (f"openai:{self._model.url}:{self.model}:top_logprobs="
            f"{self._cfg.top_logprobs}:min_score_mass={self._min_score_mass}:"
            f"answer={self.answer}")

  def _read(self, choice) -> Judgement:
    tops = _top_logprobs(self._model.chat, choice)
    return http_judge.score(self._model.text(choice), tops,
                            self._min_score_mass, self.answer)

  async def _judge_one(self, prompt: str) -> Judgement:
    k = self._cfg.top_logprobs
    return await self._model.complete(
        prompt, self._read, top_logprobs=k, temperature=0.0,
        max_tokens=1 if k else http_judge.PARSE_MAX_TOKENS)

  async def tokenizer_info(self) -> TokenizerInfo | None:
    """The fingerprint of the ids the endpoint gives contract's probe with
    its special tokens (BOS) added, as the trainer fingerprints its own;
    None in chat mode, which takes text only. vLLM's /tokenize says nothing
    of the vocabulary's size, so vocab_size is 0 (unknown). An answer is
    kept: the served model does not change under a running judge. Raises
    RuntimeError naming the URL when there is no answer to read."""
    if self._model.chat:
      return None
    if self._tokenizer is None:
      ids = await self._model.post(
          self._tokenize_url,
          {"model": self._cfg.model, "prompt": contract.TOKENIZER_PROBE,
           "add_special_tokens": True}, _probe_ids)
      if isinstance(ids, Judgement):
        raise RuntimeError(
            f"cannot read the tokenizer of {self._tokenize_url}: "
            f"{ids.reason.removeprefix(base.INFRASTRUCTURE)}")
      self._tokenizer = TokenizerInfo(vocab_size=0,
                                      fingerprint=contract.fingerprint(ids))
    return self._tokenizer

  async def token_logprobs(self, queries: list[LogprobsQuery]
                           ) -> list[Logprobs | Judgement]:
    return list(await asyncio.gather(*map(self._logprobs_one, queries)))

  async def _logprobs_one(self, query: LogprobsQuery) -> Logprobs | Judgement:
    # vLLM computes prompt log-probs from the raw logits, whatever the
    # sampling temperature: they are the temperature-1 ones asked for.
    # Sampling must still make a token (max_tokens 0 is refused unless the
    # prompt is echoed); greedy makes it cheaply. prompt_logprobs 0 gives
    # each position's own token and none of its alternatives, keyed by id;
    # echo with logprobs gives the same values, but by position only and
    # with the prompt detokenized for nothing.
    return await self._model.complete(
        [*query.prompt, *query.completion],
        functools.partial(_completion_logprobs, query), max_tokens=1,
        temperature=0.0, extra_body={"prompt_logprobs": 0})


def build(config: BackendConfig) -> OpenAIBackend:
  return OpenAIBackend(config.openai, max_batch=config.max_batch,
                       min_score_mass=config.min_score_mass,
                       answer=config.criteria.format)
