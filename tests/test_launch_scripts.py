"""The cluster launch scripts: the commands tpu_vm.sh would run (DRY_RUN), and the SLURM script's syntax."""

from __future__ import annotations

import subprocess

from tests.conftest import REPO


def test_tpu_vm_creates_copies_installs_and_starts_on_every_worker():
  out = subprocess.run(["bash", "launch/tpu_vm.sh", "-n", "pod", "-z", "us-east5-a", "-a", "v5p-64", "-s", "--",
                        "--config=configs/pretrain.py:bert-base", "--workdir=gs://bucket/run 1"],
                       cwd=REPO, env={"DRY_RUN": "1", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert lines[0].startswith("gcloud compute tpus tpu-vm create pod --zone us-east5-a --accelerator-type v5p-64")
  assert "--spot" in lines[0]
  assert any(" scp " in line and "--worker=all" in line for line in lines)
  ssh = [line for line in lines if " ssh " in line]
  assert len(ssh) == 2 and all("--worker=all" in line for line in ssh)
  assert "pip\\ install" in ssh[0] and "jax\\[tpu\\]==" in ssh[0]
  assert "bert_jax.main" in ssh[1] and "gs://bucket/run\\\\\\ 1" in ssh[1]  # flags survive two levels of quoting


def test_tpu_vm_usage_and_slurm_script_syntax():
  usage = subprocess.run(["bash", "launch/tpu_vm.sh", "-n", "pod"], cwd=REPO, capture_output=True, text=True)
  assert usage.returncode == 2 and "usage" in usage.stderr
  syntax = subprocess.run(["bash", "-n", "launch/slurm_gpu.sbatch"], cwd=REPO, capture_output=True, text=True)
  assert syntax.returncode == 0, syntax.stderr
  no_flags = subprocess.run(["bash", "launch/slurm_gpu.sbatch"], cwd=REPO, capture_output=True, text=True)
  assert no_flags.returncode == 2 and "usage" in no_flags.stderr
