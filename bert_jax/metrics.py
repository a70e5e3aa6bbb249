"""Run metrics: WORKDIR/metrics.jsonl (one JSON object per line), TensorBoard events, progress line.

Only process 0 writes. On resume, lines past the restored step (written after
the last checkpoint of an interrupted run) are dropped first, so the file reads
as one continuous run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping

import jax
import numpy as np


class MetricWriter:
  def __init__(self, workdir: str, *, resume_step: int | None = None, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not self.enabled:
      return
    if resume_step is not None:
      truncate_after(self.path, resume_step)
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        self._tb = None

  def write(self, step: int, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step)}
    for key, value in values.items():
      value = np.asarray(value).item() if not isinstance(value, (int, float, str)) else value
      record[key] = value if not (isinstance(value, float) and not math.isfinite(value)) else str(value)
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for key, value in values.items():
        if isinstance(record[key], (int, float)):
          self._tb.add_scalar(key, record[key], step)
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def truncate_after(path: str, step: int) -> None:
  """Drops lines with "step" > step (atomically: a temp file renamed over the original)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      if json.loads(line).get("step", 0) <= step:
        kept.append(line)
    except json.JSONDecodeError:
      continue  # a half-written last line from a killed process
  if len(kept) != len(lines):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, path)


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """One line per log step: step, loss, steps/s, tokens/s, MFU, ETA (process 0, stdout)."""

  def __init__(self, total_steps: int, tokens_per_step: int, flops_per_step: float | None,
               peak_flops: float | None):
    self.total = total_steps
    self.tokens_per_step = tokens_per_step
    self.flops_per_step = flops_per_step
    self.peak = peak_flops
    self._last = None

  def start(self, step: int) -> None:
    self._last = (step, time.perf_counter())

  def rates(self, step: int) -> dict[str, float]:
    last_step, last_time = self._last
    now = time.perf_counter()
    self._last = (step, now)
    elapsed = max(now - last_time, 1e-9)
    steps_per_s = (step - last_step) / elapsed
    out = {"perf/steps_per_sec": steps_per_s, "perf/tokens_per_sec": steps_per_s * self.tokens_per_step}
    if self.flops_per_step and self.peak:
      out["perf/mfu"] = steps_per_s * self.flops_per_step / self.peak
    return out

  def line(self, step: int, loss: float, rates: Mapping[str, float]) -> str:
    sps = rates["perf/steps_per_sec"]
    eta = (self.total - step) / sps if sps > 0 else float("inf")
    mfu = f" | MFU {rates['perf/mfu']:.1%}" if "perf/mfu" in rates else ""
    return (f"step {step:>7}/{self.total} | loss {loss:.4f} | {sps:.2f} steps/s | "
            f"{rates['perf/tokens_per_sec']:,.0f} tokens/s{mfu} | ETA {format_duration(eta)}")

  def print(self, text: str) -> None:
    if jax.process_index() == 0:
      print(text, file=sys.stdout, flush=True)


def format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
