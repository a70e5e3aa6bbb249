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

from bert_jax.runtime import fileio


class MetricWriter:
  """Appends metric records to WORKDIR/metrics.jsonl (and TensorBoard events) from process 0.

  A local file is appended to line by line. Object stores (gs://) cannot append, so a
  remote metrics.jsonl is rewritten whole at each write from the lines kept in memory
  (a few hundred kB even for long runs at the usual log_every).
  """

  def __init__(self, workdir: str, *, resume_step: int | None = None, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    run_dir = fileio.resolve(workdir)
    self.path = run_dir / "metrics.jsonl"
    self.remote = fileio.is_remote(self.path)
    self._lines: list[str] = []
    self._tb = None
    if not self.enabled:
      return
    if resume_step is not None:
      truncate_after(self.path, resume_step)
    if self.remote and self.path.exists():
      self._lines = self.path.read_text().splitlines(keepends=True)
    if tensorboard:
      try:
        self._tb = _summary_writer_class()(os.fspath(run_dir / "tensorboard"))
      except ImportError:
        self._tb = None

  def write(self, step: int, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step)}
    for key, value in values.items():
      value = np.asarray(value).item() if not isinstance(value, (int, float, str)) else value
      record[key] = value if not (isinstance(value, float) and not math.isfinite(value)) else str(value)
    line = json.dumps(record) + "\n"
    if self.remote:
      self._lines.append(line)
      self.path.write_text("".join(self._lines))
    else:
      with open(self.path, "a") as f:
        f.write(line)
    if self._tb is not None:
      for key, value in values.items():
        if isinstance(record[key], (int, float)):
          self._tb.add_scalar(key, record[key], step)
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _summary_writer_class():
  """tensorboardX.SummaryWriter, imported without torch.

  tensorboardX's writer imports torch when it is installed, only to accept torch tensors:
  1.3 s of a run's start-up here. Scalars are Python floats, so the import runs with torch
  marked absent when nothing has imported it yet (and unmarked right after).
  """
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None  # makes `import torch` raise ImportError
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


def truncate_after(path, step: int) -> None:
  """Drops lines with "step" > step (atomically: the file is replaced only by a complete one)."""
  path = fileio.resolve(path)
  if not path.exists():
    return
  lines = path.read_text().splitlines(keepends=True)
  kept = []
  for line in lines:
    try:
      if json.loads(line).get("step", 0) <= step:
        kept.append(line if line.endswith("\n") else line + "\n")
    except json.JSONDecodeError:
      continue  # a half-written last line from a killed process
  if kept != lines:
    fileio.write_atomic(path, "".join(kept))


def read_metrics(workdir: str) -> list[dict]:
  """The records of WORKDIR/metrics.jsonl (local or remote), in file order; blank lines skipped.

  A torn last line (a run killed, or still running, mid-write) is dropped; any other line that
  is not JSON raises ValueError naming PATH:LINE. A workdir without the file raises
  FileNotFoundError.
  """
  path = fileio.resolve(workdir) / "metrics.jsonl"
  if not path.exists():
    raise FileNotFoundError(f"{workdir}: no metrics.jsonl (is this a bert_jax.main workdir?)")
  lines = path.read_text().splitlines()
  records = []
  for number, line in enumerate(lines, 1):
    if line.strip():
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        # A run killed mid-write can leave a torn last line; anything else is an error.
        if number == len(lines):
          break
        raise ValueError(f"{path}:{number}: not valid JSON ({e})") from None
  return records


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

  def line(self, step: int, loss: float, rates: Mapping[str, float], real_fraction: float | None = None) -> str:
    """real_fraction: the share of token slots holding real tokens (the rest is padding), shown beside tokens/s."""
    sps = rates["perf/steps_per_sec"]
    eta = (self.total - step) / sps if sps > 0 else float("inf")
    mfu = f" | MFU {rates['perf/mfu']:.1%}" if "perf/mfu" in rates else ""
    real = f" ({real_fraction:.0%} real)" if real_fraction is not None else ""
    return (f"step {step:>7}/{self.total} | loss {loss:.4f} | {sps:.2f} steps/s | "
            f"{rates['perf/tokens_per_sec']:,.0f} tokens/s{real}{mfu} | ETA {format_duration(eta)}")

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
