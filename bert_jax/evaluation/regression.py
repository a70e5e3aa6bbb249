"""Regression scores: Pearson and Spearman correlation and mean squared error (STS-B style).

`pearson` and `spearman` reproduce scipy.stats.pearsonr / spearmanr, giving nan
for the undefined cases as scipy does but without its warning;
tests/test_evaluation.py checks them against scipy.
"""

from __future__ import annotations

import math

import numpy as np


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
