"""Two processes x 4 fake CPU devices on localhost (launch/local_multiprocess.sh) vs one process of 8 devices."""

import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bert_jax import train
from bert_jax.metrics import read_metrics
from tests.conftest import REPO, tree_digest
from tests.test_peer_watch import assert_stopped_for_lost_peer
from tests.test_train import corpus, losses, overrides, quick_config  # noqa: F401 (fixture)

pytestmark = pytest.mark.xdist_group("processes")  # pytest.ini: several JAX processes, one test at a time


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
  # The multi-process run exports WORKDIR/model itself: the single-process run's params exactly.
  import bert_jax
  _, exported = bert_jax.from_pretrained(str(tmp_path / "two" / "model"), head="mlm")
  _, reference = bert_jax.from_pretrained(str(tmp_path / "one" / "model"), head="mlm")
  np.testing.assert_allclose(np.concatenate([np.ravel(x) for x in jax.tree.leaves(exported)]),
                             np.concatenate([np.ravel(x) for x in jax.tree.leaves(reference)]), atol=1e-5)
  # The same command on one process evaluates the final checkpoint like the single-process run.
  result = train.train_and_evaluate(quick_config(corpus, **settings), str(tmp_path / "two"))
  one_eval = [m for m in read_metrics(tmp_path / "one") if "eval/loss" in m][-1]
  np.testing.assert_allclose(result["eval/loss"], one_eval["eval/loss"], rtol=1e-3)


@pytest.mark.parametrize("victim", [1, 0])  # a worker, then the coordinator itself
def test_killed_process_stops_the_other_with_a_clear_error(corpus, tmp_path, victim):  # noqa: F811
  """kill -9 of one process mid-run: the other exits (status 3) with a message naming the cause, well
  within the 5-minute bound, and the checkpoint completed before the kill stays byte-for-byte intact."""
  workdir = tmp_path / "run"
  flags = overrides(corpus, total_steps=100_000, checkpoint_every=4, keep_checkpoints=10,
                    **{"mesh.data": 1, "mesh.fsdp": -1})
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
  port = 20000 + (os.getpid() * 7 + victim) % 20000
  logs = [tmp_path / f"process_{i}.log" for i in range(2)]
  outputs = [open(log, "w") for log in logs]
  procs = [subprocess.Popen([sys.executable, "-m", "bert_jax.main", "--config=configs/pretrain.py:bert-tiny",
                             f"--workdir={workdir}", *flags, f"--coordinator_address=localhost:{port}",
                             "--num_processes=2", f"--process_id={i}", "--heartbeat_timeout=20"],
                            cwd=REPO, env=env, stdout=outputs[i], stderr=subprocess.STDOUT)
           for i in range(2)]
  survivor = procs[1 - victim]
  try:
    deadline = time.time() + 300
    while not (workdir / "checkpoints" / "4").is_dir() or "step       6/" not in logs[0].read_text():
      assert time.time() < deadline and all(p.poll() is None for p in procs), logs[0].read_text()[-3000:]
      time.sleep(0.5)
    intact = tree_digest(workdir / "checkpoints" / "4")
    procs[victim].kill()
    killed_at = time.time()
    code = survivor.wait(timeout=300)
    waited = time.time() - killed_at
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
    for f in outputs:
      f.close()
  text = logs[1 - victim].read_text()
  assert waited < 120, waited
  assert_stopped_for_lost_peer(code, text, 1 - victim, victim)
  assert tree_digest(workdir / "checkpoints" / "4") == intact
