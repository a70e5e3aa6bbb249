"""launch/sweep.py expands a grid into bert_jax.main runs; bert_jax.report tabulates and plots them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import report
from bert_jax.metrics import read_metrics

from tests.conftest import REPO
from tests.test_train import TINY, corpus  # noqa: F401 - the corpus fixture

SWEEP = [sys.executable, str(REPO / "launch" / "sweep.py")]


def test_print_lists_the_grid_product():
  out = subprocess.run(SWEEP + ["--config=configs/pretrain.py:albert-tiny", "--workdir=/tmp/never",
                                "--grid=model.share_layers=none,all,attention", "--grid=data.mask_rate=0.1,0.15",
                                "--set=total_steps=5", "--print"], cwd=REPO, capture_output=True, text=True, check=True)
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 6
  assert all("--config.total_steps=5" in line for line in lines)
  assert "--workdir=/tmp/never/share_layers=attention,mask_rate=0.15" in lines[-1]
  assert "--config.model.share_layers=attention --config.data.mask_rate=0.15" in lines[-1]
  bad = subprocess.run(SWEEP + ["--config=x", "--workdir=/tmp/never", "--grid=nonsense"], cwd=REPO,
                       capture_output=True, text=True)
  assert bad.returncode != 0 and "expected KEY=VALUE" in bad.stderr


def test_sweep_runs_then_report_tabulates_and_plots(corpus, tmp_path):  # noqa: F811
  fixed = {**TINY, **corpus, "total_steps": 3, "eval_every": 3, "checkpoint_every": 3}
  cmd = SWEEP + ["--config=configs/pretrain.py:bert-tiny", f"--workdir={tmp_path}", "--grid=data.mask_rate=0.1,0.3"]
  cmd += [f"--set={k}={v}" for k, v in fixed.items()]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
  assert done.returncode == 0, done.stdout + done.stderr
  plan = json.load(open(tmp_path / "sweep.json"))
  assert [r["name"] for r in plan["runs"]] == ["mask_rate=0.1", "mask_rate=0.3"]
  again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
  assert again.stdout.count("done already") == 2  # finished runs are not repeated

  report.main([str(tmp_path)])
  table = (tmp_path / "report.md").read_text().splitlines()
  assert table[0].startswith("| run | data.mask_rate | params | step | final train/loss |")
  assert len(table) == 4 and os.path.getsize(tmp_path / "curves.png") > 1000
  for line, rate in zip(table[2:], ("0.1", "0.3")):
    cells = [c.strip() for c in line.strip("|").split("|")]
    records = read_metrics(str(tmp_path / f"mask_rate={rate}"))
    assert cells[1] == rate and cells[3] == "3"
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert float(cells[4]) == pytest.approx(np.mean(losses[-1:]), abs=1e-4)  # 3 logged steps: the last 10% is 1
    assert float(cells[5]) == pytest.approx(min(r["eval/loss"] for r in records if "eval/loss" in r), abs=1e-4)
