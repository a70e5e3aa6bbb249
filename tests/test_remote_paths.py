"""Run directories on a bucket: metrics.jsonl rewritten whole (no appends on object stores),
resume truncation, and the model export uploaded through a staging copy.

A bucket is simulated by redirecting epath's gs:// backend to a local folder
(etils.epath.testing.mock_epath), so these run without a network.
"""

import contextlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath
from etils.epath import testing as epath_testing

from bert_jax import metrics
from bert_jax.convert.pretrained import from_pretrained, save_pretrained
from bert_jax.models import build
from bert_jax.models.model import EncoderModel
from bert_jax.runtime import fileio


@contextlib.contextmanager
def fake_bucket(root, copy=None):
  """gs://NAME/... -> root/NAME/... for every epath operation (`copy` replaces the copy); records what was
  opened for appending."""
  appends = []

  def local(path):
    path = os.fspath(path)
    return os.path.join(root, path.split("://", 1)[1]) if "://" in path else path

  def one(original, path, *args, **kwargs):
    return original(local(path), *args, **kwargs)

  def open_(original, path, mode="r", *args, **kwargs):
    if "a" in mode:
      appends.append(os.fspath(path))
    return original(local(path), mode, *args, **kwargs)

  def two(original, a, b, *args, **kwargs):
    return original(local(a), local(b), *args, **kwargs)

  def glob(original, pattern):
    if "://" not in os.fspath(pattern):
      return original(pattern)
    return ["gs://" + os.path.relpath(p, root) for p in original(local(pattern))]

  with epath_testing.mock_epath(open=open_, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one, remove=one,
                                rmtree=one, stat=one, walk=one, glob=glob, copy=copy or two, rename=two, replace=two):
    yield appends


def test_resolve_keeps_uris_and_absolutises_local_paths(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert os.fspath(fileio.resolve("run")) == str(tmp_path / "run")
  assert os.fspath(fileio.resolve("gs://bucket/run")) == "gs://bucket/run"
  assert fileio.is_remote("gs://b/x") and not fileio.is_remote("/tmp/x")


def test_remote_metrics_are_rewritten_whole_and_truncated_on_resume(tmp_path):
  (tmp_path / "bucket" / "run").mkdir(parents=True)  # what train.py's run_dir.mkdir does
  with fake_bucket(tmp_path) as appends:
    writer = metrics.MetricWriter("gs://bucket/run", tensorboard=False)
    for step in (1, 2, 3):
      writer.write(step, {"train/loss": 1.0 / step})
    writer.close()
    assert [m["step"] for m in metrics.read_metrics("gs://bucket/run")] == [1, 2, 3]
    # A resume from step 2 drops step 3 and keeps appending after it.
    writer = metrics.MetricWriter("gs://bucket/run", resume_step=2, tensorboard=False)
    writer.write(3, {"train/loss": 0.5})
    writer.close()
    rows = metrics.read_metrics("gs://bucket/run")
  assert appends == []  # object stores cannot append: never opened in "a" mode
  assert [(m["step"], m["train/loss"]) for m in rows] == [(1, 1.0), (2, 0.5), (3, 0.5)]
  on_disk = (tmp_path / "bucket" / "run" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in on_disk] == [1, 2, 3]


def test_export_to_a_bucket_replaces_the_folder_via_a_staging_copy(tmp_path):
  cfg = build("bert", "tiny", vocab_size=64, num_layers=1)
  model = EncoderModel(cfg, head="mlm")
  ids = jnp.asarray(np.random.default_rng(0).integers(3, 64, (2, 9)), jnp.int32)
  params = model.init(jax.random.key(0), ids)["params"]
  stale = tmp_path / "bucket" / "run" / "model" / "stale.txt"
  stale.parent.mkdir(parents=True)
  stale.write_text("from an earlier export")
  with fake_bucket(tmp_path):
    save_pretrained("gs://bucket/run/model", model, params)
    assert not epath.Path("gs://bucket/run/model.tmp").exists()
  folder = tmp_path / "bucket" / "run" / "model"
  assert not (folder / "stale.txt").exists()
  loaded, loaded_params = from_pretrained(str(folder), head="mlm")
  np.testing.assert_allclose(loaded.apply({"params": loaded_params}, ids).logits,
                             model.apply({"params": params}, ids).logits, rtol=1e-6, atol=1e-6)


def test_upload_failure_leaves_the_previous_folder(tmp_path):
  source = tmp_path / "local"
  source.mkdir()
  (source / "a.txt").write_text("new")
  old = tmp_path / "bucket" / "model"
  old.mkdir(parents=True)
  (old / "a.txt").write_text("old")
  calls = []

  def failing_copy(original, a, b, *args, **kwargs):
    calls.append(b)
    raise OSError("network down")

  # One mock: a second mock_epath inside the first would send the other calls to the real disk.
  with fake_bucket(tmp_path, copy=failing_copy):
    with pytest.raises(OSError, match="network down"):
      fileio.upload_tree(str(source), "gs://bucket/model")
  assert calls and (old / "a.txt").read_text() == "old"
