"""Where bert_jax keeps what it can rebuild: prepared data shards, compiled programs, the CPU peak.

Everything lives under one root, `$BERT_JAX_CACHE` or `~/.cache/bert_jax`:

    prepared/    tokenized ArrayRecord shards; each folder is named by a fingerprint of its
                 inputs (files with size and mtime, tokenizer, example settings), so runs in
                 different workdirs share them and a changed input gets a new folder
    jax_cache/   XLA's persistent compilation cache ($JAX_COMPILATION_CACHE_DIR wins)
    cpu_peak.json  the measured matmul peak used for MFU on CPU

Deleting the root loses nothing but time.
"""

from __future__ import annotations

import os

import jax


def root() -> str:
  return os.path.expanduser(os.environ.get("BERT_JAX_CACHE") or os.path.join("~", ".cache", "bert_jax"))


def path(*parts: str) -> str:
  return os.path.join(root(), *parts)


def enable_compilation_cache() -> None:
  """Persistent XLA cache so a repeat run loads its programs instead of compiling them.

  $JAX_COMPILATION_CACHE_DIR (or an explicit jax config) wins over the default folder.
  Every program that took at least 0.1 s to compile is kept: on CPU that is every step
  program, whose compilation is most of a short run's fixed cost.
  """
  if jax.config.jax_compilation_cache_dir is None:
    jax.config.update("jax_compilation_cache_dir", path("jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
