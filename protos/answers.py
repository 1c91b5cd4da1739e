"""The reasoning format's four tags and how the final answer is read out of
a completion: one definition for the trainer (the answer reward, the
prompt template) and the judge (the extraction criterion), which may not
import each other. Pure text, no dependencies."""

import re

REASONING_START = "<reasoning>"
REASONING_END = "</reasoning>"
ANSWER_START = "<answer>"
ANSWER_END = "</answer>"

_TAGS = (REASONING_START, REASONING_END, ANSWER_START, ANSWER_END)
# Block content may not contain any of the four tags, so a block is the
# innermost span between an opening tag and its closing tag.
_NO_TAG = "(?:(?!{}).)*".format("|".join(map(re.escape, _TAGS)))


def _block(start: str, end: str) -> re.Pattern:
  return re.compile(f"{re.escape(start)}({_NO_TAG}){re.escape(end)}",
                    re.DOTALL)


REASONING_BLOCK = _block(REASONING_START, REASONING_END)
ANSWER_BLOCK = _block(ANSWER_START, ANSWER_END)


def extract_answer(completion: str) -> str | None:
  """The stripped content of the last answer block; None if there is none.

  An unclosed <answer> (a completion cut at the token limit) is no answer.
  """
  answers = ANSWER_BLOCK.findall(completion)
  return answers[-1].strip() if answers else None


def extract_reasoning(completion: str) -> str | None:
  """The content of the completion's well-formed reasoning blocks, joined
  by newlines (a block may be blank); None if there is none. An unclosed
  <reasoning> (a completion cut at the token limit) is no reasoning."""
  blocks = REASONING_BLOCK.findall(completion)
  return "\n".join(blocks) if blocks else None
