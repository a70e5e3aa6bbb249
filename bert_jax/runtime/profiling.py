"""Profiler traces of training steps (`config.profile_steps`) and where their time went.

    python -m bert_jax.main ... --config.profile_steps=5     # WORKDIR/profile/plugins/profile/<time>/
    python -m bert_jax.runtime.profiling WORKDIR/profile [--top=30]

The loop traces `profile_steps` steps right after the first (compiling) one, each waited for,
so the trace holds steady-state steps only. The trace is TensorBoard's (xplane, for the
profile plugin or xprof) plus a Perfetto JSON (`perfetto_trace.json.gz`, for
ui.perfetto.dev), which `op_seconds` sums without either tool: seconds per event name over
the traced steps. On CPU, XLA names its kernels in the trace only when the process starts
with XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true (then fusions, dots and YNNPACK calls
each get their line); on GPU and TPU the device ops are always there.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os

import jax
from absl import logging


class StepProfiler:
  """Traces steps first_step .. first_step + steps - 1 into `directory` (process 0 only)."""

  def __init__(self, directory: str, steps: int, first_step: int):
    self.directory, self.steps, self.first_step = directory, int(steps), first_step
    self.enabled = self.steps > 0 and jax.process_index() == 0
    self.active = False

  def before(self, step: int) -> None:
    if self.enabled and step == self.first_step:
      jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
      self.active = True

  def after(self, step: int, state) -> None:
    if self.active and step == self.first_step + self.steps - 1:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False
      logging.info("profiled steps %d-%d into %s (summary: python -m bert_jax.runtime.profiling %s)",
                   self.first_step, step, self.directory, self.directory)

  def close(self) -> None:
    """Stops a trace the run ended inside (fewer steps left than profile_steps)."""
    if self.active:
      jax.profiler.stop_trace()
      self.active = False


def newest_trace(directory: str) -> str:
  """The newest perfetto_trace.json.gz under directory (a profile folder or a run's workdir)."""
  found = glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"), recursive=True)
  if not found:
    raise FileNotFoundError(f"no perfetto_trace.json.gz under {directory} (was config.profile_steps > 0?)")
  return max(found, key=os.path.getmtime)


def op_seconds(path: str) -> dict[str, float]:
  """Seconds per event name (complete events, summed over threads) of a Perfetto JSON trace.

  Nested events each count their own span, so a step's top-level event includes its ops.
  """
  with gzip.open(path, "rt") as f:
    events = json.load(f)["traceEvents"]
  totals = collections.defaultdict(float)
  for event in events:
    if event.get("ph") == "X":
      totals[event.get("name", "?")] += event.get("dur", 0) / 1e6  # microseconds
  return dict(totals)


def summary(path: str, top: int = 30) -> str:
  """A table of the `top` event names by total seconds."""
  totals = sorted(op_seconds(path).items(), key=lambda kv: -kv[1])[:top]
  rows = [f"| {name} | {seconds:.4f} |" for name, seconds in totals]
  return "\n".join([f"{path}", "", "| event | seconds |", "|---|---|", *rows])


def main() -> None:
  parser = argparse.ArgumentParser(description="Where the traced steps' time went (seconds per event name).")
  parser.add_argument("directory", help="the profile folder (WORKDIR/profile) or a run's workdir")
  parser.add_argument("--top", type=int, default=30)
  args = parser.parse_args()
  print(summary(newest_trace(args.directory), args.top))


if __name__ == "__main__":
  main()
