"""bert_jax.search: RRF, chunking, doc-level max, BM25, dense + hybrid, save/load, CLI, bad input.

Most tests use a tiny random 2-layer encoder with the bundled WordPiece
tokenizer (no files, compiles in seconds): the lexical side and the index
plumbing do not depend on what the dense vectors mean. The dense and CLI tests
use the real all-MiniLM-L6-v2 weights and skip only when its package is absent.
"""

import importlib.util
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import search
from bert_jax.data.tokenizers import bundled_tokenizer, load_tokenizer
from bert_jax.models.config import ModelConfig
from bert_jax.models.model import EncoderModel
from bert_jax.search import chunking, ranking

ARK = "Noah built an ark of gopher wood and took the animals into it two by two before the rain."
LIGHT = "And God said, Let there be light: and there was light, and the evening and the morning were the first day."
BALL = "Mr. Bingley danced twice with Jane at the ball at Netherfield, and Mrs. Bennet was delighted."
LETTER = "Elizabeth read the letter from Mr. Darcy again and again, and grew ashamed of her prejudice."
# A long document whose only mention of "zebras" is near the end: it takes several chunks.
FARM = " ".join(["The farmer walked along the river bank, counting the sheep and the cows in the meadow."] * 12
                + ["At last he saw three striped zebras grazing beside the old mill."])
DOCS = [{"id": "ark", "text": ARK}, {"id": "light", "text": LIGHT}, {"id": "ball", "text": BALL, "title": "Pride"},
        {"id": "letter", "text": LETTER}, {"id": "farm", "text": FARM}]


@pytest.fixture(scope="module")
def wordpiece():
  return load_tokenizer(bundled_tokenizer("wordpiece"))


@pytest.fixture(scope="module")
def tiny_model(wordpiece):
  """(model, params, tokenizer): random weights, real tokenizer; cheap to compile."""
  cfg = ModelConfig(vocab_size=wordpiece.vocab_size, hidden_size=32, num_layers=2, num_heads=2,
                    intermediate_size=37, max_position_embeddings=128)
  model = EncoderModel(cfg)
  params = model.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))["params"]
  return model, params, wordpiece


@pytest.fixture(scope="module")
def tiny_index(tiny_model):
  return search.HybridIndex.build(tiny_model, DOCS, chunk_tokens=32, chunk_overlap=8)


def _write(path: pathlib.Path, content) -> pathlib.Path:
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content, encoding="utf-8")
  return path


def _jsonl(path: pathlib.Path, records) -> pathlib.Path:
  return _write(path, "".join(json.dumps(r) + "\n" for r in records))


# -- RRF --------------------------------------------------------------------------


def test_rrf_hand_worked():
  # a: 1/61; b: 1/62 + 1/61; c: 1/63 + 1/62; d: 1/63.
  fused = search.rrf([["a", "b", "c"], ["b", "c", "d"]], k=60)
  assert [doc for doc, _ in fused] == ["b", "c", "a", "d"]
  expected = {"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 63 + 1 / 62, "d": 1 / 63}
  for doc, score in fused:
    assert score == pytest.approx(expected[doc], rel=1e-12)
  # k=0 is plain reciprocal rank; a tie goes to the better single rank, then to the first seen.
  assert search.rrf([["x", "y"], ["z"]], k=0) == [("x", 1.0), ("z", 1.0), ("y", 0.5)]
  assert [d for d, _ in search.rrf([["x", "y"], ["y", "x"]])] == ["x", "y"]
  assert search.rrf([]) == []
  with pytest.raises(ValueError, match="twice"):
    search.rrf([["a", "a"]])


def test_metrics_hand_worked():
  # Query 1: relevant b (rank 2) and d (rank 4, past k=3); query 2: nothing relevant retrieved.
  scores = ranking.score_rankings([["a", "b", "c", "d"], []], [["b", "d"], ["a"]], k=3)
  assert list(scores) == ["recall@1", "recall@3", "recall@5", "mrr@3", "ndcg@3"]
  ndcg = (1 / np.log2(3)) / (1 + 1 / np.log2(3))  # ideal: both relevant at ranks 1 and 2
  assert scores == pytest.approx({"recall@1": 0.0, "recall@3": 0.25, "recall@5": 0.5, "mrr@3": 0.25,
                                  "ndcg@3": ndcg / 2})


# -- chunking ---------------------------------------------------------------------


def _check_windows(text, tokenizer, chunk_tokens, overlap):
  offsets = tokenizer.encode(text, add_special_tokens=False).offsets
  starts = chunking.word_starts(text, offsets)
  windows = chunking.token_windows(starts, chunk_tokens, overlap)
  assert windows[0][0] == 0 and windows[-1][1] == len(offsets)  # the windows cover every token
  for (s, e), (s2, e2) in zip(windows, windows[1:]):
    assert s < s2 < e < e2  # each one moves on and overlaps the previous one
    assert e - s2 >= overlap
  for s, e in windows:
    assert 0 < e - s <= chunk_tokens
  spans = chunking.chunk_spans(text, offsets, chunk_tokens, overlap)
  assert len(spans) == len(windows)
  return windows, spans, starts


def test_chunks_cover_text_overlap_and_cut_at_words(wordpiece):
  text = " ".join(f"Sentence {i}: the well-known wood-cutter's axe, sharpened (again) at dawn." for i in range(40))
  windows, spans, starts = _check_windows(text, wordpiece, chunk_tokens=30, overlap=8)
  assert len(windows) > 5
  for s, e in windows:  # cuts where a whitespace-separated word begins
    assert starts[s] and (e == len(starts) or starts[e])
  covered = np.zeros(len(text), bool)
  for start, end in spans:
    assert start == 0 or text[start - 1].isspace()
    assert end == len(text) or text[end].isspace()
    assert text[start:end] == text[start:end].strip()
    covered[start:end] = True
  assert all(covered[i] or text[i].isspace() for i in range(len(text)))


def test_short_document_is_one_chunk(wordpiece):
  text = "  A short text, with spaces around it. "
  offsets = wordpiece.encode(text, add_special_tokens=False).offsets
  assert chunking.chunk_spans(text, offsets, 200, 50) == [(0, len(text))]
  assert chunking.token_windows(np.ones(200, bool), 200, 50) == [(0, 200)]
  doc = search.Document("d", text)
  [chunk] = chunking.chunk_documents(wordpiece, [doc], 200, 50)
  assert (chunk.doc, chunk.index, chunk.start, chunk.end, chunk.text) == ("d", 0, 0, len(text), text)


def test_overlong_word_is_cut_inside(wordpiece):
  text = "start " + "qzxjvkwq" * 12 + " end"  # one word of 96 tokens (WordPiece caps words at 100 chars)
  windows, spans, starts = _check_windows(text, wordpiece, chunk_tokens=10, overlap=3)
  assert len(windows) > 10 and sum(not starts[s] for s, _ in windows) > 8


def test_chunk_settings_are_checked(wordpiece):
  with pytest.raises(ValueError, match="chunk_overlap=10"):
    chunking.chunk_documents(wordpiece, [search.Document("d", "text")], 10, 10)
  title = " ".join(["word"] * 20)
  with pytest.raises(ValueError, match=r"docs.jsonl:3: the title of document 'd' has 20 tokens"):
    chunking.chunk_documents(wordpiece, [search.Document("d", "text", title, "docs.jsonl:3")], 30, 5)


# -- doc-level max, BM25 ----------------------------------------------------------


def test_doc_max_over_chunks():
  scores = np.array([[1.0, 5.0, 2.0, 0.0, 3.0], [0.0, 0.0, 0.0, 7.0, 1.0]])
  np.testing.assert_array_equal(ranking.doc_max(scores, np.array([0, 2, 3])), [[5, 2, 3], [0, 0, 7]])
  assert ranking.top_documents(np.array([0.0, 2.0, 2.0, 1.0]), 3).tolist() == [1, 2, 3]  # ties: doc order
  assert ranking.top_documents(np.array([0.0, 2.0, 0.0]), 3, positive_only=True).tolist() == [1]


def test_document_scores_its_best_chunk(tiny_index):
  farm_chunks = [i for i, c in enumerate(tiny_index.chunks) if c.doc == "farm"]
  assert len(farm_chunks) >= 4 and tiny_index.info["counts"]["chunked_documents"] == 1
  for c in tiny_index.chunks:
    assert c.text == FARM[c.start:c.end] if c.doc == "farm" else c.index == 0
  query = "striped zebras"
  [results] = tiny_index.search([query], k=5, mode="bm25")
  assert results[0][0] == "farm" and [d for d, _ in results].count("farm") == 1  # one entry per document
  ids = tiny_index.bm25_tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)[0]
  chunk_scores = tiny_index.bm25.get_scores_from_ids(ids)
  assert results[0][1] == pytest.approx(chunk_scores[farm_chunks].max())
  assert chunk_scores[farm_chunks[-1]] > 0 and chunk_scores[farm_chunks[0]] == 0  # only the end matches
  # Every dense score is one of the document's chunk cosines, the largest.
  [dense] = tiny_index.search([query], k=5, mode="dense")
  farm_score = dict(dense)["farm"]
  vectors = tiny_index.dense_scores([query])  # [1, docs]
  assert farm_score == pytest.approx(vectors[0, tiny_index.doc_ids.index("farm")])


def test_bm25_ranks_the_obvious_document_first(tiny_index):
  results = tiny_index.search(["gopher wood ark", "letter from Darcy", "Bingley ball Netherfield", "the of and"],
                              k=3, mode="bm25")
  assert [r[0][0] for r in results[:3]] == ["ark", "letter", "ball"]
  assert all(score > 0 for r in results[:3] for _, score in r)
  assert results[3] == []  # only stopwords: no document shares a term
  # The title is indexed with each chunk of its document.
  assert tiny_index.search("pride", k=1, mode="bm25")[0][0][0] == "ball"


def test_save_load_round_trip(tiny_index, tiny_model, tmp_path):
  tiny_index.save(tmp_path / "idx")
  assert sorted(os.listdir(tmp_path / "idx")) == ["bm25", "chunks.jsonl", "embeddings.npy", "index.json"]
  assert sorted(os.listdir(tmp_path)) == ["idx"]  # no temporary folder left
  embeddings = np.load(tmp_path / "idx" / "embeddings.npy")
  assert embeddings.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
  info = json.loads((tmp_path / "idx" / "index.json").read_text())
  assert info["counts"] == {"documents": 5, "chunks": len(tiny_index.chunks), "chunked_documents": 1}
  assert info["model"]["path"] is None and info["settings"]["chunk_tokens"] == 32
  loaded = search.HybridIndex.load(tmp_path / "idx", model=tiny_model)
  queries = ["gopher wood ark", "zebras by the mill", "a dance", "Let there be light"]
  for mode in search.MODES:
    assert loaded.search(queries, k=5, mode=mode) == tiny_index.search(queries, k=5, mode=mode)
  assert loaded.chunks == tiny_index.chunks and loaded.titles == {"ball": "Pride"}
  # Saving over an existing index replaces it whole.
  loaded.save(tmp_path / "idx")
  assert sorted(os.listdir(tmp_path)) == ["idx"]
  with pytest.raises(ValueError, match="pass model= to HybridIndex.load"):
    search.HybridIndex.load(tmp_path / "idx").search("light", mode="dense")


def test_failed_save_leaves_the_existing_index(tiny_index, tmp_path, monkeypatch):
  target = tmp_path / "idx"
  tiny_index.save(target)
  before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}

  def broken_save(self, *args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(type(tiny_index.bm25), "save", broken_save)
  with pytest.raises(OSError, match="disk full"):
    tiny_index.save(target)
  assert {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
  assert sorted(os.listdir(tmp_path)) == ["idx"]  # the half-written folder is gone
  # A folder that is not an index is never replaced.
  (tmp_path / "notes").mkdir()
  _write(tmp_path / "notes" / "keep.txt", "mine")
  with pytest.raises(ValueError, match="not a bert_jax.search index"):
    tiny_index.save(tmp_path / "notes")
  assert os.listdir(tmp_path / "notes") == ["keep.txt"]


def test_stemmer_needs_pystemmer(tiny_model):
  if importlib.util.find_spec("Stemmer") is not None:
    pytest.skip("PyStemmer is installed")
  with pytest.raises(ValueError, match="needs the PyStemmer package"):
    search.HybridIndex.build(tiny_model, DOCS, stemmer="english")


# -- bad input --------------------------------------------------------------------


@pytest.mark.parametrize("name, content, expect", [
    ("docs.jsonl", '{"id": "a", "text": "x"}\n{"text": "no id"}\n', ("docs.jsonl:2:", "missing 'id'")),
    ("docs.jsonl", '{"id": "a", "text": "x"}\n\n{"id": "b"}\n', ("docs.jsonl:3:", "has no 'text'")),
    ("docs.jsonl", '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n',
     ("docs.jsonl:2:", "duplicate document id 'a'", "docs.jsonl:1")),
    ("docs.jsonl", '{"id": "a", "text": "  "}\n', ("docs.jsonl:1:", "empty text")),
    ("docs.jsonl", '{"id": "a", "text": "x"}\n{"id": "b", "text": "caf\xe9"}\n'.encode("latin-1"),
     ("docs.jsonl:2:", "not valid UTF-8")),
    ("docs.jsonl", '{"id": "a", "text": "x"}\n{"id": "b", "text": \n', ("docs.jsonl:2:", "not valid JSON")),
    ("docs.jsonl", '["a", "x"]\n', ("docs.jsonl:1:", "expected a JSON object")),
    ("docs.tsv", "id\ttext\na\tfine\nb\ttoo\tmany\n", ("docs.tsv:3:", "expected 2 tab-separated fields")),
    ("docs.tsv", "id\tbody\na\tx\n", ("docs.tsv:1:", "TSV header")),
    ("docs.tsv", "id\ttext\na\tx\n\ty\n", ("docs.tsv:3:", "empty 'id'")),
    ("docs.tsv", "id\ttext\na\tx\na\ty\n", ("docs.tsv:3:", "duplicate document id 'a'")),
    ("docs.tsv", "", ("docs.tsv", "is empty")),
])
def test_bad_documents_name_file_and_line(tmp_path, name, content, expect):
  path = _write(tmp_path / name, content)
  with pytest.raises(ValueError) as error:
    search.read_documents(path)
  for part in expect:
    assert part in str(error.value)


def test_documents_and_queries_formats(tmp_path):
  tsv = _write(tmp_path / "docs.tsv", "id\ttext\ttitle\n1\tfirst text\t\n2\tsecond \"text\"\tA title\n")
  assert search.read_documents(tsv) == [search.Document("1", "first text"),
                                        search.Document("2", 'second "text"', "A title")]
  queries = _write(tmp_path / "q.tsv", "id\tquery\trelevant\nq1\tfirst\t1, 2\nq2\tsecond\t2\n")
  assert [(q.id, q.text, q.relevant) for q in search.read_queries(queries, require_relevant=True)] == [
      ("q1", "first", ("1", "2")), ("q2", "second", ("2",))]
  bad = _jsonl(tmp_path / "q.jsonl", [{"id": "q1", "query": "x", "relevant": ["1"]}, {"id": "q2", "query": "y"}])
  assert search.read_queries(bad)[1].relevant is None
  with pytest.raises(ValueError, match=r"q.jsonl:2: query 'q2' lists no relevant document ids"):
    search.read_queries(bad, require_relevant=True)


# -- the real model: dense, hybrid, CLI ---------------------------------------------


def test_dense_and_hybrid_end_to_end(minilm, tmp_path):
  index = search.HybridIndex.build(minilm, DOCS, chunk_tokens=32, chunk_overlap=8)
  assert index.info["model"] == {"path": minilm, "pooling": "mean", "max_length": 256, "hidden_size": 384}
  queries = [
      "a boat built to save the creatures from the flood",  # no shared term with the ark story but "built"
      "a man felt embarrassed after reading a message from someone",
      "striped horses from africa",  # BM25 has only "striped"
  ]
  dense = index.search(queries, k=5, mode="dense")
  assert [r[0][0] for r in dense] == ["ark", "letter", "farm"]
  assert all(-1 <= s <= 1 for r in dense for _, s in r)
  bm25 = index.search(queries, k=5, mode="bm25")
  hybrid = index.search(queries, k=5, mode="hybrid")
  assert [r[0][0] for r in hybrid] == ["ark", "letter", "farm"]
  for b, d, h in zip(bm25, dense, hybrid):  # hybrid is exactly RRF of the two rankings
    expected = search.rrf([[doc for doc, _ in b], [doc for doc, _ in d]], k=60)[:5]
    assert [doc for doc, _ in h] == [doc for doc, _ in expected]
    np.testing.assert_allclose([s for _, s in h], [s for _, s in expected])
  # Saved and loaded (model from index.json), the answers are the same.
  index.save(tmp_path / "idx")
  loaded = search.HybridIndex.load(tmp_path / "idx")
  assert loaded.search(queries, k=5, mode="hybrid") == hybrid


def test_cli_index_query_evaluate(minilm, tmp_path, capsys):
  docs = _jsonl(tmp_path / "docs.jsonl", DOCS)
  queries = _jsonl(tmp_path / "queries.jsonl", [
      {"id": "q1", "query": "gopher wood ark animals", "relevant": ["ark"]},
      {"id": "q2", "query": "Darcy letter ashamed", "relevant": ["letter"]},
      {"id": "q3", "query": "zebras grazing by the mill", "relevant": ["farm", "nowhere"]},
  ])
  index = tmp_path / "idx"
  search.main(["index", f"--model={minilm}", f"--documents={docs}", f"--index={index}",
               "--chunk_tokens=32", "--chunk_overlap=8", "--no-compilation_cache"])
  info = json.loads((index / "index.json").read_text())
  assert info["created"]["documents"] == str(docs) and len(info["created"]["documents_sha256"]) == 64
  assert len((index / "chunks.jsonl").read_text().splitlines()) == info["counts"]["chunks"]
  capsys.readouterr()

  search.main(["evaluate", f"--index={index}", f"--queries={queries}", "--k=3",
               f"--output={tmp_path / 'metrics.json'}", "--no-compilation_cache"])
  out, err = capsys.readouterr()
  assert "| metric | bm25 | dense | hybrid |" in out and "| recall@5 |" in out and "| ndcg@3 |" in out
  assert "1 relevant ids are not documents of the index" in err
  metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
  assert list(metrics["hybrid"]) == ["recall@1", "recall@3", "recall@5", "mrr@3", "ndcg@3"]
  assert metrics["bm25"]["mrr@3"] == 1.0 and metrics["bm25"]["recall@3"] == pytest.approx(5 / 6)

  search.main(["query", f"--index={index}", "--query=Noah and the ark", "--query=a ball", "--k=2",
               "--mode=bm25", "--no-compilation_cache"])
  out, _ = capsys.readouterr()
  assert "query q1: Noah and the ark" in out and "ark" in out.splitlines()[1]
  search.main(["query", f"--index={index}", f"--queries={queries}", "--k=2",
               f"--output={tmp_path / 'results.jsonl'}", "--no-compilation_cache"])
  results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
  assert [r["id"] for r in results] == ["q1", "q2", "q3"] and results[0]["results"][0]["doc"] == "ark"
  assert len(results[0]["results"]) == 2 and results[0]["mode"] == "hybrid"


def test_cli_failed_index_leaves_the_old_one(tmp_path, tiny_index):
  index = tmp_path / "idx"
  tiny_index.save(index)
  before = (index / "index.json").read_bytes()
  bad = _write(tmp_path / "docs.jsonl", '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
  with pytest.raises(SystemExit, match=r"docs.jsonl:2: duplicate document id 'a'"):
    search.main(["index", "--model=/nonexistent", f"--documents={bad}", f"--index={index}"])
  assert (index / "index.json").read_bytes() == before
  assert sorted(os.listdir(tmp_path)) == ["docs.jsonl", "idx"]
  with pytest.raises(SystemExit, match="candidates=5: must be an integer >= k=10"):
    search.main(["query", f"--index={index}", "--query=x", "--candidates=5"])
