"""Restoring anywhere and damaged state: a checkpoint resumes on another mesh and on one device, and a
corrupt latest checkpoint is reported and skipped while the earlier ones stay byte-for-byte intact."""

from __future__ import annotations

import os

import numpy as np

from bert_jax import train

from tests.conftest import tree_digest
from tests.test_train import corpus, launch, losses, overrides, quick_config  # noqa: F401 - corpus fixture


def test_checkpoint_from_fsdp8_resumes_on_2x2x2_and_on_one_device(corpus, tmp_path):  # noqa: F811
  fsdp = {"mesh.data": 1, "mesh.fsdp": 8, "mesh.tensor": 1}
  full = quick_config(corpus, total_steps=6, checkpoint_every=3, **fsdp)
  train.train_and_evaluate(full, str(tmp_path / "full"))
  # Steps 1-3 on fsdp=8, then steps 4-6 on a 2x2x2 mesh from the same checkpoint.
  first = quick_config(corpus, total_steps=3, checkpoint_every=3, **fsdp)
  train.train_and_evaluate(first, str(tmp_path / "moved"))
  before = tree_digest(tmp_path / "moved" / "checkpoints" / "3")
  second = quick_config(corpus, total_steps=6, checkpoint_every=3,
                        **{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  train.train_and_evaluate(second, str(tmp_path / "moved"))
  reference, moved = losses(tmp_path / "full"), losses(tmp_path / "moved")
  assert sorted(moved) == [1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose([moved[s] for s in range(4, 7)], [reference[s] for s in range(4, 7)], rtol=1e-3)
  # And on a single CPU device (another process: the device count is fixed per process).
  single_dir = tmp_path / "single"
  os.makedirs(single_dir / "checkpoints")
  os.symlink(tmp_path / "moved" / "checkpoints" / "3", single_dir / "checkpoints" / "3")
  run = launch(single_dir, overrides(corpus, total_steps=6, checkpoint_every=100), devices=1)
  out, _ = run.communicate(timeout=600)
  assert run.returncode == 0, out
  single = losses(single_dir)
  np.testing.assert_allclose([single[s] for s in range(4, 7)], [reference[s] for s in range(4, 7)], rtol=1e-3)
  assert tree_digest(tmp_path / "moved" / "checkpoints" / "3") == before


def test_corrupt_latest_checkpoint_falls_back_and_keeps_earlier_ones_intact(corpus, tmp_path):  # noqa: F811
  config = quick_config(corpus, total_steps=6, checkpoint_every=3, keep_checkpoints=3)
  train.train_and_evaluate(config, str(tmp_path))
  reference = losses(tmp_path)
  checkpoints = tmp_path / "checkpoints"
  good = tree_digest(checkpoints / "3")
  # Garble every data file of the newest step's state (a disk that lost the end of the write).
  damaged = 0
  for root, _, files in os.walk(checkpoints / "6" / "state"):
    for name in files:
      path = os.path.join(root, name)
      if os.path.getsize(path) > 64:
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)
        damaged += 1
  assert damaged
  config.total_steps = 6
  train.train_and_evaluate(config, str(tmp_path))
  entries = sorted(os.listdir(checkpoints))
  assert any(e.startswith("unreadable-6-") for e in entries), entries  # set aside, not deleted
  assert "3" in entries and "6" in entries  # step 6 written again from step 3
  assert tree_digest(checkpoints / "3") == good
  again = losses(tmp_path)
  np.testing.assert_allclose([again[s] for s in range(4, 7)], [reference[s] for s in range(4, 7)], rtol=1e-6)
