"""A wheel built from the checkout, installed in a fresh virtual environment and run from another folder.

The bundled corpus and tokenizers must come from the installed package (bert_jax.assets), never
from the checkout: every `configs/pretrain.py` variant resolves its data and tokenizer inside the
installed package, each family pretrains on the bundled corpus, and the quickstart (its config
file given by path) runs unchanged. The fresh environment gets the wheel alone; its dependencies
are borrowed from the test environment through a path file (no network install), without the
checkout's editable install.
"""

import json
import os
import pathlib
import shutil
import site
import subprocess
import sys
import venv

import pytest

from tests.conftest import REPO


def _run(cmd, cwd, env, timeout=600):
  result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, f"{' '.join(map(str, cmd))}:\n{result.stdout[-3000:]}\n{result.stderr[-4000:]}"
  return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """(python of the fresh environment, its environment variables, a working folder outside the checkout)."""
  root = tmp_path_factory.mktemp("wheel")
  # Built from a copy: setuptools writes build/ and *.egg-info beside the sources, and test workers
  # building at the same time must not share them.
  source = root / "source"
  shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
      ".git", "tests", "build", "dist", "*.egg-info", "__pycache__", "benchmarks", "examples"))
  _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
        "-w", str(root / "dist")], cwd=root, env=os.environ)
  wheel, = (root / "dist").glob("bert_jax-*.whl")
  venv.EnvBuilder(with_pip=False).create(root / "env")
  python = root / "env" / "bin" / "python"
  purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, os.environ).strip()
  # The test environment's packages as plain paths: a .pth line adds a folder without running the
  # .pth files inside it, so the checkout's editable install stays out.
  borrowed = [p for p in site.getsitepackages() if os.path.isdir(p)]
  pathlib.Path(purelib, "test_dependencies.pth").write_text("\n".join(borrowed) + "\n")
  _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", purelib, str(wheel)], root, os.environ)
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  env.update(XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
             BERT_JAX_CACHE=str(root / "cache"))
  work = root / "elsewhere"
  work.mkdir()
  return python, env, work


def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
  python, env, work = installed
  out = _run([python, "-c", "import bert_jax, bert_jax.assets as a; print(bert_jax.__file__); print(a.ROOT)"],
             work, env)
  package, assets = out.split()
  assert not package.startswith(str(REPO)) and "site-packages" in package
  assert assets.startswith(os.path.dirname(package))


def test_every_pretraining_variant_finds_its_data_and_tokenizer_in_the_package(installed):
  python, env, work = installed
  script = f"""
import glob, importlib.util, json, os
import bert_jax
from bert_jax import config_lib
from bert_jax.data.tokenizers import check_fits, load_tokenizer
spec = importlib.util.spec_from_file_location("pretrain", {str(REPO / "configs" / "pretrain.py")!r})
configs = importlib.util.module_from_spec(spec); spec.loader.exec_module(configs)
root = os.path.dirname(bert_jax.__file__)
seen = {{}}
for family in configs.FAMILIES:
  for size in ("tiny", "mini", "small", "base", "large", "xlarge", "xxlarge"):
    try:
      c = configs.get_config(f"{{family}}-{{size}}")
    except ValueError:
      continue
    files = glob.glob(c.data.train)
    assert files and all(f.startswith(root) for f in files), (family, size, files)
    assert c.data.tokenizer.startswith(root), c.data.tokenizer
    check_fits(load_tokenizer(c.data.tokenizer), config_lib.model_config(c).vocab_size)
    seen[f"{{family}}-{{size}}"] = sorted(os.path.basename(f) for f in files)
print(json.dumps(seen))
"""
  seen = json.loads(_run([python, "-c", script], work, env).strip().splitlines()[-1])
  assert len(seen) == 27 and all(files == ["austen.txt.gz", "kjv.txt.gz"] for files in seen.values())


@pytest.mark.parametrize("config", ["configs/pretrain.py:bert-tiny", "configs/pretrain.py:roberta-tiny",
                                    "configs/pretrain.py:albert-tiny", "configs/pretrain.py:deberta-tiny",
                                    "configs/quickstart.py"])
def test_pretraining_runs_from_the_installed_wheel(installed, config):
  python, env, work = installed
  name = config.split(":")[-1].removesuffix(".py").replace("configs/", "")
  workdir = work / name
  _run([python, "-m", "bert_jax.main", f"--config={REPO / config}", f"--workdir={workdir}",
        "--config.total_steps=2", "--config.batch_size=8", "--config.eval_steps=1", "--config.log_every=1"],
       work, env)
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert lines[0]["step"] == 0 and lines[0]["model/params"] > 0
  assert [m["step"] for m in lines if "train/loss" in m] == [1, 2]
  assert any("eval/loss" in m for m in lines) and (workdir / "model" / "bert_jax.json").is_file()
