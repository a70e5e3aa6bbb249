"""Entry point: flags, distributed initialisation, then `train.train_and_evaluate`.

    python -m bert_jax.main --config=configs/quickstart.py --workdir=/tmp/qs
    python -m bert_jax.main --config=configs/pretrain.py:bert-base --workdir=DIR --config.mesh.fsdp=-1
    # several processes without a cluster manager (one per host or per fake-device group):
    python -m bert_jax.main ... --coordinator_address=HOST:PORT --num_processes=2 --process_id=0
"""

import logging as std_logging
import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with :ARG (configs/pretrain.py:bert-base).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints/, metrics.jsonl, tensorboard/.")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
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
                               initialization_timeout=300, heartbeat_timeout_seconds=60)
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


if __name__ == "__main__":
  app.run(main)
