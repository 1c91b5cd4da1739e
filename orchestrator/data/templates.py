"""The reasoning prompt: think in <reasoning>, answer alone in <answer>.

Short on purpose: tiny models copy the shape of what they see, and every
instruction token is context they must carry. The prompt does not open the
<reasoning> block itself, so the completion holds both blocks whole and the
rule rewards can read it without the prompt.
"""

REASONING_START = "<reasoning>"
REASONING_END = "</reasoning>"
ANSWER_START = "<answer>"
ANSWER_END = "</answer>"

# The tag pairs are shown empty: a model that parrots the instruction then
# writes no well-formed block and earns no format reward for it.
_INSTRUCTION = (
    f"Think step by step inside {REASONING_START}{REASONING_END}, then give "
    f"only the final answer inside {ANSWER_START}{ANSWER_END}.")


def render(question: str) -> str:
  """The full prompt for one question."""
  return f"{_INSTRUCTION}\n\nQuestion: {question.strip()}\n"
