"""Entry point: flags, distributed initialisation, then `train.train_and_evaluate`.

    python -m bert_jax.main --config=configs/quickstart.py --workdir=/tmp/qs
    python -m bert_jax.main --config=configs/pretrain.py:bert-base --workdir=DIR --config.mesh.fsdp=-1
    # several processes without a cluster manager (one per host or per fake-device group):
    python -m bert_jax.main ... --coordinator_address=HOST:PORT --num_processes=2 --process_id=0
"""

import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
EXIT_LOST_PEER = 3  # exit status of a process whose peer died (see stop_after_lost_peer)
config_flags.DEFINE_config_file("config", None, "Config file, optionally with :ARG (configs/pretrain.py:bert-base).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints/, metrics.jsonl, tensorboard/.")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
flags.DEFINE_integer("heartbeat_timeout", 60, "Seconds without a heartbeat after which a process counts as dead "
                     "and the others stop with an error (with --coordinator_address).")
flags.DEFINE_bool("compilation_cache", True, "Keep compiled programs in the persistent cache (bert_jax.caches); "
                  "a repeat run of the same shapes then skips compilation.")
flags.DEFINE_bool("library_info_logs", False, "Show Orbax's per-save INFO lines (warnings and errors always show).")
flags.mark_flags_as_required(["config", "workdir"])


class _LibraryInfoFilter(std_logging.Filter):
  """Drops Orbax's INFO records (dozens per checkpoint); its warnings and errors pass."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def initialize_distributed() -> None:
  """jax.distributed from the flags, or from the environment on TPU VMs and SLURM; single process otherwise."""
  import jax
  if FLAGS.coordinator_address:
    if FLAGS.num_processes is None or FLAGS.process_id is None:
      raise app.UsageError("--coordinator_address needs --num_processes and --process_id")
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                               initialization_timeout=300, heartbeat_timeout_seconds=FLAGS.heartbeat_timeout)
  elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0:
    jax.distributed.initialize()  # reads SLURM / TPU metadata
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.library_info_logs:
    logging.get_absl_handler().addFilter(_LibraryInfoFilter())
  initialize_distributed()
  from bert_jax import caches, train
  if FLAGS.compilation_cache:
    caches.enable_compilation_cache()
  try:
    if "task" in FLAGS.config:
      from bert_jax import finetune
      finetune.finetune_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except train.NonFiniteLoss as e:
    raise SystemExit(str(e)) from None
  except Exception as e:  # noqa: BLE001 - only a lost peer is handled here; anything else re-raises
    import jax
    if jax.process_count() > 1 and _lost_peer(e):
      stop_after_lost_peer(e)
    raise


# Messages of a collective or the coordination service when another process is gone.
_PEER_LOST_MARKERS = ("Connection reset by peer", "Connection closed by peer", "Gloo", "heartbeat timeout",
                      "coordination service", "Socket closed", "Broken pipe", "NCCL", "DEADLINE_EXCEEDED")


def _lost_peer(error: BaseException) -> bool:
  runtime = type(error).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
  return runtime and any(marker in str(error) for marker in _PEER_LOST_MARKERS)


def stop_after_lost_peer(error: BaseException) -> None:
  """Reports the lost process and exits at once.

  A normal exit would run jax.distributed's shutdown barrier, which waits for the dead
  process until the heartbeat timeout and then aborts with a C++ stack trace. Checkpoints
  are untouched: completed steps are final, a step still being written stays a temporary
  folder that the resumed run ignores.
  """
  import jax
  first_line = str(error).strip().splitlines()[0][:500]
  message = (f"bert_jax: process {jax.process_index()} of {jax.process_count()} stopped: another process of this "
             f"run died or was killed (a cross-process collective failed: {first_line}). Completed checkpoints are "
             "intact; relaunch the same command on all processes to resume from the latest one.")
  print(message, file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(EXIT_LOST_PEER)


if __name__ == "__main__":
  app.run(main)
