"""Scores across runs of one fine-tuning (seeds, restarts): per-metric summaries and degenerate-run flags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Metric names (or their endings: "eval/mlm_loss") where smaller is better; every other metric is maximised.
LOWER_IS_BETTER = ("loss", "mse", "perplexity")


def lower_is_better(metric: str) -> bool:
  """Whether a smaller value of `metric` ("accuracy", "mse", "eval/mlm_loss", ...) is better."""
  return metric.rsplit("/", 1)[-1].endswith(LOWER_IS_BETTER)


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


def summary_table(summary: dict) -> str:
  """Markdown: one row per metric and split with mean, median, std, min, max over seeds."""
  lines = [f"Best by `{summary['metric']}` over seeds {summary['seeds']} (best steps {summary['best_steps']})", "",
           "| split | metric | mean | median | std | min | max | n |", "|---|---|---|---|---|---|---|---|"]
  for split in ("validation", "test"):
    for key, stats in summary[split].items():
      lines.append(f"| {split} | {key} | {stats['mean']:.4f} | {stats['median']:.4f} | {stats['std']:.4f} | "
                   f"{stats['min']:.4f} | {stats['max']:.4f} | {stats['n']} |")
  if summary["degenerate_seeds"]:
    lines += ["", f"**Degenerate runs** (one predicted class): seeds {summary['degenerate_seeds']}"]
  return "\n".join(lines) + "\n"
