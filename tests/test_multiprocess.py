"""Two processes x 4 fake CPU devices on localhost (launch/local_multiprocess.sh) vs one process of 8 devices."""

import os
import subprocess

import numpy as np

from bert_jax import train
from tests.conftest import REPO
from tests.test_train import corpus, losses, overrides, quick_config  # noqa: F401 (fixture)


def test_two_processes_match_one_process(corpus, tmp_path):  # noqa: F811
  settings = dict(total_steps=3, checkpoint_every=3, **{"mesh.data": 1, "mesh.fsdp": -1})
  train.train_and_evaluate(quick_config(corpus, **settings), str(tmp_path / "one"))
  # Each process sets its own device count; no shared compilation cache between the two processes.
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
  run = subprocess.run(["bash", "launch/local_multiprocess.sh", "-n", "2", "-d", "4", "--",
                        "--config=configs/pretrain.py:bert-tiny", f"--workdir={tmp_path / 'two'}",
                        *overrides(corpus, **settings)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  logs = run.stdout + run.stderr + "\n".join(
      (tmp_path / "two" / "logs" / f"process_{i}.log").read_text() for i in range(2))
  assert run.returncode == 0, logs
  one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
  assert sorted(two) == [1, 2, 3], logs
  np.testing.assert_allclose([two[s] for s in (1, 2, 3)], [one[s] for s in (1, 2, 3)], rtol=1e-3)
  # Both processes wrote their part of the checkpoint (each its data-iterator position).
  data = sorted(os.listdir(tmp_path / "two" / "checkpoints" / "3" / "data"))
  assert [d for d in data if d.startswith("process_")] == ["process_0-of-2.json", "process_1-of-2.json"]
