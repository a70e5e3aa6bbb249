"""Bad input against a fine-tuning run that already has checkpoints, a best model and a summary, and against
the re-ranker's output: each case fails with a message naming the file, key or line and what was expected,
and everything already written stays byte-for-byte as it was."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from bert_jax import finetune
from bert_jax.search import rerank

from tests.conftest import REPO, tree_digest
from tests.test_finetune import movie, tiny_config  # noqa: F401 - movie fixture

HF = REPO / "tests" / "testdata" / "hf"
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, 97)]
LONG_WORDS = WORDS + [f"x{i}" for i in range(114)]  # the 211 rows of the other reference models


@pytest.fixture(scope="module")
def run(movie, tmp_path_factory):  # noqa: F811
  workdir = tmp_path_factory.mktemp("finetuned")
  config = tiny_config(**{"data.train": movie["train"], "data.validation": movie["dev"], "total_steps": 4,
                          "eval_every": 2})
  finetune.finetune_and_evaluate(config, str(workdir))
  assert (workdir / "best" / "bert_jax.json").is_file() and (workdir / "summary.json").is_file()
  return config, workdir


def hf_folder(tmp_path, name: str, edit=None, vocab=WORDS) -> str:
  """A copy of a random reference model folder with a WordPiece vocab; edit(config dict) changes its config."""
  folder = tmp_path / name
  shutil.copytree(HF / name, folder)
  (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
  if edit:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
  return str(folder)


def _layer_types(config):
  config["layer_types"] = ["full_attention", "sliding_attention", "full_attention", "full_attention"]


def _yarn(config):
  config["rope_parameters"]["full_attention"]["rope_type"] = "yarn"


def _junk_folder(tmp_path) -> str:
  (tmp_path / "junk").mkdir()
  (tmp_path / "junk" / "notes.txt").write_text("not a model")
  return str(tmp_path / "junk")


def _tokenizer_without_specials(tmp_path) -> str:
  (tmp_path / "tok").mkdir()
  (tmp_path / "tok" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]"] + [f"w{i}" for i in range(200)]) + "\n")
  return str(tmp_path / "tok")


def _extra_column(movie, tmp_path) -> str:  # noqa: F811
  lines = open(movie["train"], encoding="utf-8").read().splitlines()
  lines[7] += "\tstray"
  (tmp_path / "extra.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
  return str(tmp_path / "extra.tsv")


# case -> (config changes given (movie files, tmp_path), message pattern)
CASES = {
    "unknown model type": (lambda m, t: {"init_from": hf_folder(t, "bert_gelu", lambda c: c.update(model_type="gpt9"))},
                           r"bert_gelu/config.json: model_type='gpt9' is not supported; expected one of"),
    "head whose label count does not fit the data": (
        lambda m, t: {"init_from": hf_folder(t, "bert_cross_encoder")},
        r"init_from=.*bert_cross_encoder: its classification head has 1 outputs, the classify data needs 2"),
    "rotary setting the model does not implement": (
        lambda m, t: {"init_from": hf_folder(t, "modernbert", _yarn, LONG_WORDS)},
        r"modernbert/config.json: rope_parameters.full_attention.rope_type='yarn' is not supported"),
    "sliding-window pattern the model does not implement": (
        lambda m, t: {"init_from": hf_folder(t, "modernbert", _layer_types, LONG_WORDS)},
        r"modernbert/config.json: layer_types=.* is not supported: bert_jax needs a global layer every n layers"),
    "local rotary base without rotary positions": (lambda m, t: {"model.local_rotary_base": 10.0},
                                                    r"model.local_rotary_base=10.0 .* set model.rotary_base"),
    "context longer than the model allows": (
        lambda m, t: {"init_from": hf_folder(t, "bert_gelu", vocab=LONG_WORDS), "data.max_length": 128},
        r"data.max_length=128 exceeds the position table \(model.max_position_embeddings=\d+"),
    "init_from that is no model folder": (lambda m, t: {"init_from": _junk_folder(t)},
                                          r"junk: neither bert_jax.json \(bert_jax\) nor config.json"),
    "tokenizer folder without its special tokens": (
        lambda m, t: {"data.tokenizer": _tokenizer_without_specials(t)},
        r"tok/vocab.txt: the special tokens sep '\[SEP\]', cls '\[CLS\]' are not in the vocabulary"),
    "a row with an extra column": (lambda m, t: {"data.train": _extra_column(m, t)},
                                   r"extra.tsv:8: expected 2 tab-separated fields \(sentence, label\), found 3"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_fine_tuning_input_is_named_and_loses_nothing(run, movie, case, tmp_path):  # noqa: F811
  config, workdir = run
  before = tree_digest(workdir)
  bad = copy.deepcopy(config)
  bad.total_steps = 8  # the run would continue from its checkpoint
  change, message = CASES[case]
  with bad.unlocked():
    for key, value in change(movie, tmp_path).items():
      section, _, leaf = key.rpartition(".")
      (bad[section] if section else bad)[leaf] = value
  with pytest.raises(ValueError if case != "init_from that is no model folder" else FileNotFoundError,
                     match=message):
    finetune.finetune_and_evaluate(bad, str(workdir))
  assert tree_digest(workdir) == before


@pytest.mark.parametrize("case", ["masked-LM folder", "multiple-choice architecture", "longer than the model allows"])
def test_rerank_refuses_what_is_no_cross_encoder_and_keeps_its_output(case, tmp_path):
  folders = {"masked-LM folder": ("bert_gelu", None, LONG_WORDS),
             "multiple-choice architecture": ("bert_cross_encoder",
                                              lambda c: c.update(architectures=["BertForMultipleChoice"]), WORDS),
             "longer than the model allows": ("bert_cross_encoder", None, WORDS)}
  name, edit, vocab = folders[case]
  folder = hf_folder(tmp_path, name, edit, vocab)
  messages = {"masked-LM folder": r"bert_gelu is not a cross-encoder: it has no sequence-classification head",
              "multiple-choice architecture": r"architectures=\['BertForMultipleChoice'\] is not supported",
              "longer than the model allows": r"--max_length=4096 is longer than the model allows \(\d+ tokens"}
  candidates, output = tmp_path / "candidates.jsonl", tmp_path / "ranked.jsonl"
  candidates.write_text(json.dumps({"query": "w5 w6", "passages": ["w7 w8", "w9"]}) + "\n")
  output.write_text("an earlier output\n")
  flags = ["--max_length=4096"] if case == "longer than the model allows" else []
  with pytest.raises(SystemExit, match=messages[case]):
    rerank.main([f"--model={folder}", f"--input={candidates}", f"--output={output}", *flags])
  assert output.read_text() == "an earlier output\n"
