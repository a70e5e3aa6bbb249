"""Compare runs: `python -m bert_jax.report WORKDIR...` -> a Markdown table and loss / accuracy curves.

    python -m bert_jax.report /tmp/sweep                 # a sweep folder (launch/sweep.py): all its runs
    python -m bert_jax.report /tmp/run_a /tmp/run_b --out=/tmp/cmp

Reads each run's metrics.jsonl (bert_jax.metrics.read_metrics) and writes, in
--out (default: the single folder given, or the current directory):

- report.md: one row per run: what differs (the sweep's grid values, or the
  folder name), backbone parameters, last step, final training loss (mean of
  the last 10% of logged steps, which smooths batch noise), the best and the
  last value of every evaluation metric, median tokens/s and MFU.
- curves.png: training loss and every evaluation metric against the step,
  one line per run.

A run still in progress is reported up to its last line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence

import numpy as np

from bert_jax import evaluation
from bert_jax.metrics import read_metrics



def series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of one metric, the last value kept when a step was logged twice (resumes)."""
  points = {r["step"]: r[key] for r in records if key in r and isinstance(r[key], (int, float))}
  steps = np.array(sorted(points))
  return steps, np.array([points[s] for s in steps], float)


def runs_of(paths: Sequence[str]) -> list[tuple[str, str, dict]]:
  """(label, workdir, grid values) for every run: a sweep folder expands to its runs."""
  out = []
  for path in paths:
    plan_file = os.path.join(path, "sweep.json")
    if os.path.isfile(plan_file):
      with open(plan_file) as f:
        plan = json.load(f)
      for run in plan["runs"]:
        if os.path.isfile(os.path.join(run["workdir"], "metrics.jsonl")):
          out.append((run["name"], run["workdir"], run["grid"]))
    else:
      out.append((os.path.basename(os.path.normpath(path)), path, {}))
  if not out:
    raise SystemExit(f"no runs with a metrics.jsonl in {list(paths)}")
  return out


def summarize(records: list[dict]) -> dict:
  row: dict = {}
  params = [r["model/params"] for r in records if "model/params" in r]
  row["params"] = params[0] if params else None
  steps, loss = series(records, "train/loss")
  row["step"] = int(max((r["step"] for r in records), default=0))
  if len(loss):
    tail = max(1, len(loss) // 10)
    row["final train/loss"] = float(np.mean(loss[-tail:]))
  eval_keys = sorted({k for r in records for k in r if k.startswith(("eval/", "test/")) and "_seed" not in k})
  for key in eval_keys:
    _, values = series(records, key)
    if len(values):
      better = min if evaluation.lower_is_better(key) else max
      row[f"best {key}"] = float(better(values))
      row[f"last {key}"] = float(values[-1])
  for key, name in (("perf/tokens_per_sec", "tokens/s"), ("perf/mfu", "MFU")):
    _, values = series(records, key)
    if len(values) > 1:
      row[name] = float(np.median(values[1:]))  # the first rate includes compilation
  return row


def markdown(rows: list[tuple[str, dict, dict]]) -> str:
  grid_keys = sorted({k for _, grid, _ in rows for k in grid})
  metric_keys = []
  for _, _, row in rows:
    metric_keys += [k for k in row if k not in metric_keys]
  header = ["run"] + grid_keys + metric_keys
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for label, grid, row in rows:
    cells = [label] + [str(grid.get(k, "")) for k in grid_keys] + [_format(row.get(k)) for k in metric_keys]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _format(value) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    if math.isnan(value):
      return "nan"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"
  return f"{value:,}" if isinstance(value, int) else str(value)


def plot(runs: list[tuple[str, list[dict]]], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  keys = ["train/loss"] + sorted({k for _, records in runs for r in records for k in r
                                   if k.startswith("eval/") and "_seed" not in k})
  cols = min(3, len(keys))
  rows = math.ceil(len(keys) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
  for ax, key in zip(axes.flat, keys):
    for label, records in runs:
      steps, values = series(records, key)
      if len(steps):
        ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=label)
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(keys):]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bert_jax.report", description=__doc__.split("\n")[0])
  parser.add_argument("workdirs", nargs="+", help="run folders or sweep folders")
  parser.add_argument("--out", default=None, help="folder for report.md and curves.png")
  args = parser.parse_args(argv)
  out = args.out or (args.workdirs[0] if len(args.workdirs) == 1 else ".")
  os.makedirs(out, exist_ok=True)
  runs, rows = [], []
  for label, workdir, grid in runs_of(args.workdirs):
    try:
      records = read_metrics(workdir)
    except (FileNotFoundError, ValueError) as e:
      raise SystemExit(f"error: {e}") from None
    runs.append((label, records))
    rows.append((label, grid, summarize(records)))
  table = markdown(rows)
  with open(os.path.join(out, "report.md"), "w") as f:
    f.write(table)
  plot(runs, os.path.join(out, "curves.png"))
  sys.stdout.write(table)
  print(f"\nwrote {os.path.join(out, 'report.md')} and {os.path.join(out, 'curves.png')}")
