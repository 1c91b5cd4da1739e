"""Evidence that the prepared Gemma-3-270M weights are right: tunix and vLLM,
two independent implementations reading the same directory, give the same
next-token distribution.

Both run in float32. Measured over these prompts (CPU, 2 cores): the
log-probabilities of vLLM's top 20 tokens differ from tunix's by at most
8e-5, and KL (vLLM's top 20 renormalised || tunix's over the same tokens,
renormalised) is at most 1.4e-10. Rounding tunix's weights to bfloat16, a
perturbation far smaller than any conversion mistake (a norm weight off by
one, a transposed projection), moves those log-probabilities by 0.07-0.32
and KL to 2e-5..2.5e-3, and reorders the top 5 of three prompts. The bounds
sit between the two: over ten times (log-probabilities) and thousands of
times (KL) the float32 noise, and over twenty times below what bfloat16
rounding does.
"""

import httpx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from judge_server import prompts
from protos.rubric import Criterion

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TOP_K = 20
MAX_ABS_LOGPROB_DIFF = 1e-3
MAX_KL = 1e-6

_CRITERION = Criterion(text="States that the sum is 85", category="essential",
                       weight=5, polarity="positive")
# Longer than Gemma-3's 512-token sliding window, so the local layers'
# windowing is compared too.
_LONG_REASONING = "<reasoning>" + " ".join(
    f"Step {i}: add the tens and the units of the two numbers, carrying "
    "where needed." for i in range(40)) + "</reasoning><answer>85</answer>"
PROMPTS = {
    "fact": "The capital of France is",
    "code": 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "french": "Les chats sont des animaux",
    "judge": prompts.explicit_prompt(
        "What is 47 + 38?", "<reasoning>7 + 8 = 15, carry 1: 4 + 3 + 1 = 8"
        "</reasoning><answer>85</answer>", "85", _CRITERION),
    "judge-long": prompts.explicit_prompt(
        "What is 47 + 38?", _LONG_REASONING, "85", _CRITERION),
}


def _tunix_logprobs(model, mesh, ids: list[int]) -> np.ndarray:
  """log p(next token | ids) over the whole vocabulary, in float32."""
  tokens = jnp.asarray([ids], jnp.int32)
  seq = len(ids)
  with jax.set_mesh(mesh):
    logits, _ = model(tokens, jnp.arange(seq)[None], None,
                      jnp.tril(jnp.ones((seq, seq), bool))[None])
  return np.asarray(jax.nn.log_softmax(logits[0, -1].astype(jnp.float32)))


def _vllm_top(server, prompt: str) -> tuple[list[int], np.ndarray, list[int]]:
  """(prompt token ids, top-K token ids best first, their log-probs)."""
  response = httpx.post(f"{server.base_url}/completions", timeout=120, json={
      "model": server.model, "prompt": prompt, "max_tokens": 1,
      "temperature": 0.0, "logprobs": TOP_K,
      # vLLM's extensions: ids rather than text, so nothing is compared
      # through a detokenizer.
      "return_tokens_as_token_ids": True, "return_token_ids": True})
  response.raise_for_status()
  choice = response.json()["choices"][0]
  top = sorted(((int(token.removeprefix("token_id:")), logprob)
                for token, logprob in choice["logprobs"]["top_logprobs"][0]
                .items()), key=lambda t: -t[1])
  return (choice["prompt_token_ids"], np.array([t for t, _ in top]),
          np.array([lp for _, lp in top], np.float64))


def _renormalised(logprobs: np.ndarray) -> np.ndarray:
  return np.exp(logprobs - np.logaddexp.reduce(logprobs))


@pytest.mark.parametrize("name", PROMPTS)
def test_tunix_and_vllm_agree_on_the_next_token(vllm, tunix_270m, name):
  model, tokenizer, mesh = tunix_270m
  prompt = PROMPTS[name]
  ids = [tokenizer.bos_id()] + tokenizer.encode(prompt)
  vllm_ids, top_ids, vllm_lp = _vllm_top(vllm, prompt)
  assert vllm_ids == ids, "vLLM and tunix tokenize the prompt differently"
  assert len(top_ids) == TOP_K
  tunix_lp = _tunix_logprobs(model, mesh, ids).astype(np.float64)

  assert list(top_ids[:5]) == list(np.argsort(-tunix_lp)[:5])
  diff = np.max(np.abs(vllm_lp - tunix_lp[top_ids]))
  p, q = _renormalised(vllm_lp), _renormalised(tunix_lp[top_ids])
  kl = float(np.sum(p * (np.log(p) - np.log(q))))
  print(f"{name}: {len(ids)} tokens, max |dlogp| {diff:.2e}, KL {kl:.2e}")
  assert diff < MAX_ABS_LOGPROB_DIFF
  assert kl < MAX_KL
