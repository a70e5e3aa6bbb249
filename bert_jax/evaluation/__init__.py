"""Task metrics for fine-tuning evaluation: classification, regression, NER, extractive QA, retrieval.

Pure numpy, so evaluation needs neither JAX devices nor scikit-learn. Every
function names the reference implementation it reproduces (scikit-learn,
scipy, seqeval, the official SQuAD script); tests/test_evaluation.py checks
them against it. Scores are fractions in [0, 1], never percentages, returned as
Python floats so they serialize to JSON as they are.
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

# ----------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------


def _paired_labels(labels, predictions) -> tuple[np.ndarray, np.ndarray]:
  """Both as 1-D arrays of equal, non-zero length; ValueError otherwise."""
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  if labels.ndim != 1 or predictions.ndim != 1:
    raise ValueError(f"labels and predictions must be 1-D, got shapes {labels.shape} and {predictions.shape}")
  if len(labels) != len(predictions):
    raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
  if len(labels) == 0:
    raise ValueError("no examples to score")
  return labels, predictions


def accuracy(labels, predictions) -> float:
  """Fraction of predictions equal to the label; matches sklearn.metrics.accuracy_score.

  Args:
    labels: [n] class labels (ints or strings).
    predictions: [n] predicted labels.
  """
  labels, predictions = _paired_labels(labels, predictions)
  return float(np.mean(labels == predictions))


def f1(labels, predictions, *, average: str = "binary", positive: Hashable = 1) -> float:
  """F1 score; matches sklearn.metrics.f1_score(labels, predictions, average=..., pos_label=positive).

  Per class, F1 = 2 tp / (2 tp + fp + fn), and 0.0 when that is 0 / 0 (no true
  and no predicted example of the class: sklearn's zero_division default, less
  its warning).

  Args:
    labels: [n] class labels (ints or strings).
    predictions: [n] predicted labels.
    average: "binary": F1 of class `positive`; at most two distinct labels may
      occur in labels and predictions together, and if there are two,
      `positive` must be one of them (ValueError otherwise, as sklearn).
      "macro": unweighted mean of per-class F1 over the classes that occur in
      labels or predictions (sklearn's default label set, not a fixed C).
      "micro": F1 of the pooled counts, which for single-label data equals
      accuracy.
    positive: the positive class for average="binary".
  """
  labels, predictions = _paired_labels(labels, predictions)
  classes = np.unique(np.concatenate([labels, predictions]))
  if average == "binary":
    if len(classes) > 2:
      raise ValueError(f"average='binary' needs at most 2 classes, got {len(classes)}: {classes.tolist()}; "
                       "use average='macro' or 'micro'")
    if len(classes) == 2 and positive not in classes.tolist():
      raise ValueError(f"positive={positive!r} is not one of the labels {classes.tolist()}")
    classes = np.asarray([positive])
  elif average not in ("macro", "micro"):
    raise ValueError(f"average must be 'binary', 'macro' or 'micro', got {average!r}")
  # [classes] per-class counts.
  true_is = labels[None, :] == classes[:, None]
  pred_is = predictions[None, :] == classes[:, None]
  tp = np.sum(true_is & pred_is, axis=1)
  fp = np.sum(~true_is & pred_is, axis=1)
  fn = np.sum(true_is & ~pred_is, axis=1)
  if average == "micro":
    tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
  denominator = 2 * tp + fp + fn
  per_class = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
  return float(np.mean(per_class))


def matthews_corrcoef(labels, predictions) -> float:
  """Matthews correlation coefficient, multiclass; matches sklearn.metrics.matthews_corrcoef.

  Gorodkin's R_K statistic from the confusion matrix; 0.0 when labels or
  predictions hold a single class (the formula is 0 / 0 there, sklearn returns 0).

  Args:
    labels: [n] class labels (ints or strings).
    predictions: [n] predicted labels.
  """
  labels, predictions = _paired_labels(labels, predictions)
  classes, index = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
  n = len(labels)
  confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
  np.add.at(confusion, (index[:n], index[n:]), 1.0)
  # Floats: the int products below reach n**4 and would overflow int64 near n = 55k.
  t_sum, p_sum = confusion.sum(axis=1), confusion.sum(axis=0)
  n_correct, n_samples = np.trace(confusion), confusion.sum()
  cov_ytyp = n_correct * n_samples - t_sum @ p_sum
  cov_ypyp = n_samples**2 - p_sum @ p_sum
  cov_ytyt = n_samples**2 - t_sum @ t_sum
  if cov_ypyp * cov_ytyt == 0:
    return 0.0
  return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def classification_metrics(labels, logits) -> dict[str, float | int]:
  """Sequence-classification scores from logits, for GLUE-style evaluation.

  Args:
    labels: int [n] gold classes in [0, C).
    logits: float [n, C] scores; the prediction is the argmax.

  Returns:
    accuracy; f1: binary F1 of class 1 when C == 2, macro F1 otherwise (both as
    `f1`); mcc: `matthews_corrcoef`; predicted_classes: how many distinct
    classes were predicted (int). A run predicting a single class has learned
    nothing; `degenerate_runs` flags it by this count.
  """
  labels, logits = np.asarray(labels), np.asarray(logits)
  if logits.ndim != 2 or logits.shape[1] < 2:
    raise ValueError(f"logits must be [n, C] with C >= 2, got shape {logits.shape}")
  if labels.shape != logits.shape[:1]:
    raise ValueError(f"labels shape {labels.shape} does not match logits shape {logits.shape}")
  num_classes = logits.shape[1]
  if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
  predictions = np.argmax(logits, axis=-1)
  average = "binary" if num_classes == 2 else "macro"
  return {
      "accuracy": accuracy(labels, predictions),
      "f1": f1(labels, predictions, average=average, positive=1),
      "mcc": matthews_corrcoef(labels, predictions),
      "predicted_classes": int(len(np.unique(predictions))),
  }


# ----------------------------------------------------------------------------
# Regression
# ----------------------------------------------------------------------------


def _paired_values(x, y) -> tuple[np.ndarray, np.ndarray]:
  x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
  if x.ndim != 1 or y.ndim != 1:
    raise ValueError(f"inputs must be 1-D, got shapes {x.shape} and {y.shape}")
  if len(x) != len(y):
    raise ValueError(f"inputs differ in length: {len(x)} and {len(y)}")
  return x, y


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson r of two 1-D float arrays; nan when undefined, without a warning."""
  if len(x) < 2 or np.isnan(x).any() or np.isnan(y).any():
    return math.nan
  # Exact constancy, checked before centring: rounding in x - mean would turn
  # a constant into tiny noise and give a meaningless r.
  if np.all(x == x[0]) or np.all(y == y[0]):
    return math.nan
  xm, ym = x - x.mean(), y - y.mean()
  r = np.dot(xm / np.linalg.norm(xm), ym / np.linalg.norm(ym))
  return float(np.clip(r, -1.0, 1.0))


def pearson(x, y) -> float:
  """Pearson correlation; matches scipy.stats.pearsonr(x, y).statistic.

  Undefined cases give nan like scipy, but silently (scipy warns on each call):
  a constant input, fewer than 2 values, or a nan among the values.

  Args:
    x, y: [n] values.
  """
  return _correlation(*_paired_values(x, y))


def _average_ranks(values: np.ndarray) -> np.ndarray:
  """1-based ranks, ties sharing the mean of their ranks; scipy.stats.rankdata(method="average")."""
  _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
  ends = np.cumsum(counts)  # 1-based rank of each distinct value's last copy.
  return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def spearman(x, y) -> float:
  """Spearman rank correlation; matches scipy.stats.spearmanr(x, y).statistic.

  Pearson correlation of the average ranks (ties share the mean of their
  ranks). Undefined cases give nan like scipy, but silently (scipy warns on
  each call): a constant input, fewer than 2 values, or a nan among the values.

  Args:
    x, y: [n] values.
  """
  x, y = _paired_values(x, y)
  if np.isnan(x).any() or np.isnan(y).any():
    return math.nan
  return _correlation(_average_ranks(x), _average_ranks(y))


def regression_metrics(labels, predictions) -> dict[str, float]:
  """STS-B-style scores: pearson and spearman (nan if undefined, see `pearson`), and mean squared error.

  Args:
    labels: [n] gold values.
    predictions: [n] predicted values.
  """
  labels, predictions = _paired_values(labels, predictions)
  if len(labels) == 0:
    raise ValueError("no examples to score")
  return {
      "pearson": pearson(labels, predictions),
      "spearman": spearman(labels, predictions),
      "mse": float(np.mean((labels - predictions)**2)),
  }


# ----------------------------------------------------------------------------
# Token classification (entity level, seqeval / conlleval)
# ----------------------------------------------------------------------------

# Boundary rules of conlleval as seqeval writes them. Tags are "<tag>-<type>"
# with tag one of B I E S O (IOB1, IOB2, IOE, BIOES); "." is conlleval's
# sentence-internal separator and never starts or ends a chunk by type.


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
  if prev_tag in ("E", "S"):
    return True
  if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
    return True
  return prev_tag not in ("O", ".") and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
  if tag in ("B", "S"):
    return True
  if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
    return True
  return tag not in ("O", ".") and prev_type != type_


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
  """Entities in one tag sequence as (type, start, end), end inclusive; seqeval's get_entities.

  Follows seqeval.metrics.sequence_labeling.get_entities (default, non-strict
  mode, prefix tags), which reproduces conlleval:
    - "B-X" and "S-X" start an entity; "I-X" or "E-X" starts one after "O",
      after "E-"/"S-", or after a tag of another type (IOB1 style), and
      otherwise continues the current one;
    - "E-X" and "S-X" end their entity; "O", "B-", "S-" end a running one, and
      so does any tag of a different type.
  The type is the text after the first "-"; tags without one ("B", "I", ...)
  have type "_". A tag with an unknown letter ("X-PER", or "PER" read as tag
  "P" of type "ER") acts as seqeval makes it: it ends a running entity and
  starts one exactly when its type differs, like an "I-" tag. seqeval warns
  about such tags; this does not.

  Args:
    tags: [length] tag strings.

  Returns:
    the set of (type, start, end) with 0-based, inclusive positions.
  """
  spans = set()
  prev_tag, prev_type, begin = "O", "", 0
  for i, chunk in enumerate([*tags, "O"]):
    if not chunk:
      raise ValueError(f"empty tag at position {i}")
    tag, type_ = chunk[0], chunk[1:].split("-", maxsplit=1)[-1] or "_"
    if _end_of_chunk(prev_tag, tag, prev_type, type_):
      spans.add((prev_type, begin, i - 1))
    if _start_of_chunk(prev_tag, tag, prev_type, type_):
      begin = i
    prev_tag, prev_type = tag, type_
  return spans


def _check_sequences(true_sequences, pred_sequences) -> None:
  if len(true_sequences) != len(pred_sequences):
    raise ValueError(f"{len(true_sequences)} true sentences but {len(pred_sequences)} predicted")
  for i, (true, pred) in enumerate(zip(true_sequences, pred_sequences)):
    if len(true) != len(pred):
      raise ValueError(f"sentence {i}: {len(true)} true tags but {len(pred)} predicted")


def entity_f1(true_sequences: Sequence[Sequence[str]], pred_sequences: Sequence[Sequence[str]]) -> dict[str, float]:
  """Entity-level precision, recall and F1; matches seqeval's precision_score / recall_score / f1_score.

  seqeval's default mode (conlleval-compatible, not mode="strict"): an entity
  counts as correct when its type, start and end all match. Counts are
  micro-averaged over all sentences. As seqeval does, the sentences are joined
  with an "O" between them, so an entity never runs across a boundary and
  counts in its own sentence. Scores with a 0 denominator are 0.0.

  Args:
    true_sequences: [sentences][length] gold tags.
    pred_sequences: [sentences][length] predicted tags, each sentence as long
      as its gold one (ValueError naming the sentence otherwise).

  Returns:
    dict with precision, recall, f1.
  """
  _check_sequences(true_sequences, pred_sequences)
  joined_true = [tag for sentence in true_sequences for tag in (*sentence, "O")]
  joined_pred = [tag for sentence in pred_sequences for tag in (*sentence, "O")]
  true_spans, pred_spans = entity_spans(joined_true), entity_spans(joined_pred)
  correct = len(true_spans & pred_spans)
  precision = correct / len(pred_spans) if pred_spans else 0.0
  recall = correct / len(true_spans) if true_spans else 0.0
  score = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
  return {"precision": float(precision), "recall": float(recall), "f1": float(score)}


def token_accuracy(true_sequences: Sequence[Sequence[str]], pred_sequences: Sequence[Sequence[str]]) -> float:
  """Fraction of tokens whose tag is right, "O" included; matches seqeval.metrics.accuracy_score.

  Args:
    true_sequences: [sentences][length] gold tags.
    pred_sequences: [sentences][length] predicted tags, lengths as the gold.
  """
  _check_sequences(true_sequences, pred_sequences)
  total = sum(len(sentence) for sentence in true_sequences)
  if total == 0:
    raise ValueError("no tokens to score")
  correct = sum(t == p for true, pred in zip(true_sequences, pred_sequences) for t, p in zip(true, pred))
  return correct / total


# ----------------------------------------------------------------------------
# Extractive question answering (official SQuAD v1.1 / v2.0 evaluation)
# ----------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------
# Retrieval
# ----------------------------------------------------------------------------


def _check_retrieval(ranked_ids, relevant, k) -> list[set]:
  """Validates the arguments; returns the relevance collections as sets."""
  if len(ranked_ids) != len(relevant):
    raise ValueError(f"{len(ranked_ids)} ranked lists but {len(relevant)} relevance sets")
  if not ranked_ids:
    raise ValueError("no queries to score")
  if k is not None and k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  for i, rel in enumerate(relevant):
    # Every score here is undefined (or meaningless) for a query nothing is relevant to.
    if not rel:
      raise ValueError(f"query {i} has no relevant ids")
  return [set(rel) for rel in relevant]


def _top_hits(ranked: Sequence[Hashable], rel: set, k: int | None) -> list[bool]:
  """[min(k, len(ranked))] whether each of the top k ids is relevant; a repeated id counts only the first time."""
  seen, hits = set(), []
  for doc in ranked[:k]:
    hits.append(doc in rel and doc not in seen)
    seen.add(doc)
  return hits


def recall_at_k(ranked_ids: Sequence[Sequence[Hashable]], relevant: Sequence[set], k: int) -> float:
  """Recall@k: |relevant within the top k| / |relevant| per query, averaged over queries.

  As `recall_k` in BEIR / pytrec_eval's recall_k (the denominator is the full
  relevant set, not min(k, |relevant|)).

  Args:
    ranked_ids: [queries][ranked] ids, best first.
    relevant: [queries] set of relevant ids; none may be empty.
    k: cutoff, >= 1.
  """
  relevant = _check_retrieval(ranked_ids, relevant, k)
  return float(np.mean([sum(_top_hits(ranked, rel, k)) / len(rel) for ranked, rel in zip(ranked_ids, relevant)]))


def mrr(ranked_ids: Sequence[Sequence[Hashable]], relevant: Sequence[set], k: int | None = None) -> float:
  """Mean reciprocal rank: 1 / (1-based rank of the first relevant id), 0 if none in the top k; as MRR@k of MS MARCO.

  Args:
    ranked_ids: [queries][ranked] ids, best first.
    relevant: [queries] set of relevant ids; none may be empty.
    k: cutoff, >= 1; None looks at the whole ranking.
  """
  relevant = _check_retrieval(ranked_ids, relevant, k)
  scores = []
  for ranked, rel in zip(ranked_ids, relevant):
    hits = _top_hits(ranked, rel, k)
    scores.append(1.0 / (hits.index(True) + 1) if any(hits) else 0.0)
  return float(np.mean(scores))


def ndcg_at_k(ranked_ids: Sequence[Sequence[Hashable]], relevant: Sequence[set], k: int) -> float:
  """NDCG@k with binary gains and log2 discount; as pytrec_eval's ndcg_cut_k.

  DCG sums 1 / log2(r + 1) over the 1-based ranks r <= k holding a relevant
  id; it is divided by the DCG of the ideal ranking, which puts
  min(k, |relevant|) relevant ids first. Averaged over queries.

  Args:
    ranked_ids: [queries][ranked] ids, best first.
    relevant: [queries] set of relevant ids; none may be empty.
    k: cutoff, >= 1.
  """
  relevant = _check_retrieval(ranked_ids, relevant, k)
  discounts = 1.0 / np.log2(np.arange(2, k + 2))  # [k] for ranks 1..k.
  scores = []
  for ranked, rel in zip(ranked_ids, relevant):
    hits = np.asarray(_top_hits(ranked, rel, k), dtype=np.float64)
    dcg = float(hits @ discounts[:len(hits)])
    ideal = float(discounts[:min(k, len(rel))].sum())
    scores.append(dcg / ideal)
  return float(np.mean(scores))


# ----------------------------------------------------------------------------
# Across runs (seeds / restarts)
# ----------------------------------------------------------------------------


def summarize_runs(runs: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float | int]]:
  """Per-metric statistics over several runs of the same fine-tuning (e.g. seeds).

  Each key found in any run is summarized over the runs that have it, in order
  of first appearance. A nan value (say a spearman of a constant predictor)
  makes that key's statistics nan; drop degenerate runs first to avoid it.

  Args:
    runs: [runs] dicts of metric name -> number.

  Returns:
    metric name -> dict with mean, median, std (sample standard deviation,
    ddof=1; 0.0 for a single run), min, max (floats) and n (int).
  """
  values: dict[str, list[float]] = {}
  for i, run in enumerate(runs):
    for key, value in run.items():
      try:
        values.setdefault(key, []).append(float(value))
      except (TypeError, ValueError) as e:
        raise TypeError(f"run {i}: metric {key!r} is not a number: {value!r}") from e
  summary = {}
  for key, numbers in values.items():
    array = np.asarray(numbers, dtype=np.float64)
    summary[key] = {
        "mean": float(np.mean(array)),
        "median": float(np.median(array)),
        "std": float(np.std(array, ddof=1)) if len(array) > 1 else 0.0,
        "min": float(np.min(array)),
        "max": float(np.max(array)),
        "n": len(array),
    }
  return summary


def degenerate_runs(runs: Sequence[Mapping[str, float]], key: str = "predicted_classes") -> list[int]:
  """Indexes of the runs whose `key` is <= 1: by default, classifiers that predicted a single class.

  Args:
    runs: [runs] dicts of metric name -> number, e.g. `classification_metrics` outputs.
    key: the metric to check; KeyError naming the run if one lacks it.
  """
  degenerate = []
  for i, run in enumerate(runs):
    if key not in run:
      raise KeyError(f"run {i} has no {key!r} metric; it has {sorted(run)}")
    if run[key] <= 1:
      degenerate.append(i)
  return degenerate
