"""HybridIndex: the chunks of a collection with their BM25 index and unit dense vectors; build, save, load, search.

A document scores the maximum over its chunks, so every ranking is of
documents, each at most once. The index folder's files, and the BM25 and
query settings, are described in the bert_jax.search docstring; `save`
writes a temporary folder beside the target and swaps it into place whole.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np

from bert_jax import embed
from bert_jax.convert.sentence_transformers import folder_defaults
from bert_jax.embed.encoding import normalize_rows
from bert_jax.runtime import fileio
from bert_jax.search.chunking import (DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, Chunk, check_chunking,
                                      chunk_documents, indexed_text)
from bert_jax.search.documents import Query, SearchError, as_documents, json_object, numbered_lines
from bert_jax.search.ranking import DEFAULT_RRF_K, doc_max, fuse, score_rankings, top_documents

MODES = ("hybrid", "bm25", "dense")
DEFAULT_CANDIDATES = 100
DEFAULT_K = 10
INDEX_FORMAT = "bert_jax.search/1"
# bm25s defaults, written out so that index.json records what was used.
BM25_PARAMS = {"k1": 1.5, "b": 0.75, "method": "lucene"}
BM25_TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's: words of 2+ word characters
BM25_STOPWORDS = "en"
# Query x chunk similarities computed per block (float32 entries), bounding memory.
SIMILARITY_BLOCK = 1 << 24


def _stemmer(name: str | None):
  """A PyStemmer stemmer for `name` (e.g. "english"), or None; PyStemmer is optional."""
  if not name:
    return None
  try:
    import Stemmer  # PyStemmer
  except ImportError as e:
    raise SearchError(f"stemmer {name!r} needs the PyStemmer package (pip install PyStemmer); "
                      "build without a stemmer otherwise") from e
  try:
    return Stemmer.Stemmer(name)
  except KeyError as e:
    raise SearchError(f"stemmer {name!r}: PyStemmer knows {', '.join(Stemmer.algorithms())}") from e


def _bm25_tokenizer(settings: dict):
  import bm25s
  return bm25s.tokenization.Tokenizer(lower=settings["lower"], splitter=settings["token_pattern"],
                                      stopwords=settings["stopwords"], stemmer=_stemmer(settings["stemmer"]))


def _load_model(model) -> tuple[str | None, tuple]:
  """(absolute folder or None, (model, params, tokenizer)) from a folder or a loaded tuple."""
  if isinstance(model, (str, os.PathLike)):
    path = os.path.abspath(os.fspath(model))
    if not os.path.isdir(path):
      raise SearchError(f"model {path}: not a folder")
    return path, embed.load(path)
  loaded = tuple(model)
  if len(loaded) != 3:
    raise TypeError("model must be a folder or a (model, params, tokenizer) tuple from bert_jax.embed.load")
  return None, loaded


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def check_index_target(folder: str) -> None:
  """Refuses a target that is not a folder, or a non-empty folder that is not an index (never deleted)."""
  folder = os.fspath(folder)
  parent = os.path.dirname(os.path.abspath(folder))
  if not os.path.isdir(parent):
    raise SearchError(f"index {folder}: folder {parent} does not exist")
  if os.path.lexists(folder):
    if not os.path.isdir(folder) or os.path.islink(folder):
      raise SearchError(f"index {folder}: exists and is not a folder")
    if os.listdir(folder) and not os.path.isfile(os.path.join(folder, "index.json")):
      raise SearchError(f"index {folder}: a non-empty folder that is not a bert_jax.search index "
                        "(no index.json); refusing to replace it")


class HybridIndex:
  """Chunks of a document collection with their BM25 index and unit dense vectors.

  Attributes:
    chunks: list[Chunk], grouped by document in document order.
    doc_ids: list[str] [docs]; titles: dict doc id -> title (documents with one).
    embeddings: float32 [chunks, hidden], L2-normalised.
    info: what index.json holds (model, settings, counts, creation).
  """

  def __init__(self, *, chunks: list[Chunk], titles: dict[str, str], embeddings: np.ndarray, bm25,
               bm25_tokenizer, info: dict, model: tuple | None = None):
    self.chunks, self.titles, self.embeddings, self.info = chunks, titles, embeddings, info
    self.bm25, self.bm25_tokenizer = bm25, bm25_tokenizer
    self._model = model
    chunk_docs = [c.doc for c in chunks]
    first = np.flatnonzero(np.r_[True, np.asarray(chunk_docs[1:]) != np.asarray(chunk_docs[:-1])])
    self.doc_ids = [chunk_docs[i] for i in first]
    if len(set(self.doc_ids)) != len(self.doc_ids):
      raise SearchError("the chunks of each document must be contiguous")
    self.doc_starts = first.astype(np.int64)
    if embeddings.shape[0] != len(chunks):
      raise SearchError(f"{embeddings.shape[0]} embeddings for {len(chunks)} chunks")

  # -- building -------------------------------------------------------------------

  @classmethod
  def build(cls, model, documents, *, chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
            chunk_overlap: int = DEFAULT_CHUNK_OVERLAP, batch_size: int | None = None,
            stemmer: str | None = None, progress: bool = False) -> HybridIndex:
    """Chunks, BM25-indexes and embeds a collection.

    model: a model folder (recorded, so a loaded index can embed queries) or a
      (model, params, tokenizer) tuple (then pass it to `load` as well).
    documents: a JSONL / TSV path, or Documents, {"id", "text"(, "title")} dicts or (id, text) pairs.
    batch_size: rows per embedding batch (bert_jax.embed's default if None).
    stemmer: a PyStemmer language for BM25 terms (needs PyStemmer), default none.
    progress: show bert_jax.embed's progress line on stderr.
    """
    import bm25s
    import jax
    docs, source = as_documents(documents)
    check_chunking(chunk_tokens, chunk_overlap)
    bm25_settings = {**BM25_PARAMS, "lower": True, "token_pattern": BM25_TOKEN_PATTERN,
                     "stopwords": BM25_STOPWORDS, "stemmer": stemmer or None}
    bm25_tokenizer = _bm25_tokenizer(bm25_settings)  # fails early on a missing PyStemmer
    path, loaded = _load_model(model)
    encoder, _, tokenizer = loaded
    defaults = folder_defaults(path, encoder.config.max_length)
    specials = tokenizer.num_special_tokens()
    if chunk_tokens + specials > defaults["max_length"]:
      raise SearchError(f"chunk_tokens={chunk_tokens} does not fit the model's max_length {defaults['max_length']} "
                        f"with its {specials} special tokens: at most {defaults['max_length'] - specials}")
    chunks = chunk_documents(tokenizer, docs, chunk_tokens, chunk_overlap)
    titles = {d.id: d.title for d in docs if d.title}
    texts = [indexed_text(c, titles.get(c.doc)) for c in chunks]

    tokens = bm25_tokenizer.tokenize(texts, update_vocab=True, return_as="tuple", show_progress=False)
    bm25 = bm25s.BM25(**BM25_PARAMS)
    # A copy of the vocabulary: bm25s keeps the dict it is given, and the tokenizer's grows at query time.
    bm25.index(bm25s.tokenization.Tokenized(ids=tokens.ids, vocab=dict(tokens.vocab)), show_progress=False)

    vectors = embed.embed_texts(loaded, texts, pooling=defaults["pooling"], normalize=True,
                                max_length=defaults["max_length"], batch_size=batch_size, progress=progress)
    vectors = normalize_rows(vectors)  # cosine is a dot product from here on
    info = {
        "format": INDEX_FORMAT,
        "model": {"path": path, "pooling": defaults["pooling"], "max_length": defaults["max_length"],
                  "hidden_size": int(vectors.shape[1])},
        "settings": {"chunk_tokens": chunk_tokens, "chunk_overlap": chunk_overlap, "bm25": bm25_settings},
        "counts": {"documents": len(docs), "chunks": len(chunks),
                   "chunked_documents": len({c.doc for c in chunks if c.index > 0})},
        "created": {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "documents": source,
            "documents_sha256": file_sha256(source) if source != "<memory>" else None,
            "bert_jax": _version(), "bm25s": bm25s.__version__, "jax": jax.__version__,
            "python": platform.python_version(),
        },
    }
    return cls(chunks=chunks, titles=titles, embeddings=vectors, bm25=bm25, bm25_tokenizer=bm25_tokenizer,
               info=info, model=loaded)

  # -- saving and loading ---------------------------------------------------------

  def save(self, folder: str) -> None:
    """Writes the index into a temporary folder beside `folder`, then renames it into place.

    An existing index at `folder` is replaced only once the new one is
    complete; on any error it is left as it was. A non-empty folder that is
    not an index is refused, never deleted.
    """
    folder = os.fspath(folder)
    check_index_target(folder)
    parent, name = os.path.split(os.path.abspath(folder))
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}.tmp-")
    try:
      umask = os.umask(0)
      os.umask(umask)
      os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make the renamed index private
      self._write(tmp)
      fileio.replace_folder(tmp, os.path.abspath(folder))
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise

  def _write(self, folder: str) -> None:
    with open(os.path.join(folder, "chunks.jsonl"), "w", encoding="utf-8") as f:
      for c in self.chunks:
        record = {"doc": c.doc, "chunk": c.index, "span": [c.start, c.end], "text": c.text}
        if c.doc in self.titles:
          record["title"] = self.titles[c.doc]
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
    np.save(os.path.join(folder, "embeddings.npy"), self.embeddings.astype(np.float32, copy=False))
    bm25_dir = os.path.join(folder, "bm25")
    self.bm25.save(bm25_dir, show_progress=False)
    # The tokenizer's vocabulary and stopwords beside the index, as bm25s saves them; its
    # splitter, case and stemmer are settings in index.json.
    self.bm25_tokenizer.save_vocab(bm25_dir)
    self.bm25_tokenizer.save_stopwords(bm25_dir)
    # index.json last: a folder without it is never taken for an index.
    with open(os.path.join(folder, "index.json"), "w", encoding="utf-8") as f:
      json.dump(self.info, f, indent=2, ensure_ascii=False)
      f.write("\n")

  @classmethod
  def load(cls, folder: str, model=None) -> HybridIndex:
    """An index written by `save`.

    model: None loads the folder recorded in index.json when a query first
      needs the encoder; a folder or (model, params, tokenizer) tuple overrides it.
    """
    import bm25s
    folder = os.fspath(folder)
    info_path = os.path.join(folder, "index.json")
    if not os.path.isfile(info_path):
      raise SearchError(f"index {folder}: not a bert_jax.search index (no index.json)")
    try:
      with open(info_path, encoding="utf-8") as f:
        info = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise SearchError(f"{info_path}: not valid JSON ({e})") from e
    if info.get("format") != INDEX_FORMAT:
      raise SearchError(f"{info_path}: format {info.get('format')!r}, expected {INDEX_FORMAT!r}")
    chunks, titles = [], {}
    chunks_path = os.path.join(folder, "chunks.jsonl")
    for number, line in numbered_lines(chunks_path, "chunks"):
      record = json_object(line, f"{chunks_path}:{number}")
      try:
        chunks.append(Chunk(record["doc"], record["chunk"], *record["span"], record["text"]))
      except (KeyError, TypeError) as e:
        raise SearchError(f"{chunks_path}:{number}: not a chunk record ({e})") from e
      if "title" in record:
        titles[record["doc"]] = record["title"]
    embeddings = np.load(os.path.join(folder, "embeddings.npy"))
    if embeddings.dtype != np.float32 or embeddings.shape != (len(chunks), info["model"]["hidden_size"]):
      raise SearchError(f"index {folder}: embeddings.npy is {embeddings.dtype} {embeddings.shape}, "
                        f"expected float32 ({len(chunks)}, {info['model']['hidden_size']})")
    bm25_dir = os.path.join(folder, "bm25")
    bm25 = bm25s.BM25.load(bm25_dir, show_progress=False)
    if bm25.scores["num_docs"] != len(chunks):
      raise SearchError(f"index {folder}: the BM25 index has {bm25.scores['num_docs']} chunks, "
                        f"chunks.jsonl {len(chunks)}")
    bm25_tokenizer = _bm25_tokenizer({**info["settings"]["bm25"], "stopwords": []})
    bm25_tokenizer.load_vocab(bm25_dir)
    bm25_tokenizer.load_stopwords(bm25_dir)
    index = cls(chunks=chunks, titles=titles, embeddings=embeddings, bm25=bm25, bm25_tokenizer=bm25_tokenizer,
                info=info)
    if model is not None:
      index._model = _load_model(model)[1]
    return index

  # -- searching ------------------------------------------------------------------

  def _encoder(self) -> tuple:
    if self._model is None:
      path = self.info["model"]["path"]
      if path is None:
        raise SearchError("this index was built from a loaded model: pass model= to HybridIndex.load")
      if not os.path.isdir(path):
        raise SearchError(f"the index's model {path} is not a folder any more: pass another (--model)")
      self._model = embed.load(path)
    encoder = self._model[0]
    if encoder.config.hidden_size != self.embeddings.shape[1]:
      raise SearchError(f"the model's hidden size {encoder.config.hidden_size} is not the index's "
                        f"{self.embeddings.shape[1]}: queries must be embedded with the index's model")
    return self._model

  def bm25_scores(self, texts: Sequence[str]) -> np.ndarray:
    """float32 [queries, docs]: each document's best BM25 chunk score (0: no shared term)."""
    ids = self.bm25_tokenizer.tokenize(list(texts), update_vocab=False, return_as="ids", show_progress=False)
    empty = self.bm25_tokenizer.word_to_id.get("")
    scores = np.zeros((len(ids), len(self.chunks)), np.float32)
    for row, query in enumerate(ids):
      # The empty token stands for "no words" in bm25s; as a query term it would match empty chunks.
      query = [t for t in query if t != empty]
      if query:
        scores[row] = self.bm25.get_scores_from_ids(query)
    return doc_max(scores, self.doc_starts)

  def dense_scores(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
    """float32 [queries, docs]: each document's best cosine between the query and a chunk."""
    settings = self.info["model"]
    vectors = embed.embed_texts(self._encoder(), list(texts), pooling=settings["pooling"], normalize=True,
                                max_length=settings["max_length"], batch_size=batch_size)
    vectors = normalize_rows(vectors)
    out = np.zeros((len(texts), len(self.doc_ids)), np.float32)
    block = max(1, SIMILARITY_BLOCK // max(len(self.chunks), 1))
    for start in range(0, len(texts), block):
      out[start:start + block] = doc_max(vectors[start:start + block] @ self.embeddings.T, self.doc_starts)
    return out

  def rankings(self, texts: Sequence[str], depth: int, modes: Iterable[str] = ("bm25", "dense"),
               batch_size: int | None = None) -> dict[str, list[list[tuple[str, float]]]]:
    """{"bm25" / "dense": per query, up to `depth` (doc_id, score), best first}.

    BM25 lists only documents sharing a term with the query.
    """
    out = {}
    for mode in modes:
      scores = self.bm25_scores(texts) if mode == "bm25" else self.dense_scores(texts, batch_size)
      out[mode] = [[(self.doc_ids[i], float(row[i])) for i in top_documents(row, depth, mode == "bm25")]
                   for row in scores]
    return out

  def search(self, queries: str | Sequence[str], k: int = DEFAULT_K, mode: str = "hybrid", *,
             candidates: int = DEFAULT_CANDIDATES, rrf_k: float = DEFAULT_RRF_K,
             batch_size: int | None = None) -> list[list[tuple[str, float]]]:
    """Per query, up to k (doc_id, score), best first.

    mode: "bm25" (BM25 score), "dense" (cosine) or "hybrid" (RRF over each
      ranking's top `candidates` documents, score = sum 1 / (rrf_k + rank)).
    """
    texts = [queries] if isinstance(queries, str) else list(queries)
    _check_search(k, mode, candidates, rrf_k)
    if mode != "hybrid":
      return self.rankings(texts, k, [mode], batch_size)[mode]
    ranked = self.rankings(texts, candidates, ("bm25", "dense"), batch_size)
    return [fuse(b, d, rrf_k)[:k] for b, d in zip(ranked["bm25"], ranked["dense"])]

  def evaluate(self, queries: Sequence[Query], k: int = DEFAULT_K, *, candidates: int = DEFAULT_CANDIDATES,
               rrf_k: float = DEFAULT_RRF_K, batch_size: int | None = None) -> dict:
    """{"metrics": {mode: {metric: mean}}, "queries", "unknown_relevant", ...} for bm25, dense, hybrid.

    Each query is embedded and BM25-scored once; the three modes share those rankings.
    """
    _check_search(k, "hybrid", candidates, rrf_k)
    for q in queries:
      if not q.relevant:
        raise SearchError(f"{q.source or q.id}: query {q.id!r} lists no relevant document ids")
    texts = [q.text for q in queries]
    relevant = [q.relevant for q in queries]
    cut = max(k, 5)
    ranked = self.rankings(texts, max(cut, candidates), ("bm25", "dense"), batch_size)
    ids = {mode: [[doc for doc, _ in r[:cut]] for r in ranked[mode]] for mode in ("bm25", "dense")}
    ids["hybrid"] = [[doc for doc, _ in fuse(b[:candidates], d[:candidates], rrf_k)[:cut]]
                     for b, d in zip(ranked["bm25"], ranked["dense"])]
    known = set(self.doc_ids)
    return {
        "metrics": {mode: score_rankings(ids[mode], relevant, k) for mode in ("bm25", "dense", "hybrid")},
        "queries": len(queries),
        "documents": len(self.doc_ids),
        "chunks": len(self.chunks),
        "unknown_relevant": sum(doc not in known for rel in relevant for doc in rel),
        "k": k, "candidates": candidates, "rrf_k": rrf_k,
    }


def _check_search(k: int, mode: str, candidates: int, rrf_k: float) -> None:
  if mode not in MODES:
    raise SearchError(f"mode={mode!r}: must be one of {', '.join(MODES)}")
  if not isinstance(k, int) or k < 1:
    raise SearchError(f"k={k}: must be an integer >= 1")
  if mode == "hybrid" and (not isinstance(candidates, int) or candidates < k):
    raise SearchError(f"candidates={candidates}: must be an integer >= k={k} (each ranking's top "
                      "`candidates` documents are fused)")
  if rrf_k < 0:
    raise SearchError(f"rrf_k={rrf_k}: must be >= 0")


def _version() -> str:
  import bert_jax
  return bert_jax.__version__
