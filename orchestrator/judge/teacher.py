"""The trainer's side of on-policy distillation: a student's rollouts as
LogprobsRequests, and the teacher's answers as a [N, T] array beside the
student's own log-probs."""

import numpy as np

from policy_worker.rollout import Rollouts
from protos import judge_pb2


def requests(rollout_ids: list[str], rollouts: Rollouts, pad_id: int
             ) -> list[judge_pb2.LogprobsRequest]:
  """One request per rollout with a completion, under the rollout's id:
  its prompt's ids as the student read them (BOS included, left padding
  dropped) and the ids it sampled (EOS included, right padding dropped)."""
  out = []
  for rid, prompt, completion in zip(rollout_ids, rollouts.prompt_tokens,
                                     rollouts.completion_tokens):
    sampled = completion[completion != pad_id]
    if sampled.size:
      out.append(judge_pb2.LogprobsRequest(
          rollout_id=rid, prompt_tokens=prompt[prompt != pad_id].tolist(),
          completion_tokens=sampled.tolist()))
  return out


def logps(rollout_ids: list[str], results: dict, shape: tuple[int, int]
          ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """(teacher log-probs [N, T], 0 past each completion and where
  unanswered; answered [N] bool; the reasons of the unanswered).

  results: LogprobsResults by rollout id (JudgeClient.token_logprobs); a
  rollout with no completion has none and is unanswered."""
  teacher = np.zeros(shape, np.float32)
  answered = np.zeros(shape[0], bool)
  reasons = []
  for i, rid in enumerate(rollout_ids):
    result = results.get(rid)
    if result is None:
      reasons.append("empty completion")
    elif result.status != judge_pb2.SCORED:
      reasons.append(result.reason)
    else:
      teacher[i, :len(result.logprobs)] = result.logprobs
      answered[i] = True
  return teacher, answered, reasons


def kl(student: np.ndarray, teacher: np.ndarray, mask: np.ndarray
       ) -> np.ndarray:
  """[N] each rollout's mean over its tokens (mask [N, T]) of log
  p_student - log p_teacher: on the student's own samples, an estimate of
  the reverse KL per token, KL(student || teacher)."""
  return (np.where(mask, student - teacher, 0.0).sum(axis=1)
          / np.maximum(mask.sum(axis=1), 1))
