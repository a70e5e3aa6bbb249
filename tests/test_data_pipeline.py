"""Pretraining data: examples (NSP, SOP, FULL-SENTENCES, packing), prepare, loader, resume, TFDS, errors.

Corpora here are tiny and built so every word names its document: each
document uses its own whole-word vocabulary entries, so a token id tells which
document it came from. Masking itself is tested in tests/test_masking.py.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import random

import numpy as np
import pytest

from bert_jax import assets
from bert_jax.data.pretraining import examples as ex
from bert_jax.data.pretraining import pipeline as pd
from bert_jax.data.pretraining import prepare as prepare_lib
from bert_jax.data.pretraining import records
from bert_jax.data.tokenizers import bundled_tokenizer, load_tokenizer

WORDS_PER_DOC = 6
NUM_DOCS = 30


@pytest.fixture(scope="module")
def tokenizer():
  return load_tokenizer(bundled_tokenizer("wordpiece"))


@pytest.fixture(scope="module")
def words(tokenizer) -> list[str]:
  """Vocabulary entries that are whole words and encode to exactly their own id."""
  vocab = sorted(tokenizer.backend.get_vocab().items(), key=lambda item: item[1])
  found = [w for w, i in vocab if i > 100 and w.isalpha() and len(w) >= 3 and w.isascii()]
  encode = lambda word: tokenizer.backend.encode(word, add_special_tokens=False).ids
  found = [w for w in found[:400] if encode(w) == [tokenizer.token_to_id(w)]]
  assert len(found) >= WORDS_PER_DOC * NUM_DOCS
  return found


def write_corpus(folder, words, *, num_docs=NUM_DOCS, seed=0, files=2) -> str:
  """Text files of num_docs documents, document d using words[6d:6d+6]; returns their glob."""
  rng = random.Random(seed)
  documents = []
  for d in range(num_docs):
    own = words[d * WORDS_PER_DOC:(d + 1) * WORDS_PER_DOC]
    documents.append([" ".join(rng.choice(own) for _ in range(rng.randint(3, 9))) for _ in range(rng.randint(2, 7))])
  per_file = -(-num_docs // files)
  os.makedirs(folder, exist_ok=True)
  for f in range(files):
    chunk = documents[f * per_file:(f + 1) * per_file]
    with open(os.path.join(folder, f"part{f}.txt"), "w", encoding="utf-8") as out:
      out.write("\n\n".join("\n".join(doc) for doc in chunk) + "\n")
  return os.path.join(folder, "*.txt")


@pytest.fixture()
def corpus(tmp_path, words, tokenizer):
  pattern = write_corpus(tmp_path / "text", words)
  owner = {tokenizer.token_to_id(w): i // WORDS_PER_DOC for i, w in enumerate(words[:NUM_DOCS * WORDS_PER_DOC])}
  return pattern, owner


def config(pattern, tmp_path, **overrides):
  settings = dict(train=pattern, max_length=32, max_predictions=5, validation_documents=4,
                  cache_dir=str(tmp_path / "cache"))
  return pd.data_config(**{**settings, **overrides})


def prepared_examples(prepared: prepare_lib.Prepared) -> list[ex.Example]:
  from array_record.python.array_record_module import ArrayRecordReader
  out = []
  for path in prepared.paths:
    reader = ArrayRecordReader(path)
    out.extend(records.decode(r, prepared.format) for r in reader.read_all())
    reader.close()
  return out


def unmasked(batch) -> np.ndarray:
  ids = batch["input_ids"].copy()
  rows, slots = np.nonzero(batch["masked_weights"])
  ids[rows, batch["masked_positions"][rows, slots]] = batch["masked_ids"][rows, slots]
  return ids


def take(loader, count: int) -> list[dict]:
  iterator = iter(loader)
  return [next(iterator) for _ in range(count)]


def assert_batches_equal(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for name in a:
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# -- examples ---------------------------------------------------------------------


def id_documents(num_docs=12, seed=0):
  """Documents of distinct ints: token 10000*(doc+1) + 100*sentence + position."""
  rng = random.Random(seed)
  return [[[10000 * (d + 1) + 100 * s + p for p in range(rng.randint(2, 7))] for s in range(rng.randint(1, 9))]
          for d in range(num_docs)]


def split_pair(example: ex.Example) -> tuple[list[int], list[int]]:
  """BERT pair -> (A, B) without specials, by type id."""
  a = [t for t, k in zip(example.ids, example.type_ids) if k == 0 and t >= 10000]
  b = [t for t, k in zip(example.ids, example.type_ids) if k == 1 and t >= 10000]
  return a, b


def follows(first: int, second: int, documents) -> bool:
  """second is the token right after first in its document."""
  stream = [t for sentence in documents[first // 10000 - 1] for t in sentence]
  return stream.index(second) == stream.index(first) + 1


def test_nsp_pairs_are_continuations_or_other_documents(tokenizer):
  documents = id_documents(num_docs=30)
  template = ex.Template.from_tokenizer(tokenizer)
  examples = list(ex.nsp_examples(documents, template, 32, random.Random(0), short_seq_prob=0.2))
  labels = [e.pair_label for e in examples]
  assert 0.3 < np.mean(labels) < 0.8 and len(examples) > 40
  for e in examples:
    assert len(e.ids) <= 32 and e.ids[0] == tokenizer.cls_id and e.ids[-1] == tokenizer.sep_id
    a, b = split_pair(e)
    assert a and b and len({t // 10000 for t in a}) == 1 and len({t // 10000 for t in b}) == 1
    # Each segment is a contiguous span of its document.
    for segment in (a, b):
      assert all(follows(x, y, documents) for x, y in zip(segment, segment[1:]))
    if e.pair_label == 1:
      assert a[0] // 10000 != b[0] // 10000
    else:
      assert a[0] // 10000 == b[0] // 10000
      untruncated = len(a) + len(b) < 32 - 3
      assert follows(a[-1], b[0], documents) or not untruncated
      assert b[0] > a[-1]


def test_sop_pairs_swap_order_within_a_document(tokenizer):
  documents = id_documents(seed=1)
  template = ex.Template.from_tokenizer(tokenizer)
  examples = list(ex.sop_examples(documents, template, 24, random.Random(0)))
  assert 0.35 < np.mean([e.pair_label for e in examples]) < 0.65
  for e in examples:
    a, b = split_pair(e)
    assert {t // 10000 for t in a + b} == {a[0] // 10000}
    if e.pair_label == 0:
      assert a[-1] < b[0]
    else:
      assert b[-1] < a[0]
      if len(a) + len(b) < 24 - 3:
        assert follows(b[-1], a[0], documents)


def test_full_sentences_fill_rows_and_separate_documents(tokenizer):
  documents = id_documents(seed=2)
  documents[3][1] = [40000 + 100 * 50 + p for p in range(70)]  # longer than a row: cut into pieces
  template = ex.Template.from_tokenizer(tokenizer)
  examples = list(ex.sentence_examples(documents, template, 24))
  stream = []
  for e in examples:
    assert len(e.ids) <= 24 and e.ids[0] == tokenizer.cls_id and e.ids[-1] == tokenizer.sep_id
    body = e.ids[1:-1]
    assert body[0] != tokenizer.sep_id and body[-1] != tokenizer.sep_id
    for left, middle, right in zip(body, body[1:], body[2:]):
      if middle == tokenizer.sep_id:  # only between documents
        assert left // 10000 != right // 10000
    for left, right in zip(body, body[1:]):
      if tokenizer.sep_id not in (left, right):
        assert left // 10000 == right // 10000
    stream.extend(t for t in body if t != tokenizer.sep_id)
  assert stream == [t for d in documents for s in d for t in s]  # nothing lost, order kept
  # Short sentences are never split across rows.
  for sentence in (s for d in documents for s in d if len(s) < 22):
    assert any(all(t in e.ids for t in sentence) for e in examples)
  assert np.mean([len(e.ids) for e in examples[:-1]]) > 20

  bpe = ex.Template.from_tokenizer(load_tokenizer(bundled_tokenizer("bpe")))
  assert bpe.frame([10], [20]) == ([0, 10, 2, 2, 20, 2], [0] * 6) and bpe.separator_id == 2


def test_document_rows_fill_each_row_and_keep_every_document_in_order(tokenizer):
  template = ex.Template.from_tokenizer(tokenizer)
  documents = id_documents(num_docs=40, seed=3)
  rows = list(ex.document_rows(documents, template, 40, min_piece=4))
  specials = template.num_specials(pair=False)
  pieces = []
  for row in rows[:-1]:
    # Closed only when a piece of 4 tokens and its specials no longer fits.
    assert 40 - specials - 4 < len(row.ids) <= 40
  for row in rows:
    assert row.segment_ids[0] == 1 and all(b - a in (0, 1) for a, b in zip(row.segment_ids, row.segment_ids[1:]))
    for s in range(1, row.segment_ids[-1] + 1):
      segment = [t for t, k in zip(row.ids, row.segment_ids) if k == s]
      assert segment[0] == tokenizer.cls_id and segment[-1] == tokenizer.sep_id
      pieces.append(segment[1:-1])
  # The pieces, in order, are the documents' tokens, in order: every document, split only at row ends.
  assert [t for p in pieces for t in p] == [t for d in documents for s in d for t in s]
  assert np.mean([len(r.ids) for r in rows[:-1]]) > 37


# -- loader -------------------------------------------------------------------------


def test_batches_have_the_promised_shapes(corpus, tmp_path, tokenizer):
  pattern, owner = corpus
  loader = pd.make_loader(config(pattern, tmp_path), "mlm_nsp", tokenizer, global_batch_size=8)
  batch = next(iter(loader))
  expected = {"input_ids": ((8, 32), np.int32), "attention_mask": ((8, 32), np.int32),
              "token_type_ids": ((8, 32), np.int32), "masked_positions": ((8, 5), np.int32),
              "masked_ids": ((8, 5), np.int32), "masked_weights": ((8, 5), np.float32),
              "example_weights": ((8,), np.float32), "pair_labels": ((8,), np.int32)}
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
  assert loader.element_spec == expected
  assert set(np.unique(batch["pair_labels"])) <= {0, 1} and set(np.unique(batch["token_type_ids"])) <= {0, 1}
  lengths = batch["attention_mask"].sum(1)
  np.testing.assert_array_equal(batch["attention_mask"], np.arange(32)[None] < lengths[:, None])
  for row, types, label in zip(unmasked(batch), batch["token_type_ids"], batch["pair_labels"]):
    a = {owner[t] for t, k in zip(row, types) if k == 0 and t in owner}
    b = {owner[t] for t, k in zip(row, types) if k == 1 and t in owner}
    assert len(a) == len(b) == 1 and (a != b) == bool(label)  # label 1: B from another document
  assert (batch["masked_weights"].sum(1) >= 1).all()


def test_same_seed_same_batches_and_processes_disjoint(corpus, tmp_path, tokenizer):
  pattern, owner = corpus
  cfg = config(pattern, tmp_path)
  first = take(pd.make_loader(cfg, "mlm", tokenizer, global_batch_size=8, seed=3), 4)
  assert_batches_equal(first, take(pd.make_loader(cfg, "mlm", tokenizer, global_batch_size=8, seed=3), 4))
  other = take(pd.make_loader(cfg, "mlm", tokenizer, global_batch_size=8, seed=4), 1)[0]
  assert not np.array_equal(first[0]["input_ids"], other["input_ids"])

  # Default: each process reads its rows of the same global batches, so any process count sees the same data.
  halves = [take(pd.make_loader(cfg, "mlm", tokenizer, global_batch_size=8, seed=3, process_index=index,
                                process_count=2), 4) for index in range(2)]
  for whole, top, bottom in zip(first, *halves):
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([top[key], bottom[key]]), whole[key], err_msg=key)

  cfg.per_process_shards = True
  documents = []
  for index in range(2):
    loader = pd.make_loader(cfg, "mlm", tokenizer, global_batch_size=8, process_index=index, process_count=2)
    assert loader.batch_size == 4 and next(iter(loader))["input_ids"].shape == (4, 32)
    seen = {owner[t] for e in prepared_examples(loader.prepared) for t in e.ids if t in owner}
    assert all(d % 2 == index for d in seen)  # process i takes documents i, i+2, ...
    documents.append(seen)
  assert documents[0] | documents[1] == set(range(NUM_DOCS - 4))  # all but the held-out 4
  assert len(glob.glob(str(tmp_path / "cache" / "train-*-p*of2"))) == 2  # one folder per process


def test_exact_resume_from_saved_state(corpus, tmp_path, tokenizer):
  pattern, _ = corpus
  cfg = config(pattern, tmp_path)
  loader = pd.make_loader(cfg, "mlm_sop", tokenizer, global_batch_size=16)
  it = iter(loader)
  for _ in range(3):
    next(it)
  state = json.dumps(pd.loader_state(it))
  expected = [next(it) for _ in range(5)]  # runs past the end of the first epoch
  assert 8 * 16 > loader.num_examples
  fresh = iter(pd.make_loader(cfg, "mlm_sop", tokenizer, global_batch_size=16))
  pd.restore(fresh, json.loads(state))
  assert_batches_equal(expected, [next(fresh) for _ in range(5)])


def test_worker_processes_give_the_same_batches(corpus, tmp_path, tokenizer):
  pattern, _ = corpus
  expected = take(pd.make_loader(config(pattern, tmp_path), "mlm", tokenizer, global_batch_size=8), 6)
  loader = pd.make_loader(config(pattern, tmp_path, num_workers=1), "mlm", tokenizer, global_batch_size=8)
  it = iter(loader)
  got = [next(it) for _ in range(2)]
  state = json.loads(json.dumps(pd.loader_state(it)))
  got += [next(it) for _ in range(4)]
  assert_batches_equal(expected, got)
  it.close()
  resumed = iter(loader)
  pd.restore(resumed, state)
  assert_batches_equal(expected[2:], [next(resumed) for _ in range(4)])
  resumed.close()


@pytest.mark.parametrize("dynamic", [True, False])
def test_dynamic_and_static_masking(corpus, tmp_path, tokenizer, dynamic):
  pattern, _ = corpus
  loader = pd.make_loader(config(pattern, tmp_path, shuffle=False, dynamic_masking=dynamic), "mlm", tokenizer,
                          global_batch_size=4)
  it = iter(loader)
  n = loader.num_examples
  rows = [next(it) for _ in range(-(-2 * n // 4))]
  ids = np.concatenate([b["input_ids"] for b in rows])
  original = np.concatenate([unmasked(b) for b in rows])
  np.testing.assert_array_equal(original[:n], original[n:2 * n])  # same examples, same order
  same = np.all(ids[:n] == ids[n:2 * n], axis=1).mean()
  assert same == 1.0 if not dynamic else same < 0.5


def test_validation_is_held_out_padded_and_split(corpus, tmp_path, tokenizer):
  pattern, owner = corpus
  cfg = config(pattern, tmp_path)
  train = pd.make_loader(cfg, "mlm", tokenizer, global_batch_size=6)
  trained = {owner[t] for e in prepared_examples(train.prepared) for t in e.ids if t in owner}
  rows = []
  for index in range(2):
    loader = pd.make_loader(cfg, "mlm", tokenizer, split="validation", global_batch_size=6, process_index=index,
                            process_count=2)
    assert len(loader) == -(-loader.num_examples // 6)
    batches = list(loader)
    assert len(batches) == len(loader) and all(b["input_ids"].shape == (3, 32) for b in batches)
    for b in batches:
      assert (b["masked_weights"][b["example_weights"] == 0] == 0).all()
      rows.extend(tuple(r) for r, w in zip(unmasked(b), b["example_weights"]) if w)
    assert_batches_equal(batches, list(loader))  # every pass is the same
  expected = prepared_examples(loader.prepared)
  assert sorted(rows) == sorted(tuple(e.ids + [0] * (32 - len(e.ids))) for e in expected)
  held_out = {owner[t] for r in rows for t in r if t in owner}
  assert held_out == set(range(NUM_DOCS - 4, NUM_DOCS)) and not held_out & trained


def test_whole_word_masking_in_the_loader(tmp_path, tokenizer):
  with gzip.open(os.path.join(os.path.dirname(assets.corpus_glob()), "austen.txt.gz"), "rt", encoding="utf-8") as f:
    text = "\n\n".join(f.read().split("\n\n")[:8])
  (tmp_path / "austen.txt").write_text(text, encoding="utf-8")
  cfg = config(str(tmp_path / "austen.txt"), tmp_path, whole_word_masking=True, max_length=64, max_predictions=10,
               validation_documents=0)
  it = iter(pd.make_loader(cfg, "mlm", tokenizer, global_batch_size=32))
  for _ in range(3):
    batch = next(it)
    starts = tokenizer.is_word_start(unmasked(batch))
    for row in range(32):
      chosen = np.zeros(64, dtype=bool)
      chosen[batch["masked_positions"][row][batch["masked_weights"][row] > 0]] = True
      continuation = ~starts[row] & (batch["attention_mask"][row] > 0)
      assert (chosen[1:][continuation[1:]] == chosen[:-1][continuation[1:]]).all()


def test_packing_emits_segment_ids(corpus, tmp_path, tokenizer):
  pattern, _ = corpus
  cfg = config(pattern, tmp_path, packing=True, max_length=64)
  batch = next(iter(pd.make_loader(cfg, "mlm", tokenizer, global_batch_size=8)))
  segments, ids = batch["segment_ids"], unmasked(batch)
  assert segments.shape == (8, 64) and segments.dtype == np.int32
  np.testing.assert_array_equal(segments == 0, batch["attention_mask"] == 0)
  assert segments.max() > 1
  for row in range(8):
    first = np.flatnonzero(np.diff(segments[row], prepend=0) > 0)
    assert (ids[row][first] == tokenizer.cls_id).all()
  with pytest.raises(ValueError, match="packing"):
    pd.make_loader(cfg, "mlm_nsp", tokenizer, global_batch_size=8)
  # A row must hold its special tokens and a document piece (examples.MIN_PIECE): refused before any shard.
  short = config(pattern, tmp_path / "short", packing=True, max_length=9)
  with pytest.raises(ValueError, match=r"data\.max_length=9 is too short: packed_documents examples need >= 10"):
    pd.make_loader(short, "mlm", tokenizer, global_batch_size=8)
  assert not [p for p in (tmp_path / "short").rglob("*") if p.is_file()]


# -- prepare ------------------------------------------------------------------------


def test_prepare_is_idempotent_and_resumes(corpus, tmp_path, tokenizer):
  pattern, _ = corpus
  cfg, out = config(pattern, tmp_path), str(tmp_path / "prep")
  first = prepare_lib.prepare(cfg, "mlm_nsp", tokenizer, out_dir=out, shard_bytes=300)
  assert len(first.paths) >= 3
  files = sorted(glob.glob(os.path.join(first.directory, "*")))
  mtimes = {f: os.stat(f).st_mtime_ns for f in files}
  before = prepared_examples(first)
  again = prepare_lib.prepare(cfg, "mlm_nsp", tokenizer, out_dir=out, shard_bytes=300)
  assert again.directory == first.directory
  assert {f: os.stat(f).st_mtime_ns for f in files} == mtimes  # nothing rewritten
  os.remove(first.paths[1])
  resumed = prepare_lib.prepare(cfg, "mlm_nsp", tokenizer, out_dir=out, shard_bytes=300)
  changed = {f for f in files if os.stat(f).st_mtime_ns != mtimes[f]}
  redone = first.paths[1]
  assert changed == {redone, redone.replace(".array_record", ".json"), os.path.join(first.directory, "manifest.json")}
  assert prepared_examples(resumed) == before  # the redone shard is the same
  other = prepare_lib.prepare(config(pattern, tmp_path, max_length=40), "mlm_nsp", tokenizer, out_dir=out)
  assert other.directory != first.directory  # other settings, other folder


def test_command_line_prepares_what_the_loader_reads(corpus, tmp_path, tokenizer, capsys):
  pattern, _ = corpus
  out = str(tmp_path / "cli")
  prepare_lib.main([f"--train={pattern}", f"--tokenizer={bundled_tokenizer('wordpiece')}", f"--out={out}",
                    "--objective=mlm_sop", "--max_length=32", "--validation_documents=4"])
  assert "train:" in capsys.readouterr().out
  folders = sorted(os.listdir(out))
  assert len(folders) == 2
  for split in ("train", "validation"):
    pd.make_loader(config(pattern, tmp_path, cache_dir=out), "mlm_sop", tokenizer, split=split, global_batch_size=4)
  assert sorted(os.listdir(out)) == folders  # found, not prepared again


def test_tfds_source_through_mock_data(tmp_path, tokenizer, words):
  tfds = pytest.importorskip("tensorflow_datasets")
  texts = [f"{words[i]} {words[i + 1]}\n\n{words[i + 2]} {words[i]}" for i in range(0, 60, 3)]

  def as_data_source(self, split, **kwargs):
    del self, kwargs
    return [{"text": t.encode(), "label": 0} for t in (texts if split == "train" else texts[:5])]

  cfg = config("tfds:imdb_reviews", tmp_path, validation="tfds:imdb_reviews:test")
  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    loader = pd.make_loader(cfg, "mlm_nsp", tokenizer, global_batch_size=4)
    assert next(iter(loader))["input_ids"].shape == (4, 32)
    assert loader.prepared.manifest["num_documents"] == 20
    seen = {t for e in prepared_examples(loader.prepared) for t in e.ids}
    assert {tokenizer.token_to_id(w) for w in words[:60]} <= seen
    validation = pd.make_loader(cfg, "mlm_nsp", tokenizer, split="validation", global_batch_size=4)
    assert validation.prepared.manifest["num_documents"] == 5
    with pytest.raises(KeyError, match="text_key"):
      pd.make_loader(config("tfds:imdb_reviews", tmp_path, text_key="body"), "mlm", tokenizer, global_batch_size=4)
  # The library's own random mock (records through tfds' ArrayRecord data source class).
  with tfds.testing.mock_data(num_examples=10):
    loader = pd.make_loader(config("tfds:imdb_reviews", tmp_path, validation_documents=2), "mlm", tokenizer,
                            global_batch_size=4)
    assert loader.prepared.manifest["num_documents"] == 8


# -- errors ---------------------------------------------------------------------------


def test_clear_errors(tmp_path, tokenizer, corpus):
  pattern, _ = corpus
  make = lambda train, **kw: pd.make_loader(config(train, tmp_path, **kw), "mlm", tokenizer, global_batch_size=4)
  with pytest.raises(FileNotFoundError, match="nothing-here"):
    make(str(tmp_path / "nothing-here*.txt"))
  (tmp_path / "blank.txt").write_text("\n\n  \n\n", encoding="utf-8")
  with pytest.raises(ValueError, match="no documents"):
    make(str(tmp_path / "blank.txt"))
  (tmp_path / "bad.txt").write_bytes(b"a fine line\n\nanother \xff\xfe line\n")
  with pytest.raises(ValueError, match=r"bad\.txt:3: .*UTF-8"):
    make(str(tmp_path / "bad.txt"), validation_documents=0)
  with gzip.open(tmp_path / "bad.txt.gz", "wb") as f:
    f.write(b"fine\n\xc3\n")
  with pytest.raises(ValueError, match=r"bad\.txt\.gz:2: .*UTF-8"):
    make(str(tmp_path / "bad.txt.gz"), validation_documents=0)
  with pytest.raises(ValueError, match="all held out"):
    make(pattern, validation_documents=100)
  (tmp_path / "one.txt").write_text("just one document\nof two lines\n", encoding="utf-8")
  with pytest.raises(ValueError, match="2 documents"):
    pd.make_loader(config(str(tmp_path / "one.txt"), tmp_path, validation_documents=0), "mlm_nsp", tokenizer,
                   global_batch_size=4)
  with pytest.raises(ValueError, match="unknown data config keys"):
    pd.data_config(shuffle_buffer=100)
  with pytest.raises(ValueError, match="multiple of process_count"):
    pd.make_loader(config(pattern, tmp_path), "mlm", tokenizer, global_batch_size=5, process_count=2)


def test_bundled_corpus():
  files = sorted(os.path.basename(p) for p in glob.glob(assets.corpus_glob()))
  assert files == ["austen.txt.gz", "kjv.txt.gz"]
  assert pd.DEFAULTS["train"] == assets.corpus_glob()
