"""The training loop end to end: metrics, resume, meshes, kill -9, SIGTERM, non-finite losses.

Runs use a tiny BERT on a slice of the bundled corpus so each compiles and
trains in seconds; several run as real processes (`python -m bert_jax.main`),
the way a user launches them.
"""

import gzip
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bert_jax import config_lib, loop, train
from bert_jax.metrics import read_metrics
from bert_jax.models import count_backbone_params
from tests.conftest import REPO

TINY = {
    "model.hidden_size": 32, "model.num_heads": 2, "model.intermediate_size": 64, "model.num_layers": 2,
    "model.vocab_size": 8192, "model.max_position_embeddings": 64,
    "model.scan_layers": True,  # the layout of the deep configs (bert-tiny alone would be unrolled)
    "data.max_length": 32, "data.max_predictions": 5, "batch_size": 16,
    "log_every": 1, "eval_every": 0, "eval_steps": 2, "checkpoint_every": 3,
    "optimizer.warmup_steps": 2, "optimizer.learning_rate": 1e-3,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """About 400 paragraphs of Austen in 20 documents, and a shared cache of prepared shards."""
  root = tmp_path_factory.mktemp("corpus")
  with gzip.open(REPO / "data" / "austen.txt.gz", "rt", encoding="utf-8") as f:
    documents = f.read().strip("\n").split("\n\n")[:20]
  path = root / "small.txt"
  path.write_text("\n\n".join("\n".join(d.split("\n")[:20]) for d in documents) + "\n", encoding="utf-8")
  return {"data.train": str(path), "data.validation_documents": 3, "data.cache_dir": str(root / "cache")}


def overrides(corpus, **extra):
  values = {**TINY, **corpus, **extra}
  return [f"--config.{k}={v}" for k, v in values.items()]


def apply(config, flags):
  for flag in flags:
    key, value = flag.removeprefix("--config.").split("=", 1)
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else value == "True"
  return config


def quick_config(corpus, **extra):
  from tests.test_configs import load_config
  return apply(load_config("pretrain", "bert-tiny"), overrides(corpus, **extra))


def losses(workdir):
  return {m["step"]: m["train/loss"] for m in read_metrics(workdir) if "train/loss" in m}


def launch(workdir, flags, devices=8, **popen):
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, "-m", "bert_jax.main", "--config=configs/pretrain.py:bert-tiny", f"--workdir={workdir}",
         *flags]
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **popen)


def test_run_logs_evaluates_checkpoints_and_resumes(corpus, tmp_path):
  config = quick_config(corpus, total_steps=6, eval_every=6)
  train.train_and_evaluate(config, str(tmp_path))
  records = read_metrics(tmp_path)
  assert records[0]["step"] == 0
  assert records[0]["model/params"] == count_backbone_params(config_lib.model_config(config))
  assert sorted(losses(tmp_path)) == [1, 2, 3, 4, 5, 6]
  evals = [r for r in records if "eval/loss" in r]
  assert evals and {"eval/mlm_accuracy", "eval/pair_accuracy"} <= set(evals[-1])
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]
  assert os.listdir(tmp_path / "tensorboard")
  import bert_jax
  model, _ = bert_jax.from_pretrained(str(tmp_path / "model"), head="mlm")  # the export fine-tuning starts from
  assert model.config.num_layers == 2
  config.total_steps = 9
  train.train_and_evaluate(config, str(tmp_path))
  steps = [r["step"] for r in read_metrics(tmp_path) if "train/loss" in r]
  assert steps == list(range(1, 10)), "resumed at step 7 without repeating or skipping steps"


def test_total_steps_zero_writes_only_the_step_zero_line(corpus, tmp_path):
  config = quick_config(corpus, total_steps=0)
  train.train_and_evaluate(config, str(tmp_path))
  assert [r["step"] for r in read_metrics(tmp_path)] == [0]


MESHES = {"data8": dict(data=8, fsdp=1, tensor=1), "2x2x2": dict(data=2, fsdp=2, tensor=2),
          "fsdp8": dict(data=1, fsdp=8, tensor=1)}


def test_meshes_and_single_device_give_the_same_losses(corpus, tmp_path):
  results = {}
  for name, mesh in MESHES.items():
    config = quick_config(corpus, total_steps=4, checkpoint_every=100,
                          **{f"mesh.{k}": v for k, v in mesh.items()})
    train.train_and_evaluate(config, str(tmp_path / name))
    results[name] = losses(tmp_path / name)
  single = launch(tmp_path / "single", overrides(corpus, total_steps=4, checkpoint_every=100), devices=1)
  out, _ = single.communicate(timeout=600)
  assert single.returncode == 0, out
  results["single"] = losses(tmp_path / "single")
  reference = np.array([results["single"][s] for s in range(1, 5)])
  for name, values in results.items():
    np.testing.assert_allclose([values[s] for s in range(1, 5)], reference, rtol=1e-3, err_msg=name)


def _wait_for(predicate, timeout, process):
  start = time.time()
  while time.time() - start < timeout:
    if predicate():
      return
    if process.poll() is not None:
      raise AssertionError(f"process exited early:\n{process.stdout.read()}")
    time.sleep(0.2)
  raise AssertionError("timed out")


def test_kill_9_and_relaunch_reproduces_the_uninterrupted_run(corpus, tmp_path):
  flags = overrides(corpus, total_steps=8, checkpoint_every=2)
  full = launch(tmp_path / "full", flags)
  interrupted = launch(tmp_path / "cut", flags)
  _wait_for(lambda: (tmp_path / "cut" / "checkpoints" / "4").exists(), 600, interrupted)
  interrupted.send_signal(signal.SIGKILL)
  interrupted.wait()
  out, _ = full.communicate(timeout=600)
  assert full.returncode == 0, out
  relaunched = launch(tmp_path / "cut", flags)
  out, _ = relaunched.communicate(timeout=600)
  assert relaunched.returncode == 0, out
  assert "resumed" in out or "from step" in out
  full_losses, cut_losses = losses(tmp_path / "full"), losses(tmp_path / "cut")
  assert sorted(cut_losses) == list(range(1, 9))
  np.testing.assert_allclose([cut_losses[s] for s in range(1, 9)], [full_losses[s] for s in range(1, 9)], rtol=1e-6)


def test_sigterm_saves_the_current_step_and_exits(corpus, tmp_path):
  process = launch(tmp_path, overrides(corpus, total_steps=100_000, checkpoint_every=100_000, log_every=1))
  _wait_for(lambda: len(losses(tmp_path)) >= 3 if (tmp_path / "metrics.jsonl").exists() else False, 600, process)
  process.send_signal(signal.SIGTERM)
  out, _ = process.communicate(timeout=300)
  assert process.returncode == 0, out
  saved = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert saved and saved[-1] == max(losses(tmp_path)) and saved[-1] >= 3
  assert "preemption" in out


def test_non_finite_loss_stops_with_the_step_and_keeps_checkpoints(corpus, tmp_path):
  config = quick_config(corpus, total_steps=6, checkpoint_every=2, **{"optimizer.learning_rate": 1e30,
                                                                      "optimizer.warmup_steps": 0,
                                                                      "optimizer.clip_norm": 0.0})
  with pytest.raises(loop.NonFiniteLoss, match=r"at step \d+"):
    train.train_and_evaluate(config, str(tmp_path))
  config.nonfinite = "skip"
  config.total_steps = 6
  train.train_and_evaluate(config, str(tmp_path / "skip"))
  last = [r for r in read_metrics(tmp_path / "skip") if "train/skipped_steps" in r][-1]
  assert last["train/skipped_steps"] >= 1


def test_rtd_pretraining_runs_end_to_end(corpus, tmp_path):
  """ELECTRA/DeBERTa-v3 replaced-token detection through the same loop (MLM batches feed the generator)."""
  config = quick_config(corpus, total_steps=2, eval_every=2, checkpoint_every=2)
  config.objective = "rtd"
  train.train_and_evaluate(config, str(tmp_path))
  records = read_metrics(tmp_path)
  assert sorted(losses(tmp_path)) == [1, 2] and all(np.isfinite(list(losses(tmp_path).values())))
  last = [r for r in records if "eval/loss" in r][-1]
  assert {"eval/mlm_accuracy", "eval/rtd_accuracy"} <= set(last), sorted(last)
  # The discriminator is exported for fine-tuning, its embeddings resolved (GDES: generator's + delta).
  import bert_jax
  model, params = bert_jax.from_pretrained(str(tmp_path / "model"), head=None)
  assert model.config.hidden_size == 32 and "rtd_head" not in params


def test_step_settler_leaves_the_last_step_done_before_the_next_on_cpu():
  import jax
  import jax.numpy as jnp
  slow = jax.jit(lambda x: jnp.linalg.matrix_power(x, 64))  # ~tens of ms: still running when dispatched
  x = jnp.eye(512) * 0.999
  assert not loop.StepSettler(enabled=False).enabled
  assert loop.StepSettler().enabled  # the test backend is the CPU: the loop settles its steps
  on = loop.StepSettler(enabled=True)
  state = slow(x)
  start = time.perf_counter()
  on.wait(state)
  assert state.is_ready()
  assert time.perf_counter() - start >= loop.SETTLE_S  # the first step is always given its pause


def test_profile_steps_traces_the_steps_after_the_first_and_changes_no_loss(corpus, tmp_path):
  from bert_jax.runtime import profiling
  plain, traced = tmp_path / "plain", tmp_path / "traced"
  train.train_and_evaluate(quick_config(corpus, total_steps=4, checkpoint_every=100), str(plain))
  train.train_and_evaluate(quick_config(corpus, total_steps=4, checkpoint_every=100, profile_steps=2), str(traced))
  assert losses(traced) == losses(plain)
  assert not (plain / "profile").exists()
  totals = profiling.op_seconds(profiling.newest_trace(str(traced)))
  # Steps 2 and 3 were traced: two executions of the jitted train step, nothing of step 1's compile.
  executions = [name for name in totals if name.startswith("PjitFunction(") and "train_step" in name]
  assert executions, sorted(totals)[:40]
  assert not any("compile" in name.lower() and "backend" in name.lower() for name in totals)
  table = profiling.summary(profiling.newest_trace(str(traced)), top=5)
  assert table.count("\n| ") == 6  # header + 5 rows


def test_profile_steps_longer_than_the_run_still_closes_the_trace(corpus, tmp_path):
  from bert_jax.runtime import profiling
  train.train_and_evaluate(quick_config(corpus, total_steps=3, checkpoint_every=100, profile_steps=10), str(tmp_path))
  assert profiling.newest_trace(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="profile_steps"):
    profiling.newest_trace(str(tmp_path / "checkpoints"))
