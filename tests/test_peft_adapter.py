"""peft_adapter: a policy's LoRA as a PEFT adapter directory.

The tiny model checks the layout against export's merged weights, an
already tested path (B @ A * alpha / r is the merged delta, module by
module). The shipped 270M checks it against vLLM: loaded at run time into
the shared server, the adapter gives the completion tokens of
test_vllm_teacher's pairs the log-probs tunix gives them with the LoRA.

Measured (CPU, 2 cores, float32, rank 8, alpha 16, A and B drawn at
std 0.02): vLLM with the adapter differs from tunix with the LoRA by at most
4.8e-5 (1.3e-5 to 1.9e-5 on average per pair), as it does without one
(test_vllm_teacher: 5.0e-5), while the adapter moves vLLM's log-probs from
the base model's by 1.4 to 4.1 at most per pair. The bound is five times
that noise; an adapter whose delta were 1 % off (a wrong alpha, say) would
miss by about 1 % of what it moves, 0.014-0.04, sixty times the bound. The
noise grows with the adapter: at std 0.05, moving log-probs by 30-40 (a
model no longer of any use), it was 4.7e-4.
"""

import json
import time
import urllib.request

import numpy as np
import pytest
import safetensors.numpy

from grar_config.model import ModelSpec
from policy_worker import checkpoint, export, grpo, models, peft_adapter
from policy_worker.rollout import Rollouts
from policy_worker.tokenizer import HFTokenizer
from judge_server.backends import base
import test_export
import test_vllm_teacher as teacher

MAX_ABS_LOGPROB_DIFF = 2.5e-4
# What the adapter must move vLLM's log-probs by, at the least, in every
# pair, for the comparison to mean something.
MIN_MOVED = 0.5
ALPHA = 16.0


def _merged_delta(spec, lora: dict, alpha: float) -> dict:
  """HF name -> what the LoRA adds to that weight, by export's merge."""
  base_model, _ = models.build_model(spec, test_export._mesh())
  merged = export.hf_tensors(export.merged_weights(base_model, lora, alpha),
                             base_model.config)
  unmerged = export.hf_tensors(export.merged_weights(base_model, None, alpha),
                               base_model.config)
  return {name: merged[name] - unmerged[name] for name in merged}


@pytest.mark.parametrize("kv_heads", [1, 4], ids=["kv_einsum", "qkv_einsum"])
def test_the_adapter_adds_what_the_merged_export_adds(tmp_path, kv_heads):
  """Every module's B @ A * lora_alpha / r is export's merged delta, from
  the live model and from its checkpoint alike; nothing else is adapted.
  4 kv heads of 4 make tunix stack q, k and v in one einsum."""
  spec = ModelSpec(family="gemma3-tiny", num_kv_heads=kv_heads)
  model = test_export.lora_checkpoint(spec, tmp_path / "ckpt", rank=4,
                                      alpha=ALPHA, scale=0.3)
  out = peft_adapter.write(model, ALPHA, tmp_path / "adapter")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "ckpt"]
  config = json.loads((out / peft_adapter.CONFIG).read_text())
  assert config["peft_type"] == "LORA" and config["lora_alpha"] == ALPHA
  assert config["r"] == 4 and not config["use_rslora"]
  targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
             "down_proj")
  assert config["target_modules"] == sorted(targets)
  tensors = safetensors.numpy.load_file(out / peft_adapter.WEIGHTS)
  lora = checkpoint.load_lora(tmp_path / "ckpt")
  assert tensors.keys() == peft_adapter.peft_tensors(lora)[0].keys()
  for name, value in peft_adapter.peft_tensors(lora)[0].items():
    np.testing.assert_array_equal(tensors[name], value)

  delta = _merged_delta(spec, lora, ALPHA)
  adapted = set()
  for name, want in delta.items():
    module = name.removeprefix("model.").removesuffix(".weight")
    a = tensors.get(f"base_model.model.model.{module}.lora_A.weight")
    if a is None:
      assert not want.any(), name
      continue
    b = tensors[f"base_model.model.model.{module}.lora_B.weight"]
    assert a.dtype == b.dtype == np.float32
    assert a.shape == (4, want.shape[1]) and b.shape == (want.shape[0], 4)
    got = b @ a * ALPHA / 4
    assert np.abs(want).max() > 0.1, name  # the LoRA does change it
    np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)
    adapted.add(module)
  assert len(adapted) == 2 * len(targets)
  assert len(tensors) == 2 * len(adapted)


def test_an_existing_directory_is_refused(tmp_path):
  mesh = test_export._mesh()
  model, _ = models.build_policy(ModelSpec(), mesh, rank=2, alpha=4.0,
                                 seed=0)
  (tmp_path / "adapter").mkdir()
  with pytest.raises(ValueError, match="out: .*adapter exists"):
    peft_adapter.write(model, 4.0, tmp_path / "adapter")
  assert not any((tmp_path / "adapter").iterdir())
  assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def _post(server, path: str, body: dict) -> str:
  root = server.base_url  # ends in /v1, as the adapter endpoints do
  request = urllib.request.Request(
      f"{root}/{path}", data=json.dumps(body).encode(),
      headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=120) as response:
    return response.read().decode()


def _vllm_logprobs(server, model_name: str, queries) -> list[np.ndarray]:
  answers = teacher._run(
      teacher._backend(base_url=server.base_url, model=model_name),
      lambda b: b.token_logprobs(queries))
  for answer in answers:
    assert isinstance(answer, base.Logprobs), answer
  return [np.array(answer.values) for answer in answers]


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_with_the_adapter_gives_tunixs_lora_log_probs(
    vllm, gemma3_270m_dir, tmp_path):
  spec = ModelSpec(family="gemma3", path=str(gemma3_270m_dir))
  started = time.monotonic()
  model = test_export.lora_checkpoint(spec, tmp_path / "ckpt", rank=8,
                                      alpha=ALPHA, scale=0.02)
  mesh = test_export._mesh()
  tokenizer = HFTokenizer(gemma3_270m_dir)
  queries = [base.LogprobsQuery(
      tuple([tokenizer.bos_id(), *tokenizer.encode(prompt)]),
      tuple(tokenizer.encode(completion)))
      for prompt, completion in teacher.PAIRS]
  tunix = [grpo.completion_logps(
      model, Rollouts(np.array([q.prompt]), np.array([q.completion]), [""]),
      mesh, tokenizer.pad_id())[0] for q in queries]
  built = time.monotonic()
  out = peft_adapter.write(model, ALPHA, tmp_path / "adapter")
  written = time.monotonic()
  name = "policy-step-0"
  _post(vllm, "load_lora_adapter", {"lora_name": name, "lora_path": str(out)})
  loaded = time.monotonic()
  try:
    adapted = _vllm_logprobs(vllm, name, queries)
    plain = _vllm_logprobs(vllm, vllm.model, queries)
  finally:
    _post(vllm, "unload_lora_adapter", {"lora_name": name})
  print(f"tunix {built - started:.1f} s, write {written - built:.2f} s, "
        f"load {loaded - written:.2f} s, vLLM {time.monotonic() - loaded:.1f}"
        " s")
  for query, want, got, before in zip(queries, tunix, adapted, plain,
                                      strict=True):
    diff = np.abs(got - want)
    moved = np.abs(got - before).max()
    print(f"{len(query.prompt)}+{len(query.completion)} tokens: max |dlogp| "
          f"vs tunix {diff.max():.2e} (mean {diff.mean():.2e}); adapter "
          f"moved it {moved:.2f}")
    assert moved > MIN_MOVED
    assert diff.max() < MAX_ABS_LOGPROB_DIFF
