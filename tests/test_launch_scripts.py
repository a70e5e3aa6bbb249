"""The cluster launch scripts: the commands tpu_vm.sh would run (DRY_RUN), and the SLURM script's syntax."""

from __future__ import annotations

import subprocess
import sys

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


def test_aot_topology_names_match_cloud_tpu_slices():
  """Slice names -> libtpu topologies as Cloud TPU lists them (v4/v5p names count TensorCores, 2 per chip)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("aot_compile", REPO / "launch" / "aot_compile.py")
  aot = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(aot)
  expected = {"v4-8": ("v4:2x2x1", 4), "v4-32": ("v4:2x2x4", 16), "v5p-64": ("v5:2x4x4", 32),
              "v5e-16": ("v5e:4x4", 16), "v6e-8": ("v6e:2x4", 8), "v5e:8x8": ("v5e:8x8", 64)}
  for name, (topology, chips) in expected.items():
    parsed = aot.parse_topology(name)
    assert (parsed["topology"], parsed["chips"]) == (topology, chips), name


def test_aot_compile_reports_memory_per_device_on_cpu(tmp_path):
  import json
  import os
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  out = subprocess.run([sys.executable, "launch/aot_compile.py", "--topology=cpu", "--config=configs/pretrain.py:bert-tiny",
                        "--config.batch_size=16", "--config.data.max_length=64", "--config.mesh.data=1",
                        "--config.mesh.fsdp=-1", f"--json={tmp_path / 'r.json'}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  report = json.loads((tmp_path / "r.json").read_text())
  assert report["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1} and report["chips"] == 8
  # fsdp=8 shards params and both Adam moments: per device 3 * 4 bytes * params / 8, plus the few
  # dimensions that do not divide by 8 (left replicated), well under a quarter of the whole.
  per_device = report["state_gib_per_chip"] * 1024 ** 3
  assert 12 * report["params"] / 8 <= per_device < 12 * report["params"] / 4
  assert report["total_gib_per_chip"] > report["state_gib_per_chip"]
