"""ScoreRequests of completions to dataset examples: the prompt, the
reference answer and the rubric (inline, or a pack's id) of each."""

from orchestrator.data import dataset as dataset_lib
from orchestrator.judge.client import request_from_row
from protos import judge_pb2


def request_for(ex: dataset_lib.Example, completion: str, rollout_id: str,
                aggregation: str | None) -> judge_pb2.ScoreRequest:
  """The ScoreRequest of `completion` to example `ex`, with its reference
  answer and rubric; aggregation None leaves it to the server."""
  row = {"prompt": ex.prompt, "completion": completion,
         "reference_answer": ex.answer}
  if aggregation is not None:
    row["aggregation"] = aggregation
  if ex.rubric is not None:
    row["rubric"] = ex.rubric
  else:
    row["rubric_id"] = ex.rubric_id
  return request_from_row(row, rollout_id)


def judge_requests(step, batch, texts, num_generations, aggregation):
  """A ScoreRequest per completion: texts[i] answers example
  batch[i // num_generations]."""
  requests = []
  for i, text in enumerate(texts):
    ex = batch[i // num_generations]
    requests.append(request_for(
        ex, text, f"s{step}-{ex.id}-g{i % num_generations}", aggregation))
  return requests
