"""Classification scores: accuracy, F1 (binary / macro / micro), Matthews correlation, and all three from logits.

Each reproduces scikit-learn (accuracy_score, f1_score, matthews_corrcoef) on
1-D label arrays of ints or strings; tests/test_evaluation.py checks them
against it. Scores are Python floats in [0, 1] (MCC in [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np


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
