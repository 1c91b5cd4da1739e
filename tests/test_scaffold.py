"""Reasoning scaffolds: named steps in the reasoning block, the format
reward's partial credit for them, SFT rows written in them, and the config
and CLI paths that carry them to every stage."""

import json
import subprocess
import sys

import pytest

from orchestrator import config as config_lib
from orchestrator import rewards
from orchestrator.data import sft_rows, task_traces, tasks, templates
from orchestrator.data.dataset import DatasetError
from orchestrator.stages import sft as sft_stage
from policy_worker.tokenizer import ByteTokenizer

STEPS = ("Plan", "Work", "Check")


def _completion(reasoning: str, answer: str = "4") -> str:
  return sft_rows.completion(reasoning, answer)


WHOLE = "Plan: add.\nWork: 2 + 2 = 4.\nCheck: the answer is 4."


@pytest.mark.parametrize("reasoning, steps", [
    (WHOLE, 1.0),
    # Labels in any case, indented.
    ("  plan: add.\n WORK: 2 + 2 = 4.\ncheck: 4.", 1.0),
    # Two of three: the first step is missing.
    ("Work: 2 + 2 = 4.\nCheck: 4.", 2 / 3),
    # Out of order: the most that keep the order is two (Plan, Check or
    # Work, Check).
    ("Work: 2 + 2 = 4.\nPlan: add.\nCheck: 4.", 2 / 3),
    # Reversed: one step keeps the order.
    ("Check: 4.\nWork: 2 + 2 = 4.\nPlan: add.", 1 / 3),
    # An empty step earns nothing; the others keep their credit.
    ("Plan:\nWork: 2 + 2 = 4.\nCheck: 4.", 2 / 3),
    # Repeating a step gains nothing.
    ("Plan: add.\nPlan: add.\nPlan: add.", 1 / 3),
    # A name in the middle of a line is not a step.
    ("I Plan: add. Then Work: 4. Then Check: 4.", 0.0),
    # Free reasoning.
    ("2 + 2 = 4.", 0.0),
])
def test_steps_in_order_with_partial_credit(reasoning, steps):
  assert rewards.scaffold_steps(reasoning, STEPS) == pytest.approx(steps)
  # Half for the blocks, half for the steps.
  assert rewards.format_reward(_completion(reasoning), STEPS) == pytest.approx(
      (1 + steps) / 2)


def test_scaffold_scales_the_block_score():
  loose = f"Sure. <reasoning>{WHOLE}</reasoning><answer>4</answer>"
  assert rewards.format_reward(loose) == 0.5
  assert rewards.format_reward(loose, STEPS) == 0.5
  assert rewards.format_reward(f"<answer>4</answer> {WHOLE}", STEPS) == 0.125
  # No answer block: nothing, whatever the steps.
  assert rewards.format_reward(f"<reasoning>{WHOLE}</reasoning>", STEPS) == 0
  # Without a scaffold the steps are just reasoning.
  assert rewards.format_reward(_completion("2 + 2 = 4.")) == 1.0


def test_step_names_may_prefix_each_other():
  steps = ("Plan", "Planning")
  assert rewards.scaffold_steps("Planning: a.\nPlan: b.", steps) == 0.5
  assert rewards.scaffold_steps("Plan: a.\nPlanning: b.", steps) == 1.0


def test_rule_rewards_carry_the_scaffold():
  free, scaffolded = rewards.rule_rewards(), rewards.rule_rewards(STEPS)
  text = _completion("2 + 2 = 4.")
  assert free["format"](text, None) == 1.0
  assert scaffolded["format"](text, None) == 0.5
  assert scaffolded["answer"] is free["answer"] is rewards.answer_reward


def test_prompt_names_the_steps_and_free_prompt_is_unchanged():
  prompt = templates.render(" What is 2 + 2? ", STEPS)
  assert "Plan:, Work:, Check:" in prompt
  assert prompt.endswith("Question: What is 2 + 2?\n")
  # The free prompt, which every earlier run and checkpoint was trained on.
  assert templates.render("What is 2 + 2?") == (
      "Think step by step inside <reasoning></reasoning>, then give only the "
      "final answer inside <answer></answer>.\n\nQuestion: What is 2 + 2?\n")
  # A model that parrots the prompt writes no step inside a reasoning block.
  assert rewards.format_reward(prompt, STEPS) == 0.0


@pytest.mark.parametrize("scaffold, problem", [
    (["Plan", ""], "non-blank"),
    (["Plan", " Work"], "surrounding spaces"),
    (["Plan:"], "':'"),
    (["<b>"], "'<'"),
    (["Plan", "plan"], "named twice"),
])
def test_bad_scaffold_is_one_clear_error(tmp_path, scaffold, problem):
  path = tmp_path / "run.yaml"
  path.write_text(json.dumps({"prompt": {"scaffold": scaffold}}))
  with pytest.raises(ValueError, match=f"prompt.scaffold.*{problem}"):
    config_lib.load(path)


def test_every_stage_config_has_the_prompt_section(tmp_path):
  path = tmp_path / "sft.yaml"
  path.write_text(json.dumps({"prompt": {"scaffold": list(STEPS)}}))
  assert sft_stage.load(path).prompt.scaffold == STEPS
  from orchestrator.stages import evaluate, pipeline, simpo
  assert simpo.load(path).prompt.scaffold == STEPS
  assert evaluate.load(path).prompt.scaffold == STEPS
  path.write_text(json.dumps({"prompt": {"scaffold": list(STEPS)},
                              "sft": {"data": "x.jsonl"}}))
  assert pipeline.load(path).prompt.scaffold == STEPS


def test_sft_row_steps_are_written_in_the_scaffold_order(tmp_path):
  path = tmp_path / "sft.jsonl"
  path.write_text(json.dumps({
      "prompt": "What is 2 + 2?", "answer": "4",
      "steps": {"check": "the answer is 4.", "plan": "add.",
                "work": "2 + 2 = 4."}}) + "\n")
  [row] = sft_rows.load_sft(path)
  target = sft_rows.target(row, STEPS)
  assert target == _completion(WHOLE)
  assert rewards.format_reward(target, STEPS) == 1.0
  # Without a scaffold the row's own order, still labelled.
  assert sft_rows.target(row) == _completion(
      "check: the answer is 4.\nplan: add.\nwork: 2 + 2 = 4.")
  with pytest.raises(ValueError, match="steps: .* not the scaffold's steps"):
    sft_rows.target(row, ("Plan", "Work"))


def test_sft_row_reasoning_must_already_fit_a_scaffold():
  fits = sft_rows.SFTRow("What is 2 + 2?", WHOLE, "4")
  assert sft_rows.target(fits, STEPS) == _completion(WHOLE)
  free = sft_rows.SFTRow("What is 2 + 2?", "2 + 2 = 4.", "4")
  assert sft_rows.target(free) == _completion("2 + 2 = 4.")
  with pytest.raises(ValueError, match="reasoning: does not go through"):
    sft_rows.target(free, STEPS)


@pytest.mark.parametrize("row, problem", [
    ({"prompt": "q", "answer": "a"}, "reasoning: missing"),
    ({"prompt": "q", "answer": "a", "reasoning": "r", "steps": {"P": "x"}},
     "steps: give reasoning or steps, not both"),
    ({"prompt": "q", "answer": "a", "steps": ["x"]}, "steps: must be"),
    ({"prompt": "q", "answer": "a", "steps": {}}, "steps: must be"),
    ({"prompt": "q", "answer": "a", "steps": {"Plan": " "}}, "Plan: empty"),
])
def test_bad_sft_rows_are_refused(tmp_path, row, problem):
  path = tmp_path / "sft.jsonl"
  path.write_text(json.dumps(row) + "\n")
  with pytest.raises(DatasetError, match=f"sft.jsonl:1: {problem}"):
    sft_rows.load_sft(path)


def test_generated_rows_in_a_scaffold(tmp_path):
  manifest = tasks.make(["chain_sum", "gcd"], 8, 2, 0, tmp_path / "d",
                        scaffold=STEPS)
  assert manifest["arguments"]["scaffold"] == list(STEPS)
  rows = sft_rows.load_sft(tmp_path / "d" / "sft.jsonl")
  assert len(rows) == 8
  for row in rows:
    target = sft_rows.target(row, STEPS)
    assert rewards.format_reward(target, STEPS) == 1.0
    assert rewards.extract_answer(target) == row.answer
    assert dict(row.steps)["Check"] == f"The answer is {row.answer}."
  # Every family with a trace says how it goes.
  assert set(task_traces.METHODS) == set(task_traces.TRACES)


def test_data_make_scaffold_errors(tmp_path):
  with pytest.raises(ValueError, match="--scaffold: give three step names"):
    tasks.make(["chain_sum"], 2, 0, 0, tmp_path / "a", scaffold=("A", "B"))
  with pytest.raises(ValueError, match="--scaffold: step 'a' is named twice"):
    tasks.make(["chain_sum"], 2, 0, 0, tmp_path / "b",
               scaffold=("A", "a", "B"))
  out = subprocess.run(
      [sys.executable, "-m", "orchestrator.cli", "data", "make", "--tasks",
       "chain_sum", "--train", "2", "--heldout", "0", "--out",
       str(tmp_path / "c"), "--scaffold", "Plan,Work"],
      capture_output=True, text=True)
  assert out.returncode == 2, out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith(
      "grar: error: --scaffold: give three step names")


def test_sft_stage_encodes_scaffolded_targets(tmp_path):
  """The stage encodes each row's target in the scaffold after the prompt
  that names it; a row that does not fit is refused before training, naming
  the file and the row."""
  tasks.make(["chain_sum"], 8, 0, 0, tmp_path / "d", scaffold=STEPS)
  data = tmp_path / "d" / "sft.jsonl"
  tokenizer = ByteTokenizer()
  cfg = sft_stage.SFTConfig(data=str(data), max_tokens=1024)
  rows = sft_rows.load_sft(data)
  [(ids, prompt_len), *_] = sft_stage.OBJECTIVE.encode(
      tokenizer, cfg, rows, str(data), STEPS)
  assert tokenizer.decode(ids[:prompt_len]) == templates.render(
      rows[0].prompt, STEPS)
  assert tokenizer.decode(ids[prompt_len:]) == sft_rows.target(rows[0],
                                                               STEPS)
  free = tmp_path / "free.jsonl"
  free.write_text(json.dumps({"prompt": "q", "reasoning": "r",
                              "answer": "a"}) + "\n")
  with pytest.raises(ValueError,
                     match="free.jsonl: row 0 .*: reasoning: does not go"):
    sft_stage.OBJECTIVE.encode(tokenizer, cfg, sft_rows.load_sft(free),
                               str(free), STEPS)
