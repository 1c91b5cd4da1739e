"""Does the relevance reward (orchestrator/relevance.py) separate focused
reasoning from padding and off-topic text?

For each example of a dataset, with the scorer fitted on that dataset's
prompts (as the trainer fits it on its own) and the default L0 and n
(RewardsConfig), six completions, each with the right answer block:

  focused    reasoning restating the question's words and the answer
             ("The question: Q. Working it through gives A, so the answer
             is A."); for data/sft-sample.jsonl the row's hand-written
             reasoning instead
  padded     focused followed by one paragraph (29 words) of off-topic
             "let me think carefully" filler
  overlong   focused followed by that filler said until it is about 2 x L0
             words
  repeated   focused said four times
  off_topic  a reasoning about something else (a fixed paragraph)
  bare       the answer block alone, no reasoning

Datasets: data/reasoning-sample.jsonl, data/sft-sample.jsonl, and the
generated tasks of runs/demo-data/train.jsonl when that exists (`make
demo-data`). Prints per dataset the mean relevance of each kind and the
fraction of examples where focused scores above each of padded,
overlong, repeated and off_topic, the ratio of the focused and padded
means, the time per score, then one line of name=value pairs.

  .venv/bin/python bench/relevance.py
"""

import json
import pathlib
import sys
import time

import numpy as np

from orchestrator.config import RewardsConfig
from orchestrator.data.dataset import Example
from orchestrator.data.templates import (ANSWER_END, ANSWER_START,
                                         REASONING_END, REASONING_START)
from orchestrator.relevance import Relevance

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATASETS = (("sample", ROOT / "data" / "reasoning-sample.jsonl"),
            ("sft", ROOT / "data" / "sft-sample.jsonl"),
            ("demo", ROOT / "runs" / "demo-data" / "train.jsonl"))
KINDS = ("focused", "padded", "overlong", "repeated", "off_topic", "bare")
WORSE = ("padded", "overlong", "repeated", "off_topic")
FILLER = ("Let me think about this very carefully and step by step, because "
          "it is always important to be thorough and to consider every "
          "single detail before writing anything down. ")
OFF_TOPIC = ("Gardening in spring starts with good soil. Tomatoes like warm "
             "sun and regular watering, while lettuce grows best in cooler "
             "shade, and a layer of mulch keeps the weeds away.")


def _completion(reasoning: str | None, answer: str) -> str:
  body = (f"{REASONING_START}{reasoning}{REASONING_END}\n"
          if reasoning is not None else "")
  return f"{body}{ANSWER_START}{answer}{ANSWER_END}"


def completions(row: dict, max_tokens: int) -> dict[str, str]:
  question, answer = row["prompt"].strip(), row["answer"]
  focused = row.get("reasoning") or (
      f"The question: {question} Working it through gives {answer}, so the "
      f"answer is {answer}.")
  times = max(1, round(2 * max_tokens / len(FILLER.split())))
  return {"focused": _completion(focused, answer),
          "padded": _completion(f"{focused} {FILLER}", answer),
          "overlong": _completion(f"{focused} {FILLER * times}", answer),
          "repeated": _completion(" ".join([focused] * 4), answer),
          "off_topic": _completion(OFF_TOPIC, answer),
          "bare": _completion(None, answer)}


def measure(rows: list[dict], cfg: RewardsConfig) -> dict[str, float]:
  scorer = Relevance.fit([r["prompt"] for r in rows],
                         cfg.relevance_max_tokens, cfg.relevance_repeat_ngram)
  # Scored as the trainer scores: completion text and example.
  scores = {k: [] for k in KINDS}
  t0, n = time.perf_counter(), 0
  for row in rows:
    ex = Example(row["id"], row.get("domain", "general"), row["prompt"],
                 row["answer"], None, "")
    for kind, text in completions(row, cfg.relevance_max_tokens).items():
      scores[kind].append(scorer.score(text, ex))
      n += 1
  us = 1e6 * (time.perf_counter() - t0) / n
  s = {k: np.array(v) for k, v in scores.items()}
  out = {f"{k}_mean": float(s[k].mean()) for k in KINDS}
  for other in WORSE:
    out[f"focused_gt_{other}"] = float((s["focused"] > s[other]).mean())
  out["focused_over_padded"] = out["focused_mean"] / out["padded_mean"]
  out["us_per_score"] = us
  out["rows"] = len(rows)
  return out


def main() -> int:
  cfg = RewardsConfig()
  print(f"relevance: L0 (relevance_max_tokens) = {cfg.relevance_max_tokens},"
        f" n (relevance_repeat_ngram) = {cfg.relevance_repeat_ngram}")
  pairs = []
  for name, path in DATASETS:
    if not path.exists():
      print(f"{name}: {path} not found, skipped")
      continue
    rows = [json.loads(line) for line in path.read_text().splitlines()
            if line.strip()]
    m = measure(rows, cfg)
    print(f"{name} ({path.relative_to(ROOT)}, {m['rows']} rows): mean "
          + ", ".join(f"{k} {m[f'{k}_mean']:.3f}" for k in KINDS)
          + "; focused > " + ", ".join(
              f"{o} {m[f'focused_gt_{o}']:.3f}"
              for o in WORSE)
          + f"; focused / padded means {m['focused_over_padded']:.2f}"
          + f"; {m['us_per_score']:.0f} us per score")
    pairs += [f"{name}_{k}={m[f'{k}_mean']:.3f}" for k in KINDS]
    pairs += [f"{name}_focused_gt_{o}={m[f'focused_gt_{o}']:.3f}"
              for o in WORSE]
    pairs.append(f"{name}_focused_over_padded={m['focused_over_padded']:.2f}")
    pairs.append(f"{name}_us_per_score={m['us_per_score']:.0f}")
  print(" ".join(pairs))
  return 0


if __name__ == "__main__":
  sys.exit(main())
