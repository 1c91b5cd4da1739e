"""Reading a judge's written answer when no token probabilities are given:
a digit on the 0-9 scale, or yes or no."""

import re

from judge_server.prompts import MAX_SCORE

# The first standalone integer, optionally written as "N/9" or "N out of 9".
# A decimal ("3.5") is not one; a full stop after it ("Score: 7.") is fine.
_SCORE = re.compile(
    r"(?<![\d.])(-?\d+)(?:\s*(?:/|out of)\s*(\d+))?(?!\d|\.\d)")


class UnparseableScore(ValueError):
  """The judge's text holds no score on the expected scale."""


def parse_score(text: str, max_score: int = MAX_SCORE) -> int:
  """Returns the integer score the judge wrote, in [0, max_score].

  A written denominator must match the scale: "7/10" on a 0-9 scale is an
  error, not a 7, since the judge was not answering the question asked.
  """
  m = _SCORE.search(text)
  if m is None:
    raise UnparseableScore(f"no score in judge output {text[:80]!r}")
  value = int(m.group(1))
  if m.group(2) is not None and int(m.group(2)) != max_score:
    raise UnparseableScore(
        f"judge used a scale out of {m.group(2)}, expected out of {max_score}")
  if not 0 <= value <= max_score:
    raise UnparseableScore(f"score {value} outside 0..{max_score}")
  return value


_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_yes_no(text: str) -> int:
  """1 when the judge wrote yes, 0 when it wrote no (any case, as a whole
  word); neither, or both ("yes ... no"), is not an answer."""
  found = {m.lower() for m in _YES_NO.findall(text)}
  if len(found) != 1:
    what = "both yes and no" if found else "no yes or no"
    raise UnparseableScore(f"{what} in judge output {text[:80]!r}")
  return int(found == {"yes"})
