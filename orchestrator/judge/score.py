"""`grar judge score`: score a JSONL file of rollouts against a judge server.

Input, one rollout per line:
  {"rollout_id"?: str, "prompt": str, "completion": str,
   "reference_answer"?: str, "rubric"?: {"criteria": [...]} | "rubric_id"?: str,
   "aggregation"?: "explicit" | "implicit"}
rollout_id defaults to the line number. Every row is checked before anything
is sent; output is one JSON line per rollout, in input order.
"""

import json
import sys
from typing import TextIO

from orchestrator.judge.channel import ChannelConfig, ChannelError
from orchestrator.judge.client import (JudgeClient, JudgeRequestError,
                                       RowError, request_from_row)
from protos import judge_pb2


def _read_requests(input_path: str) -> list[judge_pb2.ScoreRequest]:
  """Raises RowError("line N: field: problem") for the first bad row."""
  requests, first_line = [], {}
  with open(input_path, encoding="utf-8") as f:
    for n, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise RowError(f"line {n}: not valid JSON: {e}") from None
      if not isinstance(row, dict):
        raise RowError(f"line {n}: must be a JSON object")
      rollout_id = row.pop("rollout_id", str(n))
      if not isinstance(rollout_id, str) or not rollout_id:
        raise RowError(f"line {n}: rollout_id: must be a non-empty string")
      if rollout_id in first_line:
        raise RowError(f"line {n}: rollout_id: duplicate {rollout_id!r} "
                       f"(first on line {first_line[rollout_id]})")
      first_line[rollout_id] = n
      try:
        requests.append(request_from_row(row, rollout_id))
      except RowError as e:
        raise RowError(f"line {n}: {e}") from None
  return requests


def _result_json(result: judge_pb2.ScoreResult) -> str:
  return json.dumps({
      "rollout_id": result.rollout_id,
      "status": judge_pb2.Status.Name(result.status).lower(),
      "reward": result.reward,
      "criteria": [{"index": c.index, "score": c.score,
                    "score_mass": c.score_mass} for c in result.criteria],
      "reason": result.reason,
      "latency_ms": result.latency_ms,
  })


def score_file(target: str, input_path: str, out: TextIO | None = None,
               timeout_s: float = 600.0,
               channel: ChannelConfig = ChannelConfig()) -> int:
  """Prints one result line per rollout to `out` (stdout); returns the exit
  code: 0, or 2 for a bad input file, unusable channel settings, or a
  request or credentials the judge refused."""
  try:
    requests = _read_requests(input_path)
  except OSError as e:
    print(f"{input_path}: cannot read: {e.strerror}", file=sys.stderr)
    return 2
  except RowError as e:
    print(f"{input_path} {e}", file=sys.stderr)
    return 2
  try:
    client = JudgeClient(target, timeout_s=timeout_s, connection=channel)
  except ChannelError as e:
    print(f"grar judge score: {e}", file=sys.stderr)
    return 2
  with client:
    try:
      results = client.score(requests)
    except JudgeRequestError as e:
      print(e, file=sys.stderr)
      return 2
  out = out or sys.stdout
  for request in requests:
    out.write(_result_json(results[request.rollout_id]) + "\n")
  out.flush()
  return 0
