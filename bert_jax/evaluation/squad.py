"""Extractive question answering scores: exact match and token F1, as the official SQuAD v1.1 / v2.0 script.

Answers are compared after the script's `normalize_answer`; a question's score
is the best over its gold answers, and empty gold lists mean unanswerable
(SQuAD v2.0). Scores are fractions, not the script's percentages.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Hashable, Iterable, Mapping


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """SQuAD answer normalization: lowercase, drop ASCII punctuation, the articles a/an/the, and extra whitespace.

  Same steps in the same order as `normalize_answer` in the official SQuAD
  v1.1 and v2.0 evaluation scripts.
  """
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def _gold_answers(ground_truths: str | Iterable[str]) -> list[str]:
  """The gold answers as the v2.0 script scores them: those normalizing to "" dropped, [""] if none remain."""
  # A bare string would otherwise be iterated as single characters.
  if isinstance(ground_truths, str):
    ground_truths = [ground_truths]
  return [answer for answer in ground_truths if normalize_answer(answer)] or [""]


def _token_f1(prediction: str, gold: str) -> float:
  pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
  if not pred_tokens or not gold_tokens:
    # v2.0: a no-answer on either side scores 1 only when both are no-answers.
    return float(pred_tokens == gold_tokens)
  same = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred_tokens), same / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, ground_truths: str | Iterable[str]) -> float:
  """1.0 if the normalized prediction equals any normalized gold answer, else 0.0; official SQuAD script.

  Gold answers normalizing to "" are dropped and an empty gold list means
  unanswerable (gold [""]), as in the v2.0 script: then only a prediction
  normalizing to "" matches. On v1.1 data (no empty golds) this is v1.1's
  exact_match_score, max over the golds.

  Args:
    prediction: predicted answer text; "" for no answer.
    ground_truths: gold answer texts (a single string is one answer).
  """
  predicted = normalize_answer(prediction)
  return max(float(predicted == normalize_answer(gold)) for gold in _gold_answers(ground_truths))


def span_f1(prediction: str, ground_truths: str | Iterable[str]) -> float:
  """Token-overlap F1 against the best-matching gold answer; official SQuAD script.

  Tokens are the whitespace-split normalized texts, counted as a multiset.
  Gold answers are taken as in `exact_match`. Where prediction or gold is
  empty (no answer) the v2.0 rule applies: 1.0 if both are, else 0.0. The v1.1
  script instead scores two empty answers 0, a case v1.1 data does not have.

  Args:
    prediction: predicted answer text; "" for no answer.
    ground_truths: gold answer texts (a single string is one answer).
  """
  return max(_token_f1(prediction, gold) for gold in _gold_answers(ground_truths))


def squad_metrics(predictions: Mapping[Hashable, str], answers: Mapping[Hashable, Iterable[str]]) -> dict[str, float]:
  """Mean exact match and F1 over the questions in `answers`; the official SQuAD v1.1 / v2.0 script.

  The official scripts print percentages (100 * these); these are fractions.
  A question without a prediction scores 0 on both, as in the scripts;
  predictions for ids not in `answers` are ignored. For SQuAD v2.0 give
  unanswerable questions an empty answer list (or [""]) and predict "" for
  no answer.

  Args:
    predictions: question id -> predicted answer text.
    answers: question id -> gold answer texts.

  Returns:
    dict with exact_match and f1.
  """
  if not answers:
    raise ValueError("no questions to score")
  em_total = f1_total = 0.0
  for qid, golds in answers.items():
    if qid not in predictions:
      continue
    em_total += exact_match(predictions[qid], golds)
    f1_total += span_f1(predictions[qid], golds)
  return {"exact_match": em_total / len(answers), "f1": f1_total / len(answers)}
