"""Rollouts from a vLLM server that holds the policy's current adapters.

After each update the trainer `publish`es its LoRA as a PEFT adapter
directory (policy_worker/peft_adapter.py) and the server loads it at run
time (`/v1/load_lora_adapter`) under a name of its own per version: vLLM
keys its prefix cache by adapter, so a name reused for new weights could
serve old keys and values. Each step's prompts then go out as token ids,
one request per prompt for its G samples, all at once so that vLLM batches
them; the answer has each sample's token ids and their log-probs under the
distribution vLLM sampled from (the server runs with `--logprobs-mode
processed_logprobs`: after temperature and top-p). The trainer recomputes
those log-probs on its own mesh and corrects the difference
(policy_worker/advantages.truncated_importance_weights).

The requests go through the official `openai` SDK, as every other remote
model's do (judge_server/remote_models.py): the completions with the
fields only vLLM takes in extra_body, the adapter routes, which the SDK does
not model, through its raw post. Its synchronous client, since the
trainer's loop is: the prompts go out from a thread pool.
"""

import concurrent.futures
import contextlib
import pathlib
import shutil
import uuid
from typing import Callable

import httpx2
import numpy as np
import openai

from orchestrator.rollouts import vllm_process
from orchestrator.stages.rollout_source import RolloutSource
from policy_worker import export, peft_adapter, rollout

class VllmEngineError(RuntimeError):
  """The server refused or failed a request; the message says which."""


# Requests in flight at once: the prompts of a step, each from a thread.
_IN_FLIGHT = 32
# Under vLLM's 5 s (VLLM_HTTP_TIMEOUT_KEEP_ALIVE): a request sent on a
# connection as the server drops it for idling gets no answer (the same
# 5 s on both sides races, encode/httpx#2983).
_KEEPALIVE_S = 2.0


def _left_pad(ids: list[int], width: int, pad: int) -> list[int]:
  return [pad] * (width - len(ids)) + ids


class VllmRollouts(RolloutSource):
  """The driver's side of one vLLM server.

  base_url: its OpenAI-style URL (ending in /v1); adapters: a directory
  the server can read, this source's alone (emptied at the start), where
  each version's adapter is written (and the one before removed once
  replaced); on_close: called last by close (stops a server started for
  the run); log: that server's log, named in errors.
  """

  def __init__(self, base_url: str, tokenizer,
               adapters: pathlib.Path, *, alpha: float,
               max_prompt_tokens: int, max_new_tokens: int,
               timeout_s: float, on_close: Callable[[], None] = lambda: None,
               log: pathlib.Path | None = None):
    self._url = base_url.rstrip("/")
    self._tok = tokenizer
    self._adapters = pathlib.Path(adapters).resolve()
    # The run's own: what a killed earlier process of it left is stale.
    shutil.rmtree(self._adapters, ignore_errors=True)
    self._alpha = alpha
    self.max_prompt_tokens = max_prompt_tokens
    self.max_new_tokens = max_new_tokens
    self._stops = set(tokenizer.stop_ids())
    # As the tunix sampler forbids them: no pad, bos or unused token inside
    # a completion.
    self._bias = {str(i): -100 for i in tokenizer.special_ids()}
    # No retries: a load that timed out may have loaded (a second is
    # refused), and a request that outlived timeout_s would wait as long
    # again. The SDK sends a key whatever the server; vLLM started without
    # --api-key ignores its placeholder.
    self._client = openai.OpenAI(
        base_url=self._url, api_key="EMPTY", timeout=timeout_s,
        max_retries=0, http_client=openai.DefaultHttpxClient(
            limits=httpx2.Limits(max_connections=_IN_FLIGHT,
                                 keepalive_expiry=_KEEPALIVE_S)))
    self._names = f"grar-{uuid.uuid4().hex[:8]}"
    self._loaded: tuple[str, pathlib.Path] | None = None
    self._version = 0
    self._threads = concurrent.futures.ThreadPoolExecutor(_IN_FLIGHT)
    self._on_close = on_close
    self._log = f" (server log: {log})" if log else ""

  @property
  def base_url(self) -> str:
    return self._url

  @property
  def adapter(self) -> str | None:
    """The served name of the adapters published last."""
    return self._loaded[0] if self._loaded else None

  def _request(self, path: str, send: Callable[[], object]):
    """What `send()` got from the server's `path`; VllmEngineError naming
    the URL and the server's answer when it got none or an error."""
    url = f"{self._url}/{path}"
    try:
      return send()
    except openai.APIStatusError as e:
      raise VllmEngineError(
          f"rollout.engine vllm: {url} answered {e.status_code}: "
          f"{e.response.text[:500]}{self._log}") from None
    except openai.OpenAIError as e:
      # The SDK wraps the transport's error: name that one.
      cause = e.__cause__ or e
      raise VllmEngineError(f"rollout.engine vllm: {url}: "
                            f"{type(cause).__name__}: {cause}{self._log}"
                            ) from None

  def _post(self, path: str, body: dict) -> None:
    """POSTs `body` to one of vLLM's own routes (the adapters'); their
    answer is a line of text."""
    self._request(path, lambda: self._client.post(f"/{path}", body=body,
                                                  cast_to=str))

  def publish(self, version: int, policy) -> None:
    name = f"{self._names}-v{version}"
    directory = self._adapters / name
    peft_adapter.write(policy, self._alpha, directory)
    self._post("load_lora_adapter",
               {"lora_name": name, "lora_path": str(directory)})
    previous, self._loaded = self._loaded, (name, directory)
    self._version = version
    if previous is not None:
      self._post("unload_lora_adapter", {"lora_name": previous[0]})
      shutil.rmtree(previous[1], ignore_errors=True)

  def _sample(self, prompt: list[int], num_generations: int, *,
              temperature: float, top_p: float, seed: int
              ) -> list[tuple[list[int], list[float]]]:
    """The token ids and their log-probs of the `num_generations` choices
    of one prompt, in index order."""
    answer = self._request("completions", lambda: (
        self._client.completions.create(
            model=self._loaded[0], prompt=prompt, n=num_generations,
            max_tokens=self.max_new_tokens, temperature=temperature,
            top_p=top_p, seed=seed, logprobs=0, logit_bias=self._bias,
            extra_body={"stop_token_ids": sorted(self._stops),
                        "return_token_ids": True,
                        "skip_special_tokens": True})))
    try:
      choices = sorted(answer.choices, key=lambda c: c.index)
      samples = [(list(c.token_ids), list(c.logprobs.token_logprobs))
                 for c in choices]
    except (AttributeError, TypeError) as e:
      # A field the answer lacks (a vLLM older than return_token_ids), or
      # one in another shape.
      raise VllmEngineError(
          f"rollout.engine vllm: {self._url}/completions answered in an "
          f"unknown shape ({type(e).__name__}: {e}){self._log}") from None
    if len(samples) != num_generations:
      raise VllmEngineError(f"rollout.engine vllm: {len(samples)} choices "
                            f"for n={num_generations}")
    return samples

  def generate(self, prompts, num_generations, *, temperature, top_p, seed):
    """Rows as the tunix sampler gives them: prompts as [BOS] + tokens,
    left-padded to max_prompt_tokens; completions up to their first stop
    token (not kept), right-padded to max_new_tokens."""
    if self._loaded is None:
      raise RuntimeError("publish weights before generating")
    pad = self._tok.pad_id()
    encoded = [[self._tok.bos_id(), *self._tok.encode(p)] for p in prompts]
    # Prompt g's samples take seeds seed + g*G .. : vLLM gives sample i of a
    # request seed + i.
    answers = self._threads.map(
        lambda g: self._sample(encoded[g], num_generations,
                               temperature=temperature, top_p=top_p,
                               seed=seed + g * num_generations),
        range(len(prompts)))
    n = len(prompts) * num_generations
    completions = np.full((n, self.max_new_tokens), pad, np.int32)
    logps = np.zeros((n, self.max_new_tokens), np.float32)
    texts = []
    for i, (ids, token_logps) in enumerate(
        s for samples in answers for s in samples):
      length = next((k for k, t in enumerate(ids) if t in self._stops),
                    len(ids))
      completions[i, :length] = ids[:length]
      logps[i, :length] = token_logps[:length]
      texts.append(self._tok.decode(ids[:length]))
    prompt_tokens = np.array(
        [_left_pad(e, self.max_prompt_tokens, pad)
         for e in encoded for _ in range(num_generations)], np.int32)
    return (rollout.Rollouts(prompt_tokens, completions, texts, logps),
            np.full(n, self._version))

  def close(self) -> None:
    self._threads.shutdown(wait=False, cancel_futures=True)
    if self._loaded is not None:
      # A server of the user's (rollout.vllm.base_url) outlives the run.
      with contextlib.suppress(VllmEngineError):
        self._post("unload_lora_adapter", {"lora_name": self._loaded[0]})
      shutil.rmtree(self._loaded[1], ignore_errors=True)
    self._client.close()
    self._on_close()


def opened(cfg, tokenizer, run_dir: pathlib.Path,
           say: Callable[[str], None]) -> VllmRollouts:
  """The rollout source of a run with rollout.engine vllm (cfg: its
  RunConfig): the server at rollout.vllm.base_url, or one started here on
  the model's directory (the tiny random family's base is exported into
  the run directory first), stopped by the source's close."""
  v, rollout_cfg = cfg.rollout.vllm, cfg.rollout
  stack = contextlib.ExitStack()
  try:
    base_url, log = v.base_url, None
    if not base_url:
      model_dir = cfg.model.model_dir
      if model_dir is None:
        model_dir = run_dir / "vllm-base"
        if not model_dir.exists():
          export.export(cfg.model, None, cfg.grpo.lora_alpha, model_dir)
      log = run_dir / "vllm.log"
      say(f"starting vLLM for the rollouts on {model_dir} (log: {log})")
      base_url = stack.enter_context(vllm_process.launched(
          pathlib.Path(v.python), model_dir, "grar-base",
          vllm_process.rollout_args(
              v.dtype, rollout_cfg.max_prompt_tokens
              + rollout_cfg.max_new_tokens, cfg.grpo.lora_rank,
              v.extra_args),
          log, vllm_process.free_port(),
          vllm_process.rollout_env(v.kv_cache_gib), v.startup_timeout_s))
    return VllmRollouts(
        base_url, tokenizer, run_dir / "adapters",
        alpha=cfg.grpo.lora_alpha,
        max_prompt_tokens=rollout_cfg.max_prompt_tokens,
        max_new_tokens=rollout_cfg.max_new_tokens,
        timeout_s=v.request_timeout_s, on_close=stack.close, log=log)
  except BaseException:
    stack.close()
    raise
