"""Writes that fail and runs killed while writing: a checkpoint save that fails in the background (disk full,
injected where Orbax writes the arrays), a model export that fails, the states a kill -9 during the export
leaves, and a kill -9 during data preparation. Each time the earlier checkpoints stay byte-for-byte intact
and the next run of the same command completes what was cut short."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from bert_jax import checkpointing, train
from bert_jax.runtime import fileio

from tests.conftest import REPO, tree_digest
from tests.test_finetune import movie, tiny_config  # noqa: F401 - movie fixture
from tests.test_train import corpus, losses, quick_config  # noqa: F401 - corpus fixture


def _disk_full_at(monkeypatch, step: int, seen: dict):
  """Makes Orbax's array writes of checkpoint `step` fail with ENOSPC, in its background thread as a
  full disk does; records the digest of every finished step at that moment."""
  from orbax.checkpoint._src.serialization import serialization
  original = serialization.async_serialize_from_host

  async def failing(rslices, tensorstore_spec, **kwargs):
    if f"/{step}.orbax-checkpoint-tmp" in json.dumps(tensorstore_spec):
      if "before" not in seen:
        root = seen["root"]
        seen["before"] = {d: tree_digest(root / d) for d in os.listdir(root) if d.isdigit()}
      raise OSError(errno.ENOSPC, "No space left on device")
    return await original(rslices, tensorstore_spec, **kwargs)

  monkeypatch.setattr(serialization, "async_serialize_from_host", failing)


def test_a_checkpoint_that_fails_to_save_stops_the_run_and_a_relaunch_resumes(corpus, tmp_path, monkeypatch):  # noqa: F811
  settings = dict(total_steps=9, checkpoint_every=3, keep_checkpoints=10)
  train.train_and_evaluate(quick_config(corpus, **settings), str(tmp_path / "reference"))
  workdir = tmp_path / "run"
  seen = {"root": workdir / "checkpoints"}
  with monkeypatch.context() as patch:
    _disk_full_at(patch, 6, seen)
    with pytest.raises(checkpointing.SaveFailed) as failure:
      train.train_and_evaluate(quick_config(corpus, **settings), str(workdir))
  message = str(failure.value)
  assert "step 6" in message and str(workdir / "checkpoints" / "6") in message, message
  assert "No space left on device" in message and "steps [3]" in message and "resumes from step 3" in message
  assert seen["before"].keys() == {"3"}
  assert {d: tree_digest(workdir / "checkpoints" / d) for d in ["3"]} == seen["before"]  # intact
  assert not (workdir / "model").exists()
  # Space is back: the same command resumes from step 3 and ends where the uninterrupted run ends.
  train.train_and_evaluate(quick_config(corpus, **settings), str(workdir))
  reference, resumed = losses(tmp_path / "reference"), losses(workdir)
  np.testing.assert_allclose([resumed[s] for s in range(4, 10)], [reference[s] for s in range(4, 10)], rtol=1e-6)
  assert sorted(d for d in os.listdir(workdir / "checkpoints") if d.isdigit()) == ["3", "6", "9"]
  assert train.exported_step(str(workdir / "model")) == 9


def test_a_failed_export_names_the_folder_and_the_relaunch_writes_it(corpus, tmp_path, monkeypatch):  # noqa: F811
  config = quick_config(corpus, total_steps=3, checkpoint_every=3)

  def no_space(path, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", path)

  with monkeypatch.context() as patch:
    patch.setattr(train, "save_pretrained", no_space)
    with pytest.raises(checkpointing.SaveFailed, match=r"step 3 to .*model failed .*No space left"):
      train.train_and_evaluate(config, str(tmp_path))
  intact = tree_digest(tmp_path / "checkpoints" / "3")
  train.train_and_evaluate(config, str(tmp_path))
  assert train.exported_step(str(tmp_path / "model")) == 3
  assert tree_digest(tmp_path / "checkpoints" / "3") == intact


def test_what_a_kill_during_the_export_leaves_is_completed_by_the_next_run(corpus, tmp_path):  # noqa: F811
  config = quick_config(corpus, total_steps=3, checkpoint_every=3)
  train.train_and_evaluate(config, str(tmp_path))
  model = tmp_path / "model"
  good = tree_digest(model)
  # Killed between replace_folder's two renames: the complete old copy set aside, a new one in model.tmp.
  os.rename(model, tmp_path / ".model.old-deadbeef")
  shutil.copytree(tmp_path / ".model.old-deadbeef", tmp_path / "model.tmp")
  os.remove(tmp_path / "model.tmp" / "bert_jax.json")
  fileio.recover_folder(str(model))  # what every writer of the folder does first
  assert tree_digest(model) == good and not (tmp_path / ".model.old-deadbeef").exists()
  # Killed while writing model.tmp, with a model of an earlier step in place: the relaunch rewrites it.
  meta = json.loads((model / "bert_jax.json").read_text())
  meta["pretraining"]["step"] = 1
  (model / "bert_jax.json").write_text(json.dumps(meta))
  train.train_and_evaluate(config, str(tmp_path))
  assert train.exported_step(str(model)) == 3 and not (tmp_path / "model.tmp").exists()
  # Killed before the first export was complete: no model at all.
  shutil.rmtree(model)
  train.train_and_evaluate(config, str(tmp_path))
  assert train.exported_step(str(model)) == 3


def test_a_kill_during_data_preparation_leaves_a_cache_the_next_run_completes(tmp_path):
  text = tmp_path / "kjv.txt.gz"
  shutil.copy(REPO / "data" / "kjv.txt.gz", text)
  from bert_jax.assets import tokenizer_dir
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}

  def command(out):
    return [sys.executable, "-m", "bert_jax.data.pretraining.prepare", f"--train={text}",
            f"--tokenizer={tokenizer_dir('wordpiece')}", f"--out={out}", "--objective=mlm_nsp", "--max_length=64"]

  clean = subprocess.run(command(tmp_path / "clean"), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert clean.returncode == 0, clean.stderr[-3000:]
  killed = tmp_path / "killed"
  run = subprocess.Popen(command(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  # Killed once the training split has written something and before it is done.
  while not any(name.endswith(".tmp") or name.endswith(".array_record")
                for _, _, names in os.walk(killed) for name in names):
    assert run.poll() is None and time.time() < deadline, "preparation ended before it could be killed"
    time.sleep(0.02)
  run.kill()
  run.wait()
  again = subprocess.run(command(killed), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]

  def contents(root):
    out = {}
    for folder in sorted(os.listdir(root)):
      for name in sorted(os.listdir(root / folder)):
        if name.endswith(".array_record"):
          from array_record.python.array_record_module import ArrayRecordReader
          reader = ArrayRecordReader(str(root / folder / name))
          out[(folder, name)] = reader.read_all()
          reader.close()
        elif name.startswith("."):
          out[(folder, name)] = "left-over temporary file"
    return out

  assert contents(killed) == contents(tmp_path / "clean")


def test_a_best_model_that_fails_to_save_names_seed_step_and_folder(movie, tmp_path, monkeypatch):  # noqa: F811
  from bert_jax import finetune

  def full_disk(path, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", path)

  monkeypatch.setattr(finetune, "save_pretrained", full_disk)
  config = tiny_config(**{"data.train": movie["train"], "data.validation": movie["dev"], "total_steps": 2,
                          "eval_every": 2})
  with pytest.raises(checkpointing.SaveFailed, match=r"writing the best model of seed 0 \(step 2\) to .*best failed "
                     r"\(OSError: .*No space left on device.*\)\. The checkpoints are complete; .*resumes"):
    finetune.finetune_and_evaluate(config, str(tmp_path / "run"))
