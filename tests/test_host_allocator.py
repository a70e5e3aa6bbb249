"""host_allocator: a freed large block is reused without new page faults, only where JAX runs on the CPU."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from bert_jax.runtime import host_allocator

# A worker thread allocates, touches and frees a 100 MiB block ten times (what XLA:CPU does with a
# step's temp buffer) and reports the minor page faults of the last nine rounds.
_PROBE = textwrap.dedent("""
    import ctypes, resource, sys, threading
    from bert_jax.runtime import host_allocator
    applied = host_allocator.tune_for_cpu()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
    libc.free.argtypes = (ctypes.c_void_p,)
    size = 100 << 20
    faults = []
    def rounds():
      for i in range(10):
        if i == 1:
          faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        block = libc.malloc(size)
        libc.memset(block, 1, size)
        libc.free(block)
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    thread = threading.Thread(target=rounds)
    thread.start()
    thread.join()
    print(applied, faults[1] - faults[0])
""")


def _probe(env_extra: dict[str, str]) -> tuple[bool, int]:
  env = dict(os.environ, **env_extra)
  out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True).stdout
  applied, faults = out.split()
  return applied == "True", int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")
def test_freed_block_is_reused_without_faulting_it_in_again():
  pages = 9 * (100 << 20) // 4096  # nine rounds of a block that is faulted in anew each time
  applied, faults = _probe({"JAX_PLATFORMS": "cpu"})
  assert applied
  assert faults < pages // 20, faults
  applied, faults = _probe({"JAX_PLATFORMS": "cpu", "BERT_JAX_MALLOC": "system"})
  assert not applied
  assert faults > pages * 0.9, faults  # glibc's defaults: an mmap per round


def test_only_when_jax_runs_on_the_cpu(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert host_allocator.cpu_backend_expected()
  monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
  assert not host_allocator.cpu_backend_expected()
  assert not host_allocator.tune_for_cpu()
  monkeypatch.setenv("JAX_PLATFORMS", "")
  found = {"libtpu"}
  monkeypatch.setattr(host_allocator.importlib.util, "find_spec", lambda name: object() if name in found else None)
  assert not host_allocator.cpu_backend_expected()
  found.clear()
  assert host_allocator.cpu_backend_expected()
