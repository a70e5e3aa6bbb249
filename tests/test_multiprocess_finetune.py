"""Fine-tuning on 2 processes x 4 fake CPU devices (launch/local_multiprocess.sh) against 1 process x 8.

Every task: the same training losses and validation metrics at every logged step, a best
checkpoint written by process 0 from parameters gathered across processes, the test split
evaluated with it, and the same summary.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from bert_jax import finetune
from tests import run_goldens
from tests.conftest import REPO
from tests.test_finetune import tiny_config
from tests.test_packing import DATA, _numbers

pytestmark = pytest.mark.xdist_group("processes")  # pytest.ini: several JAX processes, one test at a time

# case -> (task, data, overrides)
CASES = {
    "classify-seeds-vmapped": ("classify", "sentiment", {"seeds": 2}),  # with a test split
    "classify-token-budget": ("classify", "sentiment", {"data.tokens_per_batch": -1}),  # the recipe's default
    "regress": ("regress", "regress", {}),
    "tag": ("tag", "tag", {}),
    "qa": ("qa", "qa", {"data.max_length": 64, "data.doc_stride": 16, "data.max_query_length": 16}),
    "contrastive": ("contrastive", "contrastive", {}),
    "rerank": ("rerank", "rerank", {}),
}
# tiny_config's settings, as flags for the command line.
TINY = {"model.num_layers": 1, "model.hidden_size": 32, "model.num_heads": 2, "model.intermediate_size": 64,
        "batch_size": 16, "eval_batch_size": 16, "data.max_length": 64, "optimizer.learning_rate": 1e-3,
        "log_every": 1, "data.tokens_per_batch": 0}


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_fine_tune_as_one(case, tmp_path):
  task, data, extra = CASES[case]
  files = (run_goldens.sentiment if data == "sentiment" else DATA[data])(tmp_path)
  values = {"data.train": files["train"], "data.validation": files["dev"], "total_steps": 4, "eval_every": 2,
            "batch_size": 8, "eval_batch_size": 8, "model.dropout_rate": 0.0,
            "model.attention_dropout_rate": 0.0, **extra}
  if "test" in files:
    values["data.test"] = files["test"]
  finetune.finetune_and_evaluate(tiny_config(task, **values), str(tmp_path / "one"))

  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
  flags = [f"--config.{k}={v}" for k, v in {**TINY, **values}.items()]
  run = subprocess.run(["bash", "launch/local_multiprocess.sh", "-n", "2", "-d", "4", "--",
                        f"--config=configs/finetune.py:{task}", f"--workdir={tmp_path / 'two'}", *flags],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  logs = run.stdout + run.stderr + "\n".join(
      (tmp_path / "two" / "logs" / f"process_{i}.log").read_text()[-4000:] for i in range(2))
  assert run.returncode == 0, logs

  one, two = _numbers(tmp_path / "one"), _numbers(tmp_path / "two")
  assert sorted(one) == sorted(two) and any(k.startswith("eval/") for _, k in one), logs
  for (step, key), want in one.items():
    # Cross-process sums add in another order: losses agree to float32 rounding, and correlations of
    # a 4-step model's near-equal scores loosely (as in tests/test_packing.py).
    tolerance = 2e-2 if key.endswith(("pearson", "spearman")) else 1e-4
    if task == "contrastive" and key.endswith("accuracy"):
      tolerance = 1 / 8 + 1e-6
    np.testing.assert_allclose(two[(step, key)], want, rtol=tolerance, atol=tolerance,
                               err_msg=f"{case} step {step} {key}")
  summaries = [json.loads((tmp_path / run_ / "summary.json").read_text()) for run_ in ("one", "two")]
  assert summaries[0]["best_steps"] == summaries[1]["best_steps"]
  seeds = int(values.get("seeds", 1))
  for seed in range(seeds):
    folder = tmp_path / "two" / "best" / (f"seed_{seed}" if seeds > 1 else "")
    assert (folder / "bert_jax.json").is_file(), sorted(os.listdir(tmp_path / "two" / "best"))
