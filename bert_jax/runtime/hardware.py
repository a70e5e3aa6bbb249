"""Peak FLOP/s of the devices, for MFU: datasheet numbers for accelerators, a measured matmul peak on CPU."""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import jax.numpy as jnp

from bert_jax.runtime import caches

# Dense bf16 peak per chip (FLOP/s), from the vendors' datasheets.
DATASHEET_BF16 = {
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12,
    "NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
}


def measure_matmul_peak(size: int = 2048, repeats: int = 5, dtype=jnp.float32) -> float:
  """Best FLOP/s of a jitted square matmul on the default device (all local cores)."""
  a = jnp.ones((size, size), dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    f(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size ** 3 / best


def peak_flops(dtype: str = "float32", refresh: bool = False) -> float | None:
  """Machine peak FLOP/s for this process's devices.

  Accelerators: the datasheet. CPU: the best measured jitted matmul, cached in
  bert_jax.runtime.caches (cpu_peak.json). A measurement taken while other jobs load the
  machine is low, so the cache keeps the best value seen, and `refresh=True`
  (benchmarks) measures again and keeps the larger of the two.
  """
  device = jax.local_devices()[0]
  if device.platform != "cpu":
    for name, flops in DATASHEET_BF16.items():
      if device.device_kind.startswith(name):
        return flops * jax.local_device_count() * (0.5 if dtype == "float32" and "TPU" not in name else 1.0)
    return None
  cache = caches.path("cpu_peak.json")
  key = f"{platform.processor() or platform.machine()}-{os.cpu_count()}-{jax.__version__}"
  try:
    with open(cache) as f:
      stored = json.load(f)
  except (OSError, json.JSONDecodeError):
    stored = {}
  if key in stored and not refresh:
    return stored[key]
  # Fake CPU devices share the same cores: one measurement is the machine's peak.
  value = max(measure_matmul_peak(), stored.get(key, 0.0))
  stored[key] = value
  try:
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache, "w") as f:
      json.dump(stored, f)
  except OSError:
    pass
  return value
