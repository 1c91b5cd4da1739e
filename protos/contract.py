"""What trainer and judge agree on beyond judge.proto's messages: the service
name, message size, the metadata keys, and a rubric as a proto message.

Both sides import this module and nothing of each other's; it needs only
protobuf (no grpc, no jax), so a remote-backend judge loads it anywhere.
"""

import hashlib
import json
from typing import Sequence

from protos import judge_pb2
from protos.rubric import Rubric

# The name health checks and reflection answer for.
SERVICE_NAME = judge_pb2.DESCRIPTOR.services_by_name["JudgeService"].full_name
# The largest message either side sends or accepts by default; the server's
# own bound is its limits.max_message_bytes.
MAX_MESSAGE_BYTES = 64 << 20
# Request metadata: "Bearer TOKEN" when the judge requires tokens.
AUTHORIZATION = "authorization"
# Trailing metadata of a RESOURCE_EXHAUSTED refusal: when to try again.
RETRY_AFTER_KEY = "retry-after-ms"
# What both sides encode to tell whether their tokenizers agree: digits,
# the reasoning format's tags, spaces and new lines, words that split into
# pieces, and text outside ASCII.
TOKENIZER_PROBE = ("<reasoning>Step 1: 12 + 30 = 42, so 3.5 x 12 is 42."
                   "</reasoning>\n<answer>42</answer>  Ünïcödé 日本語 — "
                   "antidisestablishmentarianism\t🙂")


def fingerprint(prompt_ids: Sequence[int]) -> str:
  """A short hash of a tokenizer: the ids it gives TOKENIZER_PROBE as a
  prompt (BOS, then the probe's own). Two tokenizers with one fingerprint
  give the probe the same ids, so token ids sent from one read as the same
  text to the other."""
  data = json.dumps(list(map(int, prompt_ids)))
  return hashlib.sha256(data.encode()).hexdigest()[:16]


def tokenizer_fingerprint(tokenizer) -> str:
  """fingerprint() of a tokenizer with encode(text) and bos_id() (grar's
  ByteTokenizer and HFTokenizer)."""
  return fingerprint([tokenizer.bos_id(), *tokenizer.encode(TOKENIZER_PROBE)])


def enum_name(enum, value: int) -> str:
  """The lower-case name of an enum value, e.g. Category.IMPORTANT gives
  "important"; a number only a newer peer knows stays a number, so an error
  message can show it."""
  try:
    return enum.Name(value).lower()
  except ValueError:
    return str(value)


def rubric_to_proto(rubric: Rubric) -> judge_pb2.Rubric:
  """A validated rubric as the proto message (the inverse of
  rubric_from_proto)."""
  return judge_pb2.Rubric(criteria=[
      judge_pb2.Criterion(
          text=c.text, weight=c.weight,
          category=judge_pb2.Category.Value(c.category.upper()),
          polarity=judge_pb2.Polarity.Value(c.polarity.upper()))
      for c in rubric.criteria])


def rubric_from_proto(message: judge_pb2.Rubric) -> Rubric:
  """The rubric a message carries, validated as every rubric is; raises
  RubricError naming the field. An unset category or polarity reads as
  missing or defaulted, as in a YAML rubric."""
  criteria = []
  for c in message.criteria:
    item = {"text": c.text, "weight": c.weight}
    if c.category:
      item["category"] = enum_name(judge_pb2.Category, c.category)
    if c.polarity:
      item["polarity"] = enum_name(judge_pb2.Polarity, c.polarity)
    criteria.append(item)
  return Rubric.from_dict({"criteria": criteria}, where="rubric")

