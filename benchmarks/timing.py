"""Wall time of blocked JAX calls, for the benchmark scripts beside this file (`import timing`).

A call is timed until its result is ready (`jax.block_until_ready`), so the figure is the
computation and not its dispatch. Scripts that compare two sides alternate their calls
(`seconds` one at a time) so that a change of machine load reaches both.
"""

from __future__ import annotations

import time


def seconds(call) -> float:
  """Seconds of one call of `call()`, its result waited for."""
  import jax
  start = time.perf_counter()
  jax.block_until_ready(call())
  return time.perf_counter() - start


def repeated(call, reps: int, warmup: int = 1) -> list[float]:
  """`warmup` untimed calls (the first compiles), then the seconds of each of `reps` calls."""
  for _ in range(warmup):
    seconds(call)
  return [seconds(call) for _ in range(reps)]
