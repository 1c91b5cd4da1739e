"""What one GRPO step writes to its run directory: a journal row per rollout
(msgpack, see journal.py) and one metrics row (metrics.csv, TensorBoard).

Pure functions of the step's arrays, so the schema lives here and nowhere
else. N rollouts in groups of G: arrays of [N] unless said.
"""

from typing import Sequence

import numpy as np

from orchestrator.judge import watch as judge_watch
from protos import judge_pb2


def journal_rows(step: int, requests: Sequence, owners: Sequence,
                 texts: Sequence[str], lengths: np.ndarray,
                 results: Sequence, components: dict[str, np.ndarray],
                 reward: np.ndarray, advantages: np.ndarray,
                 versions: np.ndarray, staleness: np.ndarray,
                 times: tuple[float, float, float, float]) -> list[dict]:
  """owners[i]: the example rollout i answers; results[i]: its judge
  result (a ScoreResult); times: the unix times the batch's generation
  began, when it ended (and the batch went to the judge), when the trainer
  began to wait for its judgements, and when the last arrived. Pipelined,
  the next batch is generated between the second and the third."""
  began, generated, waited, judged = times
  return [
      {"step": step, "rollout_id": req.rollout_id,
       "example_id": ex.id, "prompt": ex.prompt, "completion": text,
       "completion_tokens": int(n),
       "rewards": {k: float(v[i]) for k, v in components.items()},
       "reward": float(reward[i]), "advantage": float(advantages[i]),
       "judge_status": judge_pb2.Status.Name(res.status),
       "judge_reason": res.reason, "judge_latency_ms": res.latency_ms,
       "judge_criteria": [[c.index, c.score] for c in res.criteria],
       "policy_version": int(versions[i]),
       "staleness": int(staleness[i]),
       "generate_began_at": began, "generated_at": generated,
       "judge_wait_began_at": waited, "judged_at": judged}
      for i, (req, ex, text, n, res) in enumerate(zip(
          requests, owners, texts, lengths, results))]


def summary(name: str, values: np.ndarray) -> dict[str, float]:
  """name_mean and name_std over the values that are not NaN."""
  finite = values[~np.isnan(values)]
  if not finite.size:
    return {f"{name}_mean": float("nan"), f"{name}_std": float("nan")}
  return {f"{name}_mean": float(finite.mean()),
          f"{name}_std": float(finite.std())}


def zero_spread(groups: np.ndarray) -> float:
  """Fraction of groups [N/G, G] whose scored rewards are all equal (no
  learning signal); a fully unscorable group is dropped, not zero-spread."""
  live = groups[~np.isnan(groups).all(axis=1)]
  return float(np.sum(np.nanstd(live, axis=1) == 0) / len(groups))


def _percentile(values: np.ndarray, q: float) -> float:
  return float(np.percentile(values, q)) if values.size else float("nan")


def metrics_row(step: int, num_generations: int, results: Sequence,
                scored: np.ndarray, components: dict[str, np.ndarray],
                reward: np.ndarray, valid: np.ndarray, lengths: np.ndarray,
                staleness: np.ndarray, stale: np.ndarray, retries: int,
                update: dict[str, float], times: dict[str, float]) -> dict:
  """scored: the rollouts the judge scored; valid: those trained on;
  stale: those past the staleness bound; update: the updater's metrics;
  times: time_generate, time_judge_wait, time_train, time_step."""
  G = num_generations
  latencies = np.array([r.latency_ms for r, ok in zip(results, scored) if ok])
  row = {"step": step, **summary("reward", reward)}
  for name, values in components.items():
    row.update(summary(name, values))
  row.update({
      "judge_scored": int(scored.sum()),
      "judge_unscorable": int((~scored).sum()),
      "unscorable_rate": float((~scored).mean()),
      "masked_rollouts": int((~valid).sum()),
      "dropped_groups": int((~valid.reshape(-1, G)).all(axis=1).sum()),
      "zero_spread_groups": zero_spread(reward.reshape(-1, G)),
      "judge_latency_p50_ms": _percentile(latencies, 50),
      "judge_latency_p99_ms": _percentile(latencies, 99),
      "judge_retries": retries,
      "completion_len_mean": float(lengths.mean()),
      **judge_watch.step_metrics(components["judge"], components["answer"],
                                 lengths),
      "tokens_per_s": float(lengths.sum() / times["time_generate"]),
      **update,
      "staleness": int(staleness.max()),
      "stale_dropped": int(stale.sum()),
      **times})
  return row
