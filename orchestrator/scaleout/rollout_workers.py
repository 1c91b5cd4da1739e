"""Rollout workers: the policy's sampler in Ray actors, fed versioned LoRA
weights.

After each update the trainer `publish`es the LoRA parameters once
(ray.put); a worker fetches them when it is asked to generate with a version
it does not hold yet, and tags what it generates with that version. A step's
prompts are split over the workers in whole groups.
"""

from flax import nnx
import jax
import numpy as np
import ray

from orchestrator import mesh as mesh_lib
from orchestrator.scaleout import cluster as ray_cluster
from orchestrator.config import RunConfig
from orchestrator.stages.rollout_source import RolloutSource
from policy_worker import models, rollout


def lora_tree(model: nnx.Module) -> dict:
  """The LoRA parameters as host numpy arrays (a nested dict)."""
  return jax.tree.map(np.asarray, nnx.to_pure_dict(models.lora_state(model)))


def load_lora_tree(model: nnx.Module, tree: dict) -> None:
  """Puts `lora_tree` output into `model`, keeping its shardings."""
  state = models.lora_state(model)
  placed = jax.tree.map(lambda new, old: jax.device_put(new, old.sharding),
                        tree, nnx.to_pure_dict(state))
  nnx.replace_by_pure_dict(state, placed)
  nnx.update(model, state)


@ray.remote
class RolloutWorker:

  def __init__(self, cfg: RunConfig):
    mesh, _ = mesh_lib.plan_meshes(jax.devices(), cfg.mesh.policy, None,
                                   cfg.model)
    self._policy, tokenizer = models.build_policy(
        cfg.model, mesh, rank=cfg.grpo.lora_rank, alpha=cfg.grpo.lora_alpha,
        seed=cfg.train.seed)
    self._generator = rollout.RolloutGenerator(
        self._policy, tokenizer, mesh,
        max_prompt_tokens=cfg.rollout.max_prompt_tokens,
        max_new_tokens=cfg.rollout.max_new_tokens)
    self._version = None

  def ready(self) -> bool:
    return True

  def generate(self, prompts: list[str], num_generations: int, *,
               temperature: float, top_p: float, seed: int, version: int,
               weights: list) -> tuple[rollout.Rollouts, int]:
    """weights: [ObjectRef] of the LoRA tree of `version`, wrapped in a list
    so that Ray passes the reference and this worker fetches it only when
    its weights are older."""
    if version != self._version:
      load_lora_tree(self._policy, ray.get(weights[0]))
      self._generator.sync(self._policy)
      self._version = version
    return self._generator.generate(
        prompts, num_generations, temperature=temperature, top_p=top_p,
        seed=seed), version


def _left_pad(tokens: np.ndarray, width: int, pad: int) -> np.ndarray:
  return np.pad(tokens, ((0, 0), (width - tokens.shape[1], 0)),
                constant_values=pad)


class RolloutPool(RolloutSource):
  """`workers` RolloutWorker actors; the driver's side of them."""

  def __init__(self, cfg: RunConfig, workers: int, pad_id: int):
    options = ray_cluster.actor_options(cfg.ray.rollout_worker,
                                        cfg.mesh.policy.size)
    self._workers = [RolloutWorker.options(**options).remote(cfg)
                     for _ in range(workers)]
    self._pad = pad_id
    self._weights = None  # (version, ObjectRef of its LoRA tree)
    try:
      ray_cluster.ready([w.ready.remote() for w in self._workers],
                        cfg.ray.startup_timeout_s, "rollout workers")
    except BaseException:
      self.close()
      raise

  def publish(self, version: int, model: nnx.Module) -> None:
    self._weights = (version, ray.put(lora_tree(model)))

  def generate(self, prompts: list[str], num_generations: int, *,
               temperature: float, top_p: float, seed: int
               ) -> tuple[rollout.Rollouts, np.ndarray]:
    """From the latest published weights, split over the workers in whole
    groups."""
    if self._weights is None:
      raise RuntimeError("publish weights before generating")
    version, ref = self._weights
    shards = [s for s in np.array_split(np.arange(len(prompts)),
                                        len(self._workers)) if s.size]
    parts = ray.get([
        worker.generate.remote(
            [prompts[i] for i in shard], num_generations,
            temperature=temperature, top_p=top_p,
            # One worker samples as the trainer itself would.
            seed=seed + k * 100_003, version=version, weights=[ref])
        for k, (worker, shard) in enumerate(zip(self._workers, shards))])
    width = max(r.prompt_tokens.shape[1] for r, _ in parts)
    rolls = rollout.Rollouts(
        np.concatenate([_left_pad(r.prompt_tokens, width, self._pad)
                        for r, _ in parts]),
        np.concatenate([r.completion_tokens for r, _ in parts]),
        [t for r, _ in parts for t in r.texts])
    versions = np.concatenate([np.full(len(r.texts), v) for r, v in parts])
    return rolls, versions

  def close(self) -> None:
    for worker in self._workers:
      ray.kill(worker)
