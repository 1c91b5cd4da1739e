"""The GRPO loop: policy on the policy mesh, rubric reward from the judge.

One step: sample G completions per prompt; send every rollout to the judge
service (over gRPC even when the judge is in this process) and, while it
scores, compute rule rewards and reference log-probs; then compose the
reward, take group advantages with unscorable rollouts masked, update the
LoRA parameters, and hand the new weights to the sampler.
"""

import concurrent.futures
import contextlib
import dataclasses
import datetime
import pathlib
import time

import jax
import numpy as np
import yaml

from judge_server.backends import jax_local
from judge_server import server as judge_server_lib
from orchestrator import dataset as dataset_lib
from orchestrator import journal as journal_lib
from orchestrator import judge_client as judge_client_lib
from orchestrator import mesh as mesh_lib
from orchestrator import metrics as metrics_lib
from orchestrator import rewards as rewards_lib
from orchestrator import templates
from orchestrator.config import RunConfig
from policy_worker import checkpoint, grpo, models, rollout
from protos import judge_pb2


class TrainError(RuntimeError):
  """A run that cannot start or go on; the message says why."""


@dataclasses.dataclass(frozen=True)
class RunResult:
  run_dir: pathlib.Path
  rows: list[dict[str, float]]


def _make_run_dir(cfg: RunConfig) -> pathlib.Path:
  name = cfg.run_name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  run_dir = pathlib.Path(cfg.output_dir) / name
  if run_dir.exists() and any(run_dir.iterdir()):
    raise TrainError(f"run directory {run_dir} exists and is not empty; "
                     "pick another run_name")
  (run_dir / "checkpoints").mkdir(parents=True)
  (run_dir / "config.yaml").write_text(
      yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
  return run_dir


@contextlib.contextmanager
def _judge_target(cfg: RunConfig, judge_mesh):
  """Yields the judge's address; in-process, serves it on loopback first."""
  if cfg.judge.placement == "remote":
    yield cfg.judge.target
    return
  server_cfg = cfg.judge.server
  backend = jax_local.build(
      server_cfg.backend.model, judge_mesh,
      jax_local.JaxBackendConfig(
          max_batch=server_cfg.backend.max_batch,
          max_prompt_tokens=server_cfg.backend.max_prompt_tokens,
          min_score_mass=server_cfg.backend.min_score_mass))
  handle = judge_server_lib.run_in_thread(
      dataclasses.replace(server_cfg, host="127.0.0.1", port=0), backend)
  try:
    yield handle.address
  finally:
    handle.stop()


def _batches(examples, batch_size: int, seed: int):
  """Endless batches; each epoch is a new seeded permutation."""
  rng = np.random.default_rng(seed)
  while True:
    order = rng.permutation(len(examples))
    for i in range(0, len(order) - batch_size + 1, batch_size):
      yield [examples[j] for j in order[i:i + batch_size]]


def _judge_requests(step, batch, texts, num_generations, aggregation):
  requests = []
  for i, text in enumerate(texts):
    ex = batch[i // num_generations]
    row = {"prompt": ex.prompt, "completion": text,
           "reference_answer": ex.answer, "aggregation": aggregation}
    if ex.rubric is not None:
      row["rubric"] = {"criteria": [dataclasses.asdict(c)
                                    for c in ex.rubric.criteria]}
    else:
      row["rubric_id"] = ex.rubric_id
    requests.append(judge_client_lib.request_from_row(
        row, f"s{step}-{ex.id}-g{i % num_generations}"))
  return requests


def _summary(name: str, values: np.ndarray) -> dict[str, float]:
  finite = values[~np.isnan(values)]
  if not finite.size:
    return {f"{name}_mean": float("nan"), f"{name}_std": float("nan")}
  return {f"{name}_mean": float(finite.mean()),
          f"{name}_std": float(finite.std())}


def train(cfg: RunConfig) -> RunResult:
  packs = judge_server_lib.load_packs(cfg.judge.server.rubric_dir)
  examples = dataset_lib.load_jsonl(cfg.data.path, packs.keys())
  if len(examples) < cfg.train.batch_size:
    raise TrainError(f"data.path: {len(examples)} examples, fewer than "
                     f"train.batch_size={cfg.train.batch_size}")
  judge_shape = cfg.mesh.judge if cfg.judge.placement == "in-process" else None
  policy_mesh, judge_mesh = mesh_lib.plan_meshes(
      jax.devices(), cfg.mesh.policy, judge_shape, cfg.model,
      cfg.judge.server.backend.model if judge_shape else None)

  reference, tokenizer = models.build_model(cfg.model, policy_mesh)
  policy, _ = models.build_model(cfg.model, policy_mesh)
  policy = models.apply_lora(policy, policy_mesh, rank=cfg.grpo.lora_rank,
                             alpha=cfg.grpo.lora_alpha, seed=cfg.train.seed)
  generator = rollout.RolloutGenerator(
      policy, tokenizer, policy_mesh,
      max_prompt_tokens=cfg.rollout.max_prompt_tokens,
      max_new_tokens=cfg.rollout.max_new_tokens)
  prompts = {ex.id: templates.render(ex.prompt) for ex in examples}
  too_long = [(i, generator.prompt_length(p)) for i, p in prompts.items()
              if generator.prompt_length(p) > cfg.rollout.max_prompt_tokens]
  if too_long:
    raise TrainError(
        f"rollout.max_prompt_tokens={cfg.rollout.max_prompt_tokens} is too "
        f"small: example {too_long[0][0]} needs {too_long[0][1]} tokens "
        f"({len(too_long)} examples too long)")
  updater = grpo.GRPOUpdater(
      policy, reference, policy_mesh, tokenizer.pad_id(), tokenizer.eos_id(),
      grpo.UpdateConfig(
          num_generations=cfg.rollout.num_generations, beta=cfg.grpo.beta,
          epsilon=cfg.grpo.epsilon, learning_rate=cfg.grpo.learning_rate,
          max_grad_norm=cfg.grpo.max_grad_norm,
          temperature=cfg.rollout.temperature))

  run_dir = _make_run_dir(cfg)
  metrics = metrics_lib.MetricsWriter(run_dir / "metrics.csv", cfg.train.steps)
  journal = journal_lib.Journal(run_dir / "journal.msgpack")
  rows = []
  G = cfg.rollout.num_generations
  with _judge_target(cfg, judge_mesh) as target, \
      judge_client_lib.JudgeClient(target, cfg.judge.timeout_s) as client, \
      concurrent.futures.ThreadPoolExecutor(1) as pool:
    client.wait_ready(cfg.judge.timeout_s)
    batches = _batches(examples, cfg.train.batch_size, cfg.data.shuffle_seed)
    for step in range(1, cfg.train.steps + 1):
      t0 = time.monotonic()
      batch = next(batches)
      rolls = generator.generate(
          [prompts[ex.id] for ex in batch], G,
          temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
          seed=cfg.train.seed * 1_000_003 + step)
      t1 = time.monotonic()
      requests = _judge_requests(step, batch, rolls.texts, G,
                                 cfg.judge.aggregation)
      judged = pool.submit(client.score, requests)
      # While the judge works: rule rewards and reference log-probs.
      owners = [batch[i // G] for i in range(len(rolls.texts))]
      components = {
          name: np.array([fn(text, ex) for text, ex in zip(rolls.texts, owners)])
          for name, fn in rewards_lib.RULE_REWARDS.items()}
      ref_logps = updater.reference_logps(rolls) if cfg.grpo.beta else None
      t2 = time.monotonic()
      results = judged.result()
      t3 = time.monotonic()
      results = [results[r.rollout_id] for r in requests]
      scored = np.array([r.status == judge_pb2.SCORED for r in results])
      components["judge"] = np.array(
          [r.reward if ok else np.nan for r, ok in zip(results, scored)])
      weights = {k: w for k, w in cfg.rewards.items() if w}
      reward = rewards_lib.composite(components, weights)
      advantages, valid = grpo.group_advantages(reward, G)
      update = updater.step(rolls, advantages, valid, ref_logps)
      generator.sync(policy)
      t4 = time.monotonic()

      journal.append([
          {"step": step, "rollout_id": req.rollout_id, "example_id": ex.id,
           "completion": text, "completion_tokens": int(n),
           "rewards": {k: float(v[i]) for k, v in components.items()},
           "reward": float(reward[i]), "advantage": float(advantages[i]),
           "judge_status": judge_pb2.Status.Name(res.status),
           "judge_reason": res.reason, "judge_latency_ms": res.latency_ms,
           "policy_version": step - 1}
          for i, (req, ex, text, n, res) in enumerate(zip(
              requests, owners, rolls.texts, rolls.completion_lengths,
              results))])
      row = {"step": step, **_summary("reward", reward)}
      for name, values in components.items():
        row.update(_summary(name, values))
      row.update({
          "judge_scored": int(scored.sum()),
          "judge_unscorable": int((~scored).sum()),
          "masked_rollouts": int((~valid).sum()),
          "completion_len_mean": float(rolls.completion_lengths.mean()),
          **update,
          "time_generate": t1 - t0, "time_rule_and_ref": t2 - t1,
          "time_judge_wait": t3 - t2, "time_train": t4 - t3,
          "time_step": t4 - t0})
      metrics.write(row)
      rows.append(row)
      if step == cfg.train.steps or (
          cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0):
        checkpoint.save_lora(run_dir / "checkpoints" / f"step_{step}", policy)
  journal.close()
  return RunResult(run_dir, rows)
