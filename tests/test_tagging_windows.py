"""Tagging beyond max_length: long sentences in overlapping windows, each word read from its max-context window.

References: hand-worked window starts and max-context owners; the tokenizers library's own overflow
(the windows span QA uses); the same sentences in one window each, with a model whose prediction at
a token depends on that token alone (so windowed and unwindowed predictions must agree exactly); a
brute-force min(left, right) context per word; and a short fine-tuning run whose words past the
first window are tagged as well as the rest.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers

from bert_jax import config_lib, evaluation, finetune
from bert_jax.convert.pretrained import from_pretrained
from bert_jax.data import batching
from bert_jax.data.finetune import LabelMap
from bert_jax.data.tokenizers import bundled_tokenizer, load_tokenizer
from bert_jax.tasks.finetune import tagging

from tests.conftest import REPO
from tests.test_finetune import tiny_config

# The tag is a function of the word; several words split into many sub-tokens.
WORDS = {"B-PER": ["Alice", "Bob", "Quetzalcoatl", "Mbeki"],
         "B-LOC": ["Paris", "Zyxwvutopia", "Lagos", "Oslo", "Xochimilco"],
         "O": ["the", "went", "and", "to", "of", "with", "quickly", "unbelievably"]}
TAG_OF = {word: tag for tag, words in WORDS.items() for word in words}
MAX_LENGTH, STRIDE = 32, 8


def write_conll(path, sentences) -> str:
  path.write_text("\n\n".join("\n".join(f"{w} {TAG_OF[w]}" for w in s) for s in sentences) + "\n", encoding="utf-8")
  return str(path)


def random_sentences(seed: int, count: int, words: int) -> list[list[str]]:
  rng = np.random.default_rng(seed)
  vocabulary = sorted(TAG_OF)
  return [[vocabulary[i] for i in rng.integers(len(vocabulary), size=words)] for _ in range(count)]


@pytest.fixture(scope="module")
def tokenizer():
  return load_tokenizer(bundled_tokenizer("wordpiece"))


def load(tokenizer, path, max_length=MAX_LENGTH, stride=STRIDE, labels=None):
  config = tiny_config("tag", **{"data.max_length": max_length, "data.doc_stride": stride})
  task = tagging.TagTask(config, tokenizer)
  return task, task.load(path, "validation" if labels else "train", labels)


# Windows by hand --------------------------------------------------------------------------------

def test_window_starts_and_max_context_owners_by_hand():
  # 10 tokens, windows of 4 overlapping by 2: [0, 4) [2, 6) [4, 8) [6, 10). Token 2 has min context 1 in
  # window 0 (2 left, 1 right) and 0 in window 1; token 3 has 0 in window 0 and 1 in window 1; and so on.
  assert tagging.window_starts(10, 4, 2) == [0, 2, 4, 6]
  starts, owner = tagging.max_context_windows(10, 4, 2)
  assert starts == [0, 2, 4, 6] and owner.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
  # A short last window [6, 9): token 7 has (1 left, 1 right) there against (3, 0) in [4, 8).
  assert tagging.max_context_windows(9, 4, 2)[1].tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3]
  # Windows [0, 5) [2, 7) [4, 8): token 3 has min context 1 in the first two (equal lengths: the earlier
  # wins), token 5 has 1 in the last two (the longer wins, BERT's + 0.01 * window length).
  assert tagging.max_context_windows(8, 5, 3)[1].tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
  assert tagging.window_starts(4, 4, 2) == [0] and tagging.window_starts(5, 4, 0) == [0, 4]
  with pytest.raises(ValueError, match="overlap"):
    tagging.window_starts(10, 4, 4)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_windows_are_the_tokenizers_overflow_that_span_qa_uses(kind):
  tok = load_tokenizer(bundled_tokenizer(kind))
  text = " ".join(random_sentences(1, 1, 60)[0])
  backend = tokenizers.Tokenizer.from_str(tok.backend.to_str())
  backend.enable_truncation(MAX_LENGTH, stride=STRIDE)
  first = backend.encode(text)
  expected = [e.ids for e in [first, *first.overflowing]]
  encoding = tok.encode(text)
  ids = np.asarray(encoding.ids)
  windows = tagging.sentence_windows(encoding.sequence_ids, MAX_LENGTH, STRIDE)
  assert len(windows) >= 4
  assert [ids[tokens].tolist() for tokens, _ in windows] == expected
  # Each text token is read in exactly one window; the special tokens in none.
  read = np.zeros(len(ids), int)
  for tokens, mask in windows:
    np.add.at(read, tokens[mask], 1)
  text_tokens = np.asarray([s is not None for s in encoding.sequence_ids])
  assert (read[text_tokens] == 1).all() and (read[~text_tokens] == 0).all()


# The featurized split ---------------------------------------------------------------------------

def test_every_word_is_read_once_from_its_max_context_window(tokenizer, tmp_path):
  long_sentences = random_sentences(2, 6, 70)
  short = ["Alice", "went", "to", "Zyxwvutopia"]
  path = write_conll(tmp_path / "long.conll", [short, *long_sentences])
  task, data = load(tokenizer, path)
  extra = data.extra
  owners, word_index, max_context = extra["owners"], extra["word_index"], extra["max_context"]
  assert data.arrays["input_ids"].shape[1] == MAX_LENGTH and len(data) > 4 * len(long_sentences)
  # A sentence that fits is one row, the encoding the truncating tokenizer gives it.
  assert (owners == 0).sum() == 1
  encoding = tokenizer.encode(" ".join(short), max_length=MAX_LENGTH)
  assert data.arrays["input_ids"][0, :len(encoding.ids)].tolist() == encoding.ids
  assert data.lengths[0] == len(encoding.ids)
  # Every word of every sentence is read exactly once, long sentences past max_length included.
  read = sorted(zip(owners[np.nonzero(max_context)[0]].tolist(), word_index[max_context].tolist()))
  assert read == [(i, w) for i, s in enumerate(extra["tags"]) for w in range(len(s))]
  # So a model that predicts one non-"O" class everywhere leaves no word "O".
  everywhere = np.full(data.arrays["labels"].shape, data.labels.encode("B-LOC"), np.int32)
  assert all(tag == "B-LOC" for words in task.word_predictions(data, everywhere) for tag in words)
  # Every window labels all the words whose first sub-token it holds, with their gold tags.
  labelled = word_index >= 0
  np.testing.assert_array_equal(data.arrays["label_weights"], labelled.astype(np.float32))
  for r in range(len(data)):
    gold = [data.labels.encode(extra["tags"][owners[r]][w]) for w in word_index[r][labelled[r]]]
    assert data.arrays["labels"][r][labelled[r]].tolist() == gold
  assert task.metrics(data, {"predictions": data.arrays["labels"]})["f1"] == 1.0
  # Brute force: the window read for a word is one where min(left, right) text context is largest.
  context: dict[tuple[int, int], list[tuple[int, bool]]] = {}
  for r, t in zip(*np.nonzero(labelled)):
    left, right = t - 1, data.lengths[r] - 2 - t  # one [CLS] before the text, one [SEP] after it
    context.setdefault((owners[r], word_index[r, t]), []).append((min(left, right), bool(max_context[r, t])))
  overlapping = 0
  for windows in context.values():
    assert sum(chosen for _, chosen in windows) == 1
    assert max(c for c, chosen in windows if chosen) == max(c for c, _ in windows)
    overlapping += len(windows) > 1
  assert overlapping > 20


def test_stride_must_leave_windows_room_to_advance(tokenizer, tmp_path):
  path = write_conll(tmp_path / "s.conll", [["Alice"]])
  with pytest.raises(ValueError, match=r"config.data.doc_stride=30: .* expected 0 <= doc_stride < 30"):
    load(tokenizer, path, stride=30)


# Windowed == unwindowed with a token-local model ------------------------------------------------

@pytest.mark.parametrize("packing", [False, True])
def test_windowed_predictions_equal_the_whole_sentence_in_one_window(tokenizer, tmp_path, packing):
  """Zero attention output and position embeddings: a token's logits then depend on that token alone,
  so a window's cut cannot change them and the words' tags must come out as in one whole-sentence row."""
  path = write_conll(tmp_path / "dev.conll", random_sentences(3, 12, 70) + random_sentences(4, 4, 5))
  task, windowed = load(tokenizer, path)
  whole_task, whole = load(tokenizer, path, max_length=256, labels=windowed.labels)
  assert len(whole) == 16 and len(windowed) > 3 * len(whole)
  cfg = task.model_config(config_lib.model_config(tiny_config("tag")), windowed.labels)
  objective = task.objective(cfg, windowed.labels)
  params = nn.meta.unbox(objective.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                        jnp.ones((1, 8), jnp.int32)))
  params["embeddings"]["position_embeddings"]["embedding"] *= 0
  for layer in params["encoder"].values():
    layer["attention"]["output"]["kernel"] *= 0
  params["classifier"]["dense"]["kernel"] *= 30  # spread the classes: predictions differ from token to token
  predict = jax.jit(objective.predict)
  words = {}
  for name, (t, data) in {"windowed": (task, windowed), "whole": (whole_task, whole)}.items():
    config = t.config
    config.data.packing = packing
    packer = finetune.eval_packer(config, t, cfg, None, data)
    outputs = batching.predict_split(predict, params, data, 16, t.token_outputs, packer=packer)
    words[name] = t.word_predictions(data, outputs["predictions"])
  assert words["windowed"] == words["whole"]
  assert len({tag for sentence in words["whole"] for tag in sentence}) == 3


# Training on long sentences ---------------------------------------------------------------------

def test_training_on_long_sentences_tags_words_past_the_first_window(tokenizer, tmp_path):
  files = {split: write_conll(tmp_path / f"{split}.conll", random_sentences(seed, count, 45))
           for split, seed, count in (("train", 5, 48), ("dev", 6, 16))}
  config = tiny_config("tag", **{"data.train": files["train"], "data.validation": files["dev"], "num_epochs": 8.0,
                                 "eval_every": 0, "data.max_length": MAX_LENGTH, "data.doc_stride": STRIDE,
                                 "optimizer.learning_rate": 5e-3})
  finetune.finetune_and_evaluate(config, str(tmp_path / "run"))
  model, params = from_pretrained(str(tmp_path / "run" / "best"), head="token_classification")
  task = tagging.TagTask(config, tokenizer)
  dev = task.load(files["dev"], "validation", LabelMap(list(model.config.label_names)))
  objective = task.objective(model.config, dev.labels)
  outputs = batching.predict_split(jax.jit(objective.predict), params, dev, 16, task.token_outputs)
  predicted = task.word_predictions(dev, outputs["predictions"])
  # The words no first window holds: before windows they were all predicted "O".
  first_rows = np.flatnonzero(np.r_[True, np.diff(dev.extra["owners"]) != 0])
  tails = [len(np.flatnonzero(dev.extra["word_index"][r] >= 0)) for r in first_rows]
  gold_tails = [tags[k:] for tags, k in zip(dev.extra["tags"], tails)]
  predicted_tails = [words[k:] for words, k in zip(predicted, tails)]
  assert min(len(t) for t in gold_tails) > 20
  assert evaluation.entity_f1(gold_tails, predicted_tails)["f1"] > 0.9


@pytest.mark.parametrize("name", ["deberta_v3_spm", "xlm_roberta_spm", "albert_spm", "roberta_bpe", "modernbert_json",
                                  "bert_cased", "mpnet_wordpiece"])
def test_each_word_is_read_from_its_own_first_token(name):
  """SentencePiece and byte-level BPE tokens may begin at the space before their word ("▁lives" at (3, 9)):
  the first sub-token of every word is the first token that covers one of the word's characters."""
  from bert_jax.data.tokenizers import load_tokenizer
  tokenizer = load_tokenizer(REPO / "tests" / "testdata" / "tokenizers" / name)
  words = "the old man lives here unbelievably quietly".split()
  text, starts = tagging.word_starts(words)
  encoding = tokenizer.backend.encode(text)
  first = tagging.first_subtokens(encoding.offsets, encoding.special_tokens_mask, starts)
  expected = []
  for w, (begin, stop) in enumerate(zip(starts, starts[1:] + [len(text)])):
    expected.append(next(t for t, (b, e) in enumerate(encoding.offsets)
                         if not encoding.special_tokens_mask[t] and e > begin and b < stop))
  assert [int(np.flatnonzero(first == w)[0]) for w in range(len(words))] == expected, encoding.tokens
