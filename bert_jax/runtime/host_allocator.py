"""glibc malloc settings that stop XLA:CPU from faulting in its working memory on every step.

XLA:CPU gives each execution of a program one temp buffer for all its intermediate values
(723 MB for the bert-small train step at batch 16 x 128) and frees it when the execution
ends. glibc hands any block over 32 MiB out as a fresh `mmap` and unmaps it on free, and a
thread other than the main one allocates from its own arena, which does the same for any
block larger than its 64 MiB heap. So every step the kernel maps, zeroes and faults in the
whole buffer again: 2.7M minor page faults and 5.5 s of system time over 12 steps of
bert-small, about 0.2 s (13%) of each 1.5 s step.

`tune_for_cpu` makes every thread allocate from the main heap (one arena), never use `mmap`
for a block, and never give freed memory back to the kernel: the next step finds the last
step's pages still mapped. The bert-small step goes from 1.53 to 1.34 s
(`python benchmarks/train_step.py --family=bert --size=small`, with and without
BERT_JAX_MALLOC=system). The costs: the resident size never shrinks below its peak, and
threads share one allocator lock, which matters on hosts with many cores and little on a
CPU backend whose compute threads allocate rarely. So it applies only when JAX will run on
the CPU, and only from the command-line entry points (importing bert_jax changes nothing).

It has to run before JAX starts its thread pools: glibc fixes the number of arenas the
first time a second thread allocates.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# Installed accelerator backends: with one of these JAX runs on the accelerator by default.
_ACCELERATOR_MODULES = ("libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "jax_plugins")


def cpu_backend_expected() -> bool:
  """Whether JAX will pick its CPU backend: JAX_PLATFORMS says cpu, or no accelerator plugin is installed."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  return not any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_MODULES)


def tune_for_cpu() -> bool:
  """Applies the settings above on glibc when JAX will run on the CPU; returns whether it did.

  BERT_JAX_MALLOC=system leaves glibc's defaults (for comparison, or a host where the
  resident size must shrink after peaks).
  """
  if os.environ.get("BERT_JAX_MALLOC", "").lower() == "system":
    return False
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or not cpu_backend_expected():
    return False
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  # mallopt returns 1 on success. M_TRIM_THRESHOLD takes an int: -1 becomes SIZE_MAX inside, never trim.
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_TOP_PAD, 64 << 20))
  return all(libc.mallopt(param, value) == 1 for param, value in settings)
