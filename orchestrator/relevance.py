"""The `relevance` reward: does the reasoning talk about the question?

IDEA-E's fast reward for context-relevant vocabulary in the reasoning
(issue 15), computed on the CPU beside the rule rewards, never through the
judge. For a completion c answering an example with question q and
reference answer a:

  r        = tokens(reasoning(c))     the reasoning blocks' text
  t        = tokens(q) + tokens(a)    one bag: the two counts add
  w_x(v)   = count_x(v) * idf(v)
  idf(v)   = ln((1 + N) / (1 + df(v))) + 1
  cos      = w_r . w_t / (|w_r| |w_t|)                  (0 if either is 0)
  length   = min(1, L0 / |r|)
  novelty  = distinct n-grams of r / n-grams of r       (1 if |r| < n or n = 0)
  relevance = cos * length * novelty                     in [0, 1]

tokens(x): the maximal runs of letters and digits of x lower-cased (the
regex [^\\W_]+ on x.lower(); "47 + 38 = 85." is 47, 38, 85). reasoning(c):
the content of the completion's well-formed <reasoning>...</reasoning>
blocks (rewards.extract_reasoning), so a completion without one, or cut
before its closing tag, scores 0. N and df(v) (the number of documents
holding v) are fitted on the run's training prompts, one document per
example; a word no prompt holds has df 0, the largest idf, so off-topic
words dilute the reasoning's vector rather than vanish from it. This is
scikit-learn's smoothed idf with raw counts and cosine (l2) normalisation.

L0 is rewards.relevance_max_tokens and n rewards.relevance_repeat_ngram:
a reasoning longer than L0 tokens keeps L0/|r| of its credit, and one that
repeats itself keeps the share of its word n-grams that are new (said four
times, about a quarter). Cosine alone pays nothing for the length of a
text, so without the two factors padding with on-topic words, or the same
sentence said again, would cost nothing. A scorer fitted on no tokens has
no vocabulary and scores 0; nothing here is NaN.
"""

from collections import Counter
from collections.abc import Iterable
import math
import re

from orchestrator import rewards
from orchestrator.data.dataset import Example

TOKEN = re.compile(r"[^\W_]+")


def tokens(text: str) -> list[str]:
  """The runs of letters and digits of `text`, lower-cased."""
  return TOKEN.findall(text.lower())


def novelty(words: list[str], n: int) -> float:
  """Distinct n-grams over n-grams of `words`; 1.0 when there are fewer
  than n words or n is 0 (no repetition measured)."""
  if n <= 0 or len(words) < n:
    return 1.0
  grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
  return len(set(grams)) / len(grams)


class Relevance:
  """A relevance scorer fitted on a corpus of prompts: `score(completion,
  example)` is the reward (see the module docstring), a float in [0, 1]."""

  def __init__(self, df: dict[str, int], num_docs: int, max_tokens: int,
               repeat_ngram: int):
    if max_tokens <= 0:
      raise ValueError(f"max_tokens: must be > 0, got {max_tokens}")
    if repeat_ngram < 0:
      raise ValueError(f"repeat_ngram: must be >= 0, got {repeat_ngram}")
    self.df = dict(df)
    self.num_docs = num_docs
    self.max_tokens = max_tokens
    self.repeat_ngram = repeat_ngram
    self._idf = {v: math.log((1 + num_docs) / (1 + n)) + 1
                 for v, n in self.df.items()}
    self._idf_unknown = math.log(1 + num_docs) + 1  # df 0
    self._targets: dict[tuple[str, str], tuple[dict[str, float], float]] = {}

  @classmethod
  def fit(cls, prompts: Iterable[str], max_tokens: int = 64,
          repeat_ngram: int = 3) -> "Relevance":
    """df and N over `prompts`, one document each."""
    df, num_docs = Counter(), 0
    for prompt in prompts:
      df.update(set(tokens(prompt)))
      num_docs += 1
    return cls(df, num_docs, max_tokens, repeat_ngram)

  def idf(self, word: str) -> float:
    """ln((1 + N) / (1 + df(word))) + 1."""
    return self._idf.get(word, self._idf_unknown)

  def _vector(self, words: list[str]) -> tuple[dict[str, float], float]:
    """The tf-idf weights of `words` and their l2 norm."""
    weights = {v: n * self.idf(v) for v, n in Counter(words).items()}
    return weights, math.sqrt(sum(w * w for w in weights.values()))

  def _target(self, question: str, reference: str):
    key = (question, reference)
    if key not in self._targets:
      self._targets[key] = self._vector(tokens(question) + tokens(reference))
    return self._targets[key]

  def cosine(self, words: list[str], question: str,
             reference: str = "") -> float:
    """cos(tfidf(words), tfidf(question + reference)); 0 for no words."""
    if not self.df:
      return 0.0
    target, target_norm = self._target(question, reference)
    weights, norm = self._vector(words)
    if not norm or not target_norm:
      return 0.0
    dot = sum(w * target[v] for v, w in weights.items() if v in target)
    return min(1.0, dot / (norm * target_norm))

  def score_reasoning(self, reasoning: str, question: str,
                      reference: str = "") -> float:
    """The reward of a reasoning text (without its tags)."""
    words = tokens(reasoning)
    if not words:
      return 0.0
    return (self.cosine(words, question, reference)
            * min(1.0, self.max_tokens / len(words))
            * novelty(words, self.repeat_ngram))

  def score(self, completion: str, example: Example) -> float:
    """The reward of a completion for `example` (its prompt and, when it
    has one, its reference answer); 0.0 without a reasoning block."""
    reasoning = rewards.extract_reasoning(completion)
    if reasoning is None:
      return 0.0
    return self.score_reasoning(reasoning, example.prompt,
                                example.answer or "")
