"""The reasoning prompt: think in <reasoning>, answer alone in <answer>.

Short on purpose: tiny models copy the shape of what they see, and every
instruction token is context they must carry. The prompt does not open the
<reasoning> block itself, so the completion holds both blocks whole and the
rule rewards can read it without the prompt.

A scaffold names the steps the reasoning goes through, in order, each a line
"Name: text" inside the reasoning block (prompt.scaffold in a run config).
"""

from collections.abc import Sequence

# The tags are the judge's too (its extraction criterion reads the answer).
from protos.answers import (ANSWER_END, ANSWER_START, REASONING_END,
                            REASONING_START)

# The tag pairs are shown empty: a model that parrots the instruction then
# writes no well-formed block and earns no format reward for it.
_THINK = f"Think step by step inside {REASONING_START}{REASONING_END}"
_ANSWER = f"give only the final answer inside {ANSWER_START}{ANSWER_END}"


def check_scaffold(scaffold: Sequence[str]) -> None:
  """ValueError("scaffold: problem") unless the names can label lines."""
  seen = set()
  for name in scaffold:
    if (not name.strip() or name != name.strip()
        or any(c in name for c in ":<>\n")):
      raise ValueError(f"scaffold: step name {name!r} must be non-blank words "
                       "without surrounding spaces, ':', '<', '>' or line "
                       "breaks")
    if name.casefold() in seen:
      raise ValueError(f"scaffold: step {name!r} is named twice (names are "
                       "compared ignoring case)")
    seen.add(name.casefold())


def render(question: str, scaffold: Sequence[str] = ()) -> str:
  """The full prompt for one question, naming the scaffold's steps when
  there is one."""
  if scaffold:
    steps = ", ".join(f"{name}:" for name in scaffold)
    instruction = (f"{_THINK}, one line per step starting with its name, in "
                   f"this order: {steps}; then {_ANSWER}.")
  else:
    instruction = f"{_THINK}, then {_ANSWER}."
  return f"{instruction}\n\nQuestion: {question.strip()}\n"


def scaffolded(steps: Sequence[tuple[str, str]]) -> str:
  """Reasoning written in a scaffold: one "Name: text" line per step."""
  return "\n".join(f"{name}: {text.strip()}" for name, text in steps)
