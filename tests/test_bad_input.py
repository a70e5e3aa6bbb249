"""Bad input against a run that already has checkpoints: each case fails with a message naming the key,
file or line and what was expected, and the run's checkpoints and metrics stay byte-for-byte intact."""

from __future__ import annotations

import copy
import os

import pytest

from bert_jax import train
from bert_jax.checkpointing import CheckpointMismatch
from bert_jax.data.tokenizers import bundled_tokenizer

from tests.conftest import tree_digest
from tests.test_train import corpus, launch, overrides, quick_config  # noqa: F401 - corpus fixture


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):  # noqa: F811
  workdir = tmp_path_factory.mktemp("run")
  config = quick_config(corpus, total_steps=3, checkpoint_every=3)
  train.train_and_evaluate(config, str(workdir))
  return config, workdir


def _bad_text_file(tmp_path, data: bytes) -> str:
  path = tmp_path / "bad.txt"
  path.write_bytes(data)
  return str(path)


CASES = {
    "unknown model key": (lambda c, t: c.model.__setitem__("hiden_size", 3), KeyError, "hiden_size"),
    "another model's checkpoint": (lambda c, t: c.model.__setitem__("intermediate_size", 128), CheckpointMismatch,
                                   r"mlp/wi/kernel: saved shape \(2, 32, 64\), the model needs \(2, 32, 128\)"),
    "sequence longer than the position table": (lambda c, t: c.data.__setitem__("max_length", 128), ValueError,
                                                r"data.max_length=128 exceeds the position table"),
    "missing training file": (lambda c, t: c.data.__setitem__("train", str(t / "nope.txt")), FileNotFoundError,
                              "nope.txt"),
    "mis-encoded corpus line": (lambda c, t: c.data.__setitem__("train", _bad_text_file(t, b"fine\n\xff\xfe bad\n")),
                                ValueError, r"bad.txt:2: not valid UTF-8"),
    "tokenizer that does not fit the vocabulary": (
        lambda c, t: c.data.__setitem__("tokenizer", bundled_tokenizer("wordpiece")) or c.model.__setitem__(
            "vocab_size", 4000), ValueError, "vocab"),
    "batch that the mesh cannot split": (lambda c, t: c.__setitem__("batch_size", 12), ValueError,
                                         r"batch_size=12 must divide"),
    "unknown objective": (lambda c, t: c.__setitem__("objective", "mlmm"), ValueError, "mlmm"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_named_and_loses_nothing(run, case, tmp_path):
  config, workdir = run
  before = tree_digest(workdir / "checkpoints")
  metrics = (workdir / "metrics.jsonl").read_bytes()
  bad = copy.deepcopy(config)
  bad.total_steps = 6
  change, error, message = CASES[case]
  with bad.unlocked():
    change(bad, tmp_path)
  with pytest.raises(error, match=message):
    train.train_and_evaluate(bad, str(workdir))
  assert tree_digest(workdir / "checkpoints") == before
  assert (workdir / "metrics.jsonl").read_bytes() == metrics


def test_unknown_config_key_on_the_command_line(corpus, tmp_path):  # noqa: F811
  process = launch(tmp_path, overrides(corpus, total_steps=0) + ["--config.totl_steps=5"], devices=1)
  out, _ = process.communicate(timeout=300)
  assert process.returncode != 0 and "totl_steps" in out
  assert not os.path.exists(tmp_path / "checkpoints")

