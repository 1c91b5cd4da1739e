"""Worked reasoning for generated task rows, derived from their metadata.

A trace is the `reasoning` of an SFT row: the short chain of steps that
leads from the question to the reference answer, written so that a small
model (Gemma-3-270M) with a CPU-sized sequence budget can learn it, e.g.
chain_sum "4 - 1 - 7" -> "4 - 1 = 3. 3 - 7 = -4.". Every trace ends at the
row's reference answer; tests/test_tasks.py replays the arithmetic of each.

Families with traces (TRACES): chain_sum and decimal_chain_sum (running
sums), basic_arithmetic (each operation in evaluation order; a row whose
expression holds an inexact division gets none, since the generator's "/"
is floor division and a step "7 / 2 = 3" would teach a falsehood),
leg_counting (legs per animal times count, then the sum), spell_backward,
letter_counting (count per word, then the sum), gcd (Euclid's steps), lcm
(through the gcd), fraction_simplification (the gcd, then both divisions),
count_bits (the binary), base_conversion (through the decimal value, then
repeated division). Every other family gets no SFT rows: its metadata holds
no steps to write out (products: a single multiplication, whose steps would
be long multiplication), or its solution is a search (puzzles, games) too
long for these sequence budgets.

METHODS says in a sentence how each family's trace goes, for SFT rows written
in a scaffold (plan, work, result). Pure functions of the metadata; reasoning_gym is imported only by
leg_counting, for its table of legs per animal.
"""

import ast
from collections.abc import Callable
import decimal
import functools
import operator


def _sum_line(values: list) -> str:
  if len(values) == 1:
    return f"Total {values[0]}."
  return f"{' + '.join(map(str, values))} = {sum(values)}."


def _chain(metadata: dict) -> str:
  """Left-to-right running sums of "a + b - c ..." (ints or decimals)."""
  tokens = metadata["expression"].split()
  total = decimal.Decimal(tokens[0])
  if len(tokens) == 1:
    return f"Only one term: {total}."
  steps = []
  for op, term in zip(tokens[1::2], tokens[2::2]):
    value = decimal.Decimal(term)
    new = total + value if op == "+" else total - value
    steps.append(f"{total} {op} {term} = {new}.")
    total = new
  return " ".join(steps)


_BINARY = {ast.Add: ("+", operator.add), ast.Sub: ("-", operator.sub),
           ast.Mult: ("*", operator.mul), ast.Div: ("/", operator.floordiv)}


class _Inexact(Exception):
  """A division with a remainder: no honest step to write."""


def _evaluate(node: ast.expr, steps: list[str]) -> int:
  """The value of an integer expression node, appending one step per
  operation in the order Python evaluates them."""
  if isinstance(node, ast.Constant):
    return node.value
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
    if isinstance(node.operand, ast.Constant):
      return -node.operand.value  # a negative literal, not a step
    value = _evaluate(node.operand, steps)
    steps.append(f"-({value}) = {-value}.")
    return -value
  if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
    left = _evaluate(node.left, steps)
    right = _evaluate(node.right, steps)
    symbol, fn = _BINARY[type(node.op)]
    if symbol == "/" and left % right:
      raise _Inexact
    value = fn(left, right)
    steps.append(f"{left} {symbol} {right} = {value}.")
    return value
  raise ValueError(f"expression: unexpected {ast.dump(node)}")


def _basic_arithmetic(metadata: dict) -> str | None:
  steps: list[str] = []
  try:
    value = _evaluate(ast.parse(metadata["expression"], mode="eval").body,
                      steps)
  except _Inexact:
    return None
  return " ".join(steps) or f"The value is {value}."


@functools.cache
def _legs() -> dict[str, int]:
  from reasoning_gym.arithmetic.leg_counting import ANIMALS
  return ANIMALS


def _leg_counting(metadata: dict) -> str:
  legs = _legs()
  parts = [f"{animal}: {count} * {legs[animal]} = {count * legs[animal]}."
           for animal, count in metadata["animals"].items()]
  return " ".join(parts + [_sum_line(
      [count * legs[animal] for animal, count in metadata["animals"].items()])])


def _spell_backward(metadata: dict) -> str:
  word = metadata["word"]
  return f"{'-'.join(word)} backward is {'-'.join(reversed(word))}."


def _letter_counting(metadata: dict) -> str:
  letter = metadata["target_letter"]
  counts = [(word, word.lower().count(letter)) for word in metadata["span"]]
  found = [(word, n) for word, n in counts if n]
  listed = ", ".join(f"{word} {n}" for word, n in found)
  return (f'"{letter}" per word: {listed}. '
          f"{_sum_line([n for _, n in found])}")


def _euclid(a: int, b: int) -> tuple[str, int]:
  """"gcd(a, b): a mod b = r, ..., so g." and g, for a, b >= 1."""
  x, y = max(a, b), min(a, b)
  steps = []
  while y:
    steps.append(f"{x} mod {y} = {x % y}")
    x, y = y, x % y
  return f"gcd({a}, {b}): {', '.join(steps)}, so {x}.", x


def _gcd(metadata: dict) -> str:
  numbers = metadata["numbers"]
  g, parts = numbers[0], []
  for n in numbers[1:]:
    line, g = _euclid(g, n)
    parts.append(line)
  return " ".join(parts) or f"Only one number: {g}."


def _lcm(metadata: dict) -> str:
  numbers = metadata["numbers"]
  m, parts = numbers[0], []
  for n in numbers[1:]:
    line, g = _euclid(m, n)
    new = m * n // g
    parts.append(f"{line} lcm = {m} * {n} / {g} = {new}.")
    m = new
  return " ".join(parts) or f"Only one number: {m}."


def _fraction_simplification(metadata: dict) -> str:
  num, den = metadata["numerator"], metadata["denominator"]
  line, g = _euclid(num, den)
  return (f"{line} {num} / {g} = {num // g}. {den} / {g} = {den // g}. "
          f"So {num // g}/{den // g}.")


def _count_bits(metadata: dict) -> str:
  binary = metadata["binary"]
  return (f"{metadata['number']} in binary is {binary}, which has "
          f"{binary.count('1')} ones.")


def _digit(d: int) -> str:
  """A digit as the generator writes it, lowercase letters above 9."""
  return str(d) if d < 10 else chr(ord("a") + d - 10)


def _base_conversion(metadata: dict) -> str | None:
  value, base = metadata["decimal_value"], metadata["target_base"]
  if value == 0:
    return None  # the generator writes 0 as an empty answer
  steps, digits, n = [], [], value
  while n:
    d = _digit(n % base)
    steps.append(f"{n} / {base} = {n // base} r {n % base}"
                 + (f" ({d})." if n % base > 9 else "."))
    digits.append(d)
    n //= base
  return (f"{metadata['source_repr']} in base {metadata['source_base']} is "
          f"{value}. {' '.join(steps)} Remainders from the last: "
          f"{''.join(reversed(digits))}.")


# task -> trace(metadata); None for a row that has no honest trace.
TRACES: dict[str, Callable[[dict], str | None]] = {
    "chain_sum": _chain,
    "decimal_chain_sum": _chain,
    "basic_arithmetic": _basic_arithmetic,
    "leg_counting": _leg_counting,
    "spell_backward": _spell_backward,
    "letter_counting": _letter_counting,
    "gcd": _gcd,
    "lcm": _lcm,
    "fraction_simplification": _fraction_simplification,
    "count_bits": _count_bits,
    "base_conversion": _base_conversion,
}


# task -> how its trace works, in a sentence: the first step of a scaffolded
# SFT row (tasks.sft_row), the plan before the work.
METHODS: dict[str, str] = {
    "chain_sum": "Add and subtract from left to right, keeping a running "
                 "total.",
    "decimal_chain_sum": "Add and subtract from left to right, keeping a "
                         "running total.",
    "basic_arithmetic": "Work out each operation, innermost and highest "
                        "precedence first.",
    "leg_counting": "Multiply each animal's count by its legs, then add.",
    "spell_backward": "Split the word into letters and read them from the "
                      "last.",
    "letter_counting": "Count the letter in each word, then add the counts.",
    "gcd": "Use Euclid's algorithm on the numbers in turn.",
    "lcm": "Take the numbers in turn: lcm = product / gcd.",
    "fraction_simplification": "Divide the numerator and the denominator by "
                               "their gcd.",
    "count_bits": "Write the number in binary and count its ones.",
    "base_conversion": "Read the number in decimal, then divide by the "
                       "target base until 0; the remainders are the digits.",
}


def trace(task: str, metadata: dict) -> str | None:
  """The worked reasoning of a row of `task`, None when the family or the
  row has none."""
  derive = TRACES.get(task)
  return derive(metadata) if derive else None
