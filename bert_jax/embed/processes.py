"""Several processes for the application commands (embed, search, rerank): their flags, their start, who writes.

    python -m bert_jax.embed ... --coordinator_address=HOST:PORT --num_processes=N --process_id=I

The flags are bert_jax.main's; on TPU VMs and SLURM (more than one task)
jax.distributed finds the processes itself. Each process reads the whole
input (the batch plan must be the same everywhere) and encodes the rows of
its own devices; results are gathered, and process 0 alone shows progress,
prints and writes the output files. Every process then waits for process 0
(`written`), so that when any of them returns the outputs are complete (a
script running `index` then `query` reads the index it has just built).
As in bert_jax.main, the processes are linked by bert_jax.runtime.peer_watch:
when one fails or dies, the others stop within a second, not a heartbeat timeout.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
import traceback

# As bert_jax.main: how long the processes wait for each other at the start, and how long a
# silent process may go before the others stop with an error.
INITIALIZATION_TIMEOUT_S = 300
HEARTBEAT_TIMEOUT_S = 60
_peer_links = []  # this process's PeerWatch, once started


def add_flags(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("several processes (as bert_jax.main; none needed on TPU VMs and SLURM)")
  group.add_argument("--coordinator_address", default=None, help="HOST:PORT of process 0")
  group.add_argument("--num_processes", type=int, default=None, help="number of processes")
  group.add_argument("--process_id", type=int, default=None, help="this process's index, 0 .. num_processes - 1")


def _cluster_environment() -> bool:
  """SLURM with several tasks, or a TPU VM slice of several hosts: jax.distributed reads the rest."""
  return int(os.environ.get("SLURM_NTASKS", "1")) > 1 or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0


def initialize(args: argparse.Namespace, error: type[Exception] = ValueError) -> None:
  """jax.distributed from the flags or the cluster environment; nothing for one process.

  Call before anything touches a device. A second call in the same process (a
  script running several commands) keeps the first start.
  """
  import jax
  address, count, index = args.coordinator_address, args.num_processes, args.process_id
  if address is None and (count is not None or index is not None):
    raise error("--num_processes and --process_id need --coordinator_address")
  if address is not None:
    if count is None or index is None:
      raise error("--coordinator_address needs --num_processes and --process_id")
    if not 0 <= index < count:
      raise error(f"--process_id={index}: expected 0 .. {count - 1} (--num_processes={count})")
  if jax.distributed.is_initialized() or (address is None and not _cluster_environment()):
    return
  if address is None:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(address, count, index, initialization_timeout=INITIALIZATION_TIMEOUT_S,
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
  from bert_jax.runtime import peer_watch
  watch = peer_watch.start()
  if watch is not None:
    _peer_links.append(watch)
    # A goodbye on the links before jax.distributed's own shutdown (atexit runs the later one first):
    # a process ending in order must not look dead to the others still finishing.
    atexit.register(watch.close)


def writes() -> bool:
  """Whether this process writes the outputs (and prints): process 0."""
  import jax
  return jax.process_index() == 0


def written(what: str) -> None:
  """Every process waits here until process 0 has written its outputs (several processes only)."""
  import jax
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"bert_jax: {what} written")


@contextlib.contextmanager
def errors_end_this_process():
  """With several processes, an error ends this process at once (status 1, the message on stderr).

  Raised as usual, it would stop in jax.distributed's shutdown barrier, waiting
  for processes that wait in a collective for this one, until a timeout. With
  one process (or none started) errors pass through unchanged.
  """
  import jax
  try:
    yield
  except BaseException as e:
    if not jax.distributed.is_initialized() or (isinstance(e, SystemExit) and e.code in (0, None)):
      raise
    if isinstance(e, SystemExit):
      print(e.code, file=sys.stderr)
    else:
      traceback.print_exc()
    sys.stderr.flush()
    sys.stdout.flush()
    for watch in _peer_links:
      watch.abandon()  # the others stop now, not in their next collective
    os._exit(1)
