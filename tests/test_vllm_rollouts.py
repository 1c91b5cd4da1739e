"""rollout.engine vllm against the real vLLM server (CPU build) serving the
shipped Gemma-3-270M, the policy's adapters loaded at run time.

The rows it returns are the tunix sampler's (prompt as [BOS] + tokens,
left-padded; completion up to its stop token, right-padded), and the
log-probs vLLM reports are the trainer's own for the adapters of the version
published last, at the sampling temperature: what truncated importance
sampling compares. Measured (CPU, 2 cores, float32, rank 8, adapters drawn
at std 0.05, temperature 0.7): mean |log p_trainer - log p_vllm| over the
completion tokens 6.8e-5 and 7.0e-5 for the two versions, at most 5.6e-4
on one token (adapters this large move log-probs by tens, which float32
rounding follows; with none it is 2e-5); the second version's adapters
move the first version's tokens' log-probs by 27.6 on average.
"""

import json
import urllib.request

import pytest

from grar_config.model import ModelSpec
from orchestrator.rollouts import vllm_engine, vllm_process
from policy_worker import grpo, models
from policy_worker.advantages import truncated_importance_weights
import random_lora
import test_export

PROMPTS = ["What is 47 + 38? Think step by step.",
           "Name three colours of the rainbow:"]
G = 3
MAX_PROMPT, MAX_NEW = 32, 24
TEMPERATURE = 0.7
# Mean over tokens: 15 times the measured float32 noise, and far under what
# a missing temperature or the previous version's adapters give.
MAX_MEAN_MISMATCH = 1e-3
ALPHA = 16.0



def _models(server) -> set[str]:
  with urllib.request.urlopen(f"{server.base_url}/models", timeout=30) as r:
    return {m["id"] for m in json.load(r)["data"]}


def _mismatch(policy, rolls, tokenizer) -> float:
  mine = grpo.completion_logps(policy, rolls, test_export._mesh(),
                               tokenizer.pad_id(), TEMPERATURE)
  mask = rolls.completion_tokens != tokenizer.pad_id()
  return truncated_importance_weights(mine, rolls.logps, mask, 2.0)[1][
      "engine_logp_mismatch"]


def test_rollouts_follow_each_published_version(vllm, gemma3_270m_dir,
                                                tmp_path):
  policy, tok = models.build_policy(
      ModelSpec(family="gemma3", path=str(gemma3_270m_dir)),
      test_export._mesh(), rank=8, alpha=ALPHA, seed=0)
  random_lora.randomise(policy, 0.05, seed=1)
  source = vllm_engine.VllmRollouts(
      vllm.base_url, tok, tmp_path / "adapters", alpha=ALPHA,
      max_prompt_tokens=MAX_PROMPT, max_new_tokens=MAX_NEW, timeout_s=300)
  try:
    source.publish(0, policy)
    rolls, versions = source.generate(PROMPTS, G, temperature=TEMPERATURE,
                                      top_p=1.0, seed=3)
    assert versions.tolist() == [0] * len(PROMPTS) * G
    # The tunix sampler's rows.
    for i, prompt in enumerate(PROMPTS):
      ids = [tok.bos_id(), *tok.encode(prompt)]
      for row in rolls.prompt_tokens[i * G:(i + 1) * G]:
        assert row[-len(ids):].tolist() == ids
        assert set(row[:-len(ids)].tolist()) <= {tok.pad_id()}
    lengths = rolls.completion_lengths
    assert rolls.completion_tokens.shape == (len(PROMPTS) * G, MAX_NEW)
    assert lengths.min() > 0
    for row, n, text in zip(rolls.completion_tokens, lengths, rolls.texts):
      assert not set(row[:n].tolist()) & set(tok.stop_ids())
      assert not set(row[:n].tolist()) & set(tok.special_ids())
      assert set(row[n:].tolist()) <= {tok.pad_id()}
      assert text == tok.decode(row[:n])
    # A prompt's G samples differ (vLLM seeds them apart).
    assert len({tuple(r) for r in rolls.completion_tokens[:G].tolist()}) > 1
    assert _mismatch(policy, rolls, tok) < MAX_MEAN_MISMATCH

    # The next version's adapters replace the first, whose files go.
    first = set(_models(vllm))
    random_lora.randomise(policy, 0.05, seed=2)
    moved = _mismatch(policy, rolls, tok)
    source.publish(1, policy)
    again, versions = source.generate(PROMPTS, G, temperature=TEMPERATURE,
                                      top_p=1.0, seed=3)
    assert versions.tolist() == [1] * len(PROMPTS) * G
    assert moved > 100 * MAX_MEAN_MISMATCH
    assert _mismatch(policy, again, tok) < MAX_MEAN_MISMATCH
    adapters = _models(vllm) - {vllm.model}
    assert len(adapters) == 1 and not adapters & first
    assert [p.name for p in (tmp_path / "adapters").iterdir()] == [
        adapters.pop()]
  finally:
    source.close()
  assert _models(vllm) == {vllm.model}
  assert not any((tmp_path / "adapters").iterdir())


def test_a_refusing_server_stops_with_its_answer(vllm, tmp_path):
  """An adapter vLLM cannot take (rank above the server's 16) is a one-line
  error naming the URL and vLLM's reason, not a traceback from deep
  inside. vLLM reads the rank before the weights, so the tiny model's
  adapters (built in a second, not the 270M's) show it."""
  policy, tok = models.build_policy(
      ModelSpec(family="gemma3-tiny"), test_export._mesh(), rank=32,
      alpha=ALPHA, seed=0)
  source = vllm_engine.VllmRollouts(
      vllm.base_url, tok, tmp_path / "adapters", alpha=ALPHA,
      max_prompt_tokens=MAX_PROMPT, max_new_tokens=MAX_NEW, timeout_s=300)
  try:
    with pytest.raises(vllm_engine.VllmEngineError, match=(
        r"load_lora_adapter answered \d+: .*LoRA rank 32 is greater than "
        r"max_lora_rank")):
      source.publish(0, policy)
  finally:
    source.close()


def test_an_unreachable_server_stops_with_the_transports_reason(tmp_path):
  """No server at the URL: a one-line error naming the URL and the
  refused connection, which the SDK wraps in its own 'Connection error.'.
  Needs no vLLM (the `vllm` fixture marks the tests above vllm and
  slow)."""
  policy, tok = models.build_policy(
      ModelSpec(family="gemma3-tiny"), test_export._mesh(), rank=4,
      alpha=ALPHA, seed=0)
  url = f"http://127.0.0.1:{vllm_process.free_port()}/v1"
  source = vllm_engine.VllmRollouts(
      url, tok, tmp_path / "adapters", alpha=ALPHA,
      max_prompt_tokens=MAX_PROMPT, max_new_tokens=MAX_NEW, timeout_s=30)
  try:
    with pytest.raises(vllm_engine.VllmEngineError, match=(
        rf"^rollout.engine vllm: {url}/load_lora_adapter: ConnectError: ")):
      source.publish(0, policy)
    assert source.adapter is None
  finally:
    source.close()
