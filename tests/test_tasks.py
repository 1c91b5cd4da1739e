"""Generated tasks: `grar data make`, the traces, the verifier-graded answer
reward and the dataset keys that carry a task. No jax here: the module and
the command must not need it."""

import ast
import dataclasses
import decimal
import json
import pathlib
import re
import subprocess
import sys

import pytest

from judge_server.packs import load_packs
from orchestrator import cli
from orchestrator.data import tasks
from orchestrator.data.dataset import DatasetError, load_jsonl
from orchestrator.rewards import answer_reward, rule_rewards
from orchestrator.data.sft_rows import load_sft
from orchestrator.data.task_traces import TRACES

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--option", "chain_sum.min_terms=2", "--option",
        "chain_sum.max_terms=2", "--option", "chain_sum.min_digits=1",
        "--option", "chain_sum.max_digits=1"]  # 10 * 10 * 2 = 200 prompts
TINY_OPTIONS = {"min_terms": 2, "max_terms": 2, "min_digits": 1,
                "max_digits": 1}


def _make(capsys, out, *args) -> tuple[int, str]:
  code = cli.main(["data", "make", "--out", str(out), *args])
  return code, capsys.readouterr().err


def _lines(path) -> list[dict]:
  return [json.loads(line) for line in pathlib.Path(path).read_text(
      ).splitlines()]


def test_importing_tasks_loads_neither_jax_nor_reasoning_gym():
  out = subprocess.run(
      [sys.executable, "-c", "import sys, orchestrator.data.tasks, "
       "orchestrator.rewards; print(sorted(m for m in ('jax', "
       "'reasoning_gym') if m in sys.modules))"],
      cwd=ROOT, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


def test_make_end_to_end(tmp_path, capsys):
  out = tmp_path / "data"
  code, err = _make(capsys, out, "--tasks", "chain_sum,gcd,products",
                    "--train", "20", "--heldout", "7", "--seed", "3")
  assert code == 0, err
  assert [line.split(":")[1].strip() for line in err.splitlines()] == [
      "chain_sum", "gcd", "products"]
  assert sorted(p.name for p in out.iterdir()) == sorted(tasks.FILES)
  packs = load_packs()
  train = load_jsonl(out / "train.jsonl", packs.keys())
  held = load_jsonl(out / "heldout.jsonl", packs.keys())
  sft = load_sft(out / "sft.jsonl")
  manifest = json.loads((out / "manifest.json").read_text())
  # 20 and 7 over three tasks: the remainder to the first ones.
  assert manifest["counts"] == {
      "chain_sum": {"train": 7, "heldout": 3, "sft": 7},
      "gcd": {"train": 7, "heldout": 2, "sft": 7},
      "products": {"train": 6, "heldout": 2, "sft": 0}}
  assert manifest["traces"] == ["chain_sum", "gcd"]
  assert manifest["arguments"]["seed"] == 3
  assert (len(train), len(held), len(sft)) == (20, 7, 14)
  for ex in train + held:
    assert ex.rubric_id == "reference-answer" and ex.domain == "math"
    assert ex.task in ("chain_sum", "gcd", "products")
    assert ex.metadata["source_dataset"] == ex.task
  sft_ids = {row["id"] for row in _lines(out / "sft.jsonl")}
  assert sft_ids == {ex.id for ex in train if ex.task != "products"}
  assert {row.prompt for row in sft} <= {ex.prompt for ex in train}


def test_same_arguments_same_bytes_other_seed_other_rows(tmp_path, capsys):
  args = ["--tasks", "leg_counting,spell_backward", "--train", "30",
          "--heldout", "10"]
  for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
    assert _make(capsys, tmp_path / name, *args, "--seed", seed)[0] == 0
  for name in tasks.FILES:
    assert (tmp_path / "a" / name).read_bytes() == (
        tmp_path / "b" / name).read_bytes()
  assert (tmp_path / "a" / "train.jsonl").read_bytes() != (
      tmp_path / "c" / "train.jsonl").read_bytes()


def test_heldout_prompts_are_new(tmp_path, capsys):
  out = tmp_path / "data"
  assert _make(capsys, out, "--tasks", "chain_sum,letter_counting",
               "--train", "200", "--heldout", "60")[0] == 0
  train = {tasks.normalised(r["prompt"]) for r in _lines(out / "train.jsonl")}
  held = [tasks.normalised(r["prompt"]) for r in _lines(out / "heldout.jsonl")]
  assert len(held) == 60 and len(set(held)) == 60
  assert not train & set(held)


def test_heldout_drops_collisions_and_tops_up(tmp_path, capsys):
  out = tmp_path / "data"
  assert _make(capsys, out, "--tasks", "chain_sum", "--train", "150",
               "--heldout", "30", *TINY)[0] == 0
  train_rows = _lines(out / "train.jsonl")
  train = {tasks.normalised(r["prompt"]) for r in train_rows}
  held = [tasks.normalised(r["prompt"]) for r in _lines(out / "heldout.jsonl")]
  assert len(train) < 150  # the space is tiny: the training rows repeat
  # Unfiltered, the held-out seed's rows do hit training prompts.
  raw = tasks.generate("chain_sum", 30, 0, "heldout", TINY_OPTIONS)
  assert train & {tasks.normalised(r["prompt"]) for r in raw}
  assert len(held) == 30 and len(set(held)) == 30
  assert not train & set(held)
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["arguments"]["options"] == [
      item for item in TINY if item != "--option"]


def test_heldout_fails_clearly_when_the_space_is_used_up(tmp_path, capsys):
  code, err = _make(capsys, tmp_path / "data", "--tasks", "chain_sum",
                    "--train", "600", "--heldout", "150", *TINY)
  assert code == 2
  assert re.fullmatch(
      r"grar: error: tasks: chain_sum: 1500 draws gave only \d+ of the 150 "
      r"heldout rows wanted \(0 with a reference its verifier does not "
      r"accept, \d+ repeating a prompt\); ask for fewer rows or widen the "
      r"generator \(--option\)\n", err)
  assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("args,message", [
    (["--tasks", "chain_sum,nope"], "tasks: unknown task 'nope' (known "
     "include: base_conversion, basic_arithmetic, chain_sum"),
    (["--tasks", "gcd,gcd"], "--tasks: a task is named twice: gcd, gcd"),
    (["--tasks", "gcd", "--option", "gcd.colour=3"],
     "--option gcd.colour=3: gcd has no option 'colour' (has: max_numbers, "),
    (["--tasks", "gcd", "--option", "gcd.max_value=big"],
     "--option gcd.max_value=big: want int, got str"),
    (["--tasks", "gcd", "--option", "gcd.seed=4"],
     "--option gcd.seed=4: gcd has no option 'seed'"),
    (["--tasks", "gcd", "--option", "lcm.max_value=4"],
     "--option lcm.max_value=4: 'lcm' is not among --tasks"),
    (["--tasks", "gcd", "--option", "gcd"],
     "--option gcd: want NAME.KEY=VALUE"),
    (["--tasks", "gcd", "--option", "gcd.min_value=50", "--option",
      "gcd.max_value=10"], "--option gcd: max_value must be > min_value"),
    (["--tasks", "decimal_arithmetic", "--option",
      "decimal_arithmetic.max_num_decimal_places=6"],
     "--option decimal_arithmetic.max_num_decimal_places=6: "
     "decimal_arithmetic's verifier reads max_num_decimal_places"),
    (["--tasks", "basic_arithmetic", "--option",
      "basic_arithmetic.allow_parentheses=false"],
     "--option basic_arithmetic.allow_parentheses=false: the generator then "
     "ignores operator precedence"),
    (["--tasks", "graph_color"], "tasks: graph_color: 100 draws gave only 0 "
     "of the 1 train rows wanted (100 with a reference its verifier does not "
     "accept"),
])
def test_bad_arguments_are_one_line(tmp_path, capsys, args, message):
  defaults = ["--train", "1", "--heldout", "0"]
  code, err = _make(capsys, tmp_path / "data", *args, *defaults)
  assert code == 2
  assert err.startswith(f"grar: error: {message}") and err.count("\n") == 1


def test_refuses_a_non_empty_out(tmp_path, capsys):
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "keep.txt").write_text("mine")
  code, err = _make(capsys, tmp_path / "data", "--tasks", "gcd", "--train",
                    "2", "--heldout", "1")
  assert (code, err) == (2, f"grar: error: --out: {tmp_path / 'data'} exists "
                         "and is not an empty directory\n")
  assert [p.name for p in (tmp_path / "data").iterdir()] == ["keep.txt"]


# Families whose reference scores 1.0 after the JSON round trip, each row.
ROUND_TRIP = sorted(set(TRACES) | {
    "products", "decimal_arithmetic", "word_sorting", "number_sorting",
    "caesar_cipher", "time_intervals", "polynomial_equations", "puzzle24"})


@pytest.mark.parametrize("task", ROUND_TRIP)
def test_json_round_trip_keeps_the_reference_right(task):
  rows = tasks.generate(task, 40, 11)
  assert [r["metadata"]["source_index"] for r in rows][:30] == list(range(30))
  for row in json.loads(json.dumps(rows)):
    assert tasks.score_answer(task, row["metadata"], row["prompt"],
                              row["answer"], row["answer"]) == 1.0


def _wrong(answer: str) -> str:
  """Another answer of the same shape: the last digit or letter changed."""
  for i in range(len(answer) - 1, -1, -1):
    c = answer[i]
    if c.isdigit():
      return answer[:i] + str((int(c) + 1) % 10) + answer[i + 1:]
    if c.isalpha():
      return answer[:i] + ("b" if c.lower() == "a" else "a") + answer[i + 1:]
  return answer + "0"


def test_answer_reward_grades_with_the_task_verifier(tmp_path, capsys):
  out = tmp_path / "data"
  assert _make(capsys, out, "--tasks", ",".join(sorted(TRACES)), "--train",
               "44", "--heldout", "0")[0] == 0
  examples = load_jsonl(out / "train.jsonl", load_packs().keys())
  assert rule_rewards()["answer"] is answer_reward
  for ex in examples:
    right = f"<reasoning>r</reasoning><answer>{ex.answer}</answer>"
    wrong = f"<reasoning>r</reasoning><answer>{_wrong(ex.answer)}</answer>"
    assert answer_reward(right, ex) == 1.0, ex
    assert answer_reward(wrong, ex) == 0.0, ex
    assert answer_reward(f"<reasoning>{ex.answer}</reasoning>", ex) == 0.0
    assert answer_reward(f"<answer>{ex.answer}", ex) == 0.0


def test_task_rows_take_the_verifier_not_the_numeric_rule(tmp_path, capsys):
  out = tmp_path / "data"
  assert _make(capsys, out, "--tasks", "fraction_simplification,leg_counting",
               "--train", "8", "--heldout", "0", "--option",
               "fraction_simplification.styles=[plain]")[0] == 0
  fraction, *_, legs = load_jsonl(out / "train.jsonl", load_packs().keys())
  num, den = fraction.answer.split("/")
  unreduced = f"<answer>{int(num) * 2}/{int(den) * 2}</answer>"
  # The same value, but the task asks for lowest terms.
  assert answer_reward(unreduced, fraction) == 0.0
  untasked = dataclasses.replace(fraction, task="", metadata=None)
  assert answer_reward(unreduced, untasked) == 1.0
  # Partial credit (the reference inside a longer answer) is not a right answer.
  longer = f"<answer>1{legs.answer}</answer>"
  assert 0 < tasks.score_answer(legs.task, legs.metadata, legs.prompt,
                                legs.answer, f"1{legs.answer}") < 1
  assert answer_reward(longer, legs) == 0.0


def test_unknown_task_in_a_row_is_an_error():
  with pytest.raises(ValueError, match="tasks: unknown task 'nope'"):
    tasks.score_answer("nope", {}, "q", "1", "1")


@pytest.mark.parametrize("fields,message", [
    ({"task": 3}, "task: must be a string, got int"),
    ({"task": " "}, "task: empty"),
    ({"metadata": {"a": 1}}, "metadata: only rows with a task may have "
     "metadata"),
    ({"task": "gcd", "metadata": [1, 2]}, "metadata: must be a JSON object, "
     "got list"),
])
def test_dataset_task_keys_are_validated(tmp_path, fields, message):
  path = tmp_path / "rows.jsonl"
  row = {"id": "q1", "prompt": "What is 2 + 2?", "answer": "4", **fields}
  path.write_text(json.dumps(row) + "\n")
  with pytest.raises(DatasetError) as e:
    load_jsonl(path, ["general-reasoning"])
  assert str(e.value) == f"{path}:1: {message}"


def test_dataset_task_without_metadata(tmp_path):
  path = tmp_path / "rows.jsonl"
  path.write_text(json.dumps({"id": "q1", "prompt": "p", "answer": "4",
                              "task": "gcd"}) + "\n")
  (ex,) = load_jsonl(path, ["general-reasoning"])
  assert (ex.task, ex.metadata) == ("gcd", {})
  plain = load_jsonl(ROOT / "data" / "reasoning-sample.jsonl", load_packs())
  assert all((e.task, e.metadata) == ("", None) for e in plain)


# Each trace's arithmetic replayed step by step, independently of
# task_traces: a wrong derivation, or one that does not end at the
# reference, fails.

_NUM = r"-?\d+(?:\.\d+)?"


def _check_chain(meta, answer, trace):
  terms = meta["expression"].split()
  steps = re.findall(rf"({_NUM}) ([+-]) ({_NUM}) = ({_NUM})\.", trace)
  assert len(steps) == len(terms) // 2
  total = decimal.Decimal(terms[0])
  for (a, op, b, c), want_op, want_b in zip(steps, terms[1::2], terms[2::2]):
    assert (decimal.Decimal(a), op, b) == (total, want_op, want_b)
    total += decimal.Decimal(b) if op == "+" else -decimal.Decimal(b)
    assert decimal.Decimal(c) == total
  assert total == decimal.Decimal(answer)


def _check_basic(meta, answer, trace):
  tree = ast.parse(meta["expression"], mode="eval")
  binary = re.findall(r"(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)\.", trace)
  assert len(binary) == sum(isinstance(n, ast.BinOp) for n in ast.walk(tree))
  for a, op, b, c in binary:
    a, b, c = int(a), int(b), int(c)
    if op == "/":
      assert b * c == a
    else:
      assert {"+": a + b, "-": a - b, "*": a * b}[op] == c
  for a, c in re.findall(r"-\((-?\d+)\) = (-?\d+)\.", trace):
    assert int(c) == -int(a)
  assert int(re.search(r"(-?\d+)\.$", trace)[1]) == int(answer)


def _check_euclid(text):
  """(a, b, g) of one "gcd(a, b): x mod y = r, ..., so g.", checked."""
  a, b, body, g = re.fullmatch(r"gcd\((\d+), (\d+)\): (.*), so (\d+)\.",
                               text).groups()
  a, b, g = int(a), int(b), int(g)
  x, y = max(a, b), min(a, b)
  for step in body.split(", "):
    assert step == f"{x} mod {y} = {x % y}"
    x, y = y, x % y
  assert y == 0 and x == g
  return a, b, g


def _check_gcd(meta, answer, trace):
  parts = re.findall(r"gcd\(.*?so \d+\.", trace)
  g = meta["numbers"][0]
  for part, n in zip(parts, meta["numbers"][1:], strict=True):
    a, b, g = _check_euclid(part)
    assert n == b
  assert g == int(answer)


def _check_lcm(meta, answer, trace):
  parts = re.findall(r"(gcd\(.*?so \d+\.) lcm = (\d+) \* (\d+) / (\d+) = "
                     r"(\d+)\.", trace)
  m = meta["numbers"][0]
  for (euclid, a, b, g, v), n in zip(parts, meta["numbers"][1:], strict=True):
    assert (int(a), int(b)) == (m, n) == _check_euclid(euclid)[:2]
    assert int(g) == _check_euclid(euclid)[2] and int(v) == m * n // int(g)
    m = int(v)
  assert m == int(answer)


def _check_fraction(meta, answer, trace):
  euclid = re.match(r"gcd\(.*?so \d+\.", trace)[0]
  a, b, g = _check_euclid(euclid)
  assert (a, b) == (meta["numerator"], meta["denominator"])
  p, q = map(int, re.search(r"So (\d+)/(\d+)\.$", trace).groups())
  assert f"{a} / {g} = {p}." in trace and f"{b} / {g} = {q}." in trace
  assert (p * g, q * g) == (a, b)
  assert re.sub(r"\D+", " ", answer).split() == [str(p), str(q)]


def _check_legs(meta, answer, trace):
  from reasoning_gym.arithmetic.leg_counting import ANIMALS
  products = []
  for animal, count, legs, total in re.findall(
      r"([a-z ]+): (\d+) \* (\d+) = (\d+)\.", trace):
    animal = animal.strip()
    assert int(count) == meta["animals"][animal]
    assert int(legs) == ANIMALS[animal] and int(total) == int(count) * int(legs)
    products.append(int(total))
  assert len(products) == len(meta["animals"])
  _check_sum(trace, products, answer)


def _check_sum(trace, values, answer):
  if len(values) == 1:
    assert trace.endswith(f"Total {values[0]}.")
  else:
    assert trace.endswith(f"{' + '.join(map(str, values))} = {sum(values)}.")
  assert sum(values) == int(answer)


def _check_letters(meta, answer, trace):
  letter = meta["target_letter"]
  listed = re.match(rf'"{re.escape(letter)}" per word: (.*?)\. ', trace)[1]
  counts = []
  for item in listed.split(", "):
    word, n = item.rsplit(" ", 1)
    assert word in meta["span"] and word.lower().count(letter) == int(n) > 0
    counts.append(int(n))
  assert len(counts) == sum(letter in w.lower() for w in meta["span"])
  _check_sum(trace, counts, answer)


def _check_backward(meta, answer, trace):
  forward, backward = re.fullmatch(r"(.+) backward is (.+)\.", trace).groups()
  assert forward.replace("-", "") == meta["word"]
  assert backward == forward[::-1] and backward.replace("-", "") == answer


def _check_bits(meta, answer, trace):
  number, binary, ones = re.fullmatch(
      r"(\d+) in binary is ([01]+), which has (\d+) ones\.", trace).groups()
  assert int(binary, 2) == int(number) == meta["number"]
  assert binary.count("1") == int(ones) == int(answer)


def _check_base(meta, answer, trace):
  source, base, value = re.match(r"(\w+) in base (\d+) is (\d+)\.",
                                 trace).groups()
  assert int(source, int(base)) == int(value) == meta["decimal_value"]
  n, digits = int(value), []
  for m, t, q, r in re.findall(r"(\d+) / (\d+) = (\d+) r (\d+)", trace):
    assert (int(m), int(t)) == (n, meta["target_base"])
    assert int(q) * int(t) + int(r) == n and int(r) < int(t)
    digits.append("0123456789abcdefghijklmnopqrstuvwxyz"[int(r)])
    n = int(q)
  assert n == 0
  assert trace.endswith(f"Remainders from the last: {answer}.")
  assert "".join(reversed(digits)) == answer


CHECKS = {
    "chain_sum": _check_chain, "decimal_chain_sum": _check_chain,
    "basic_arithmetic": _check_basic, "leg_counting": _check_legs,
    "spell_backward": _check_backward, "letter_counting": _check_letters,
    "gcd": _check_gcd, "lcm": _check_lcm,
    "fraction_simplification": _check_fraction, "count_bits": _check_bits,
    "base_conversion": _check_base,
}


def test_basic_arithmetic_steps_and_inexact_division():
  steps = TRACES["basic_arithmetic"]
  assert steps({"expression": "-(3 + 4) * 2 - -6 / 3"}) == (
      "3 + 4 = 7. -(7) = -7. -7 * 2 = -14. -6 / 3 = -2. -14 - -2 = -12.")
  # The generator's "/" floors: 7 / 2 = 3 is no step to teach.
  assert steps({"expression": "7 / 2 + 1"}) is None


def test_every_traced_family_is_checked():
  assert set(CHECKS) == set(TRACES)


@pytest.mark.parametrize("task,options", [
    *((task, {}) for task in sorted(TRACES)),
    ("gcd", {"min_numbers": 3, "max_numbers": 4}),
    ("lcm", {"min_numbers": 3, "max_numbers": 3}),
    ("chain_sum", {"allow_negation": True, "min_terms": 1}),
    ("basic_arithmetic", {"whitespace": "no_space"}),
])
def test_traces_reproduce_the_answer(task, options):
  rows = tasks.generate(task, 200, 7, options=options)
  traced = 0
  for row in rows:
    sft = tasks.sft_row(row)
    if sft is None:
      continue
    traced += 1
    assert sft["answer"] == row["answer"] and sft["prompt"] == row["prompt"]
    CHECKS[task](row["metadata"], row["answer"], sft["reasoning"])
  # Only basic_arithmetic skips rows (an inexact floor division).
  assert traced == 200 if task != "basic_arithmetic" else traced > 100
