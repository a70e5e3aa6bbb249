"""Entry point: flags, distributed initialisation, then the trainer the task registry names for the config.

    python -m bert_jax.main --config=configs/quickstart.py --workdir=/tmp/qs
    python -m bert_jax.main --config=configs/pretrain.py:bert-base --workdir=DIR --config.mesh.fsdp=-1
    # several processes without a cluster manager (one per host or per fake-device group):
    python -m bert_jax.main ... --coordinator_address=HOST:PORT --num_processes=2 --process_id=0
"""

import logging as std_logging
import os
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from bert_jax.runtime import host_allocator, peer_watch

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with :ARG (configs/pretrain.py:bert-base).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints/, metrics.jsonl, tensorboard/.")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
flags.DEFINE_integer("heartbeat_timeout", 60, "Seconds without a heartbeat after which a process counts as dead "
                     "and the others stop with an error (with --coordinator_address).")
flags.DEFINE_bool("peer_links", True, "Link the processes of a multi-process run by TCP so that all stop within a "
                  "second of one dying (bert_jax.runtime.peer_watch); without them only the heartbeat notices.")
flags.DEFINE_bool("compilation_cache", True, "Keep compiled programs in the persistent cache (bert_jax.runtime.caches); "
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
  watch = peer_watch.start() if FLAGS.peer_links else None
  from bert_jax import checkpointing, finetune, loop, train
  from bert_jax.runtime import caches
  from bert_jax.tasks import registry
  if FLAGS.compilation_cache:
    caches.enable_compilation_cache()
  try:
    spec = registry.lookup(FLAGS.config)
    run = finetune.finetune_and_evaluate if spec.kind == registry.FINETUNE else train.train_and_evaluate
    run(FLAGS.config, FLAGS.workdir)
    if watch:
      watch.close()
  except loop.NonFiniteLoss as e:
    if watch:  # every process sees the same loss and stops the same way: an orderly end, not a death
      watch.close()
    raise SystemExit(str(e)) from None
  except Exception as e:  # noqa: BLE001 - re-raised on one process; on several, ends this process at once
    import jax
    if jax.process_count() > 1:
      if _lost_peer(e):
        stop_after_lost_peer(e)
      # This process failed on its own. Tell the others now (they would wait in their next collective
      # for it), then leave without jax.distributed's shutdown barrier, which would wait for them.
      if watch:
        watch.abandon()
      if isinstance(e, checkpointing.SaveFailed):
        print(f"bert_jax: process {jax.process_index()}: {e}", file=sys.stderr)
      else:
        traceback.print_exc()
      sys.stderr.flush()
      os._exit(1)
    if isinstance(e, checkpointing.SaveFailed):
      raise SystemExit(f"bert_jax: {e}") from None
    raise


# Messages of a collective or the coordination service when another process is gone.
_PEER_LOST_MARKERS = ("Connection reset by peer", "Connection closed by peer", "Gloo", "heartbeat timeout",
                      "coordination service", "Socket closed", "Broken pipe", "NCCL", "DEADLINE_EXCEEDED")


def _lost_peer(error: BaseException) -> bool:
  runtime = type(error).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
  return runtime and any(marker in str(error) for marker in _PEER_LOST_MARKERS)


def stop_after_lost_peer(error: BaseException) -> None:
  """Reports a collective that failed because another process is gone, and exits (`peer_watch.exit_lost_peer`)."""
  import jax
  first_line = str(error).strip().splitlines()[0][:500]
  peer_watch.exit_lost_peer(jax.process_index(), jax.process_count(),
                            f"a cross-process collective failed: {first_line}")


if __name__ == "__main__":
  host_allocator.tune_for_cpu()  # before JAX starts its threads
  app.run(main)
