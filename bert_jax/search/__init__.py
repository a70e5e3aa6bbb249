"""Hybrid retrieval: BM25 (bm25s) and dense (any bert_jax encoder) over one collection, fused by RRF.

    python -m bert_jax.search index --model=PATH --documents=FILE --index=DIR \
        [--chunk_tokens=200] [--chunk_overlap=50] [--batch_size=N] [--stemmer=LANG]
    python -m bert_jax.search query --index=DIR (--queries=FILE | --query="text" ...) \
        [--k=10] [--mode=hybrid|bm25|dense] [--candidates=100] [--rrf_k=60] [--output=results.jsonl]
    python -m bert_jax.search evaluate --index=DIR --queries=FILE [--k=10] [--candidates=100] \
        [--rrf_k=60] [--output=metrics.json]

Documents: JSONL, one {"id": ..., "text": ..., "title"?: ...} per line, or TSV
with the header `id<TAB>text` (a `title` column may be added; fields are
literal, never quoted). Ids are strings (JSON integers are accepted and turned
into strings) and must be unique; a bad row is a ValueError naming file:line.

Chunking: a document longer than chunk_tokens model tokens (its title's tokens
included) is split into windows of at most chunk_tokens tokens, cut where a
whitespace-separated word starts (found from the model tokenizer's character
offsets), neighbours sharing at least chunk_overlap tokens (only a word longer
than half a window is cut inside). A title is put in front of every chunk of
its document ("title\\nchunk text"). BM25 and the dense encoder both index
chunks; a document scores the maximum over its chunks, so every ranking is of
documents, each at most once.

BM25: bm25s's Lucene variant (k1=1.5, b=0.75) over lower-cased words of 2+
word characters, English stopwords removed, no stemming unless --stemmer names
a PyStemmer language (PyStemmer is then needed to build and to query).

Query: BM25 ranks documents that share at least one term with the query; dense
ranks all documents by cosine between the L2-normalised query and chunk
vectors (pooling and max_length as the model folder's sentence-transformers
files say, see bert_jax.embed). hybrid fuses the two by reciprocal rank fusion,
sum over rankings of 1 / (rrf_k + rank), rank from 1, over each ranking's top
`candidates` documents. Scores printed are BM25 scores, cosines or RRF sums.

Evaluate: queries as JSONL {"id", "query", "relevant": [doc ids]} or TSV
`id<TAB>query<TAB>relevant` (comma-separated ids; an `id<TAB>query<TAB>relevant`
header line is skipped); prints recall@1, recall@5, recall@k, MRR@k and nDCG@k
(binary relevance) for bm25, dense and hybrid as one Markdown table.

The index folder DIR holds:
  index.json       format, model path, settings, counts, creation info
  chunks.jsonl     one {"doc", "chunk", "span": [start, end], "text"(, "title")} per chunk, in index order
  embeddings.npy   float32 [chunks, hidden], L2-normalised
  bm25/            bm25s's own save of the index, plus its tokenizer's vocabulary and stopwords
It is written to a temporary folder beside DIR and renamed into place when
complete: an existing index is replaced whole or not at all.

Python:
    index = HybridIndex.build(model_path, "docs.jsonl")   # or a list of {"id", "text"} dicts
    index.save("idx"); index = HybridIndex.load("idx")
    index.search(["who built the ark"], k=10, mode="hybrid")  # [[(doc_id, score), ...]]
    rrf([["a", "b"], ["b", "c"]], k=60)                      # [("b", ...), ("a", ...), ("c", ...)]

The metrics are bert_jax.evaluation's recall_at_k, mrr and ndcg_at_k (binary
relevance, as pytrec_eval / BEIR compute them).
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import uuid
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np

from bert_jax import embed
from bert_jax.runtime import caches, host_allocator
from bert_jax.evaluation import mrr, ndcg_at_k, recall_at_k

MODES = ("hybrid", "bm25", "dense")
DEFAULT_CHUNK_TOKENS = 200
DEFAULT_CHUNK_OVERLAP = 50
DEFAULT_RRF_K = 60
DEFAULT_CANDIDATES = 100
DEFAULT_K = 10
INDEX_FORMAT = "bert_jax.search/1"
# bm25s defaults, written out so that index.json records what was used.
BM25_PARAMS = {"k1": 1.5, "b": 0.75, "method": "lucene"}
BM25_TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's: words of 2+ word characters
BM25_STOPWORDS = "en"
# Documents tokenized per call when chunking (bounds the memory held by offsets).
TOKENIZE_BATCH = 1024
# Query x chunk similarities computed per block (float32 entries), bounding memory.
SIMILARITY_BLOCK = 1 << 24


class SearchError(ValueError):
  """Bad input or index: the message names the file and line, document or setting at fault."""


@dataclasses.dataclass(frozen=True)
class Document:
  id: str
  text: str
  title: str | None = None
  source: str = dataclasses.field(default="", compare=False)  # "file:line" for messages


@dataclasses.dataclass(frozen=True)
class Chunk:
  """A window of one document: text == document.text[start:end]."""
  doc: str
  index: int  # position among its document's chunks
  start: int
  end: int
  text: str


@dataclasses.dataclass(frozen=True)
class Query:
  id: str
  text: str
  relevant: tuple[str, ...] | None = None
  source: str = dataclasses.field(default="", compare=False)


# -- reading documents and queries ------------------------------------------------


def _read_lines(path: str, what: str) -> list[tuple[int, str]]:
  """(line number, line) for the non-blank lines of a UTF-8 file; SearchError names the bad line."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise SearchError(f"cannot read {what} {path}: {e.strerror or e}") from e
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise SearchError(f"{path}:{line}: not valid UTF-8 ({e.reason} at byte {e.start})") from e
  # Only "\n" ends a line: str.splitlines would also split inside a text on \x0b, U+2028, ...
  lines = [(n, line.removesuffix("\r")) for n, line in enumerate(text.removeprefix("\ufeff").split("\n"), 1)]
  lines = [(n, line) for n, line in lines if line.strip()]
  if not lines:
    raise SearchError(f"{what} {path} is empty")
  return lines


def _is_jsonl(path: str, first_line: str) -> bool:
  ext = os.path.splitext(path)[1].lower()
  if ext in (".jsonl", ".json", ".ndjson"):
    return True
  if ext in (".tsv", ".tab"):
    return False
  return first_line.lstrip().startswith("{")


def _json_object(line: str, where: str) -> dict:
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise SearchError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e
  if not isinstance(record, dict):
    raise SearchError(f"{where}: expected a JSON object, got {type(record).__name__}")
  return record


def _check_id(value: Any, where: str, field: str = "id") -> str:
  if value is None:
    raise SearchError(f"{where}: missing {field!r}")
  if isinstance(value, bool) or not isinstance(value, (str, int)):
    raise SearchError(f"{where}: {field!r} must be a string (or integer), got {type(value).__name__}")
  value = str(value)
  if not value.strip():
    raise SearchError(f"{where}: empty {field!r}")
  if any(c in value for c in "\t\n\r"):
    raise SearchError(f"{where}: {field!r} {value!r} contains a tab or line break")
  return value


def make_document(id: Any, text: Any, title: Any = None, where: str = "<document>") -> Document:
  """A checked Document; SearchError(`where`: ...) for a missing id, empty text, wrong types."""
  doc_id = _check_id(id, where)
  if text is None:
    raise SearchError(f"{where}: document {doc_id!r} has no 'text'")
  if not isinstance(text, str):
    raise SearchError(f"{where}: document {doc_id!r}: 'text' must be a string, got {type(text).__name__}")
  if not text.strip():
    raise SearchError(f"{where}: document {doc_id!r} has empty text")
  if title is not None and not isinstance(title, str):
    raise SearchError(f"{where}: document {doc_id!r}: 'title' must be a string, got {type(title).__name__}")
  return Document(doc_id, text, (title.strip() or None) if title is not None else None, where)


def _check_unique(items: Sequence, what: str) -> None:
  seen: dict[str, str] = {}
  for item in items:
    if item.id in seen:
      raise SearchError(f"{item.source}: duplicate {what} id {item.id!r} (first at {seen[item.id]})")
    seen[item.id] = item.source


def _tsv_header(path: str, number: int, line: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> list[str]:
  names = line.split("\t")
  unknown = [n for n in names if n not in allowed]
  missing = [n for n in required if n not in names]
  if unknown or missing or len(set(names)) != len(names):
    raise SearchError(f"{path}:{number}: TSV header must name the columns {' and '.join(required)} "
                      f"(optional: {', '.join(n for n in allowed if n not in required)}), tab-separated; "
                      f"got {line!r}")
  return names


def _tsv_row(path: str, number: int, line: str, names: list[str]) -> dict[str, str]:
  fields = line.split("\t")
  if len(fields) != len(names):
    raise SearchError(f"{path}:{number}: expected {len(names)} tab-separated fields ({', '.join(names)}), "
                      f"got {len(fields)}")
  return dict(zip(names, fields))


def read_documents(path: str) -> list[Document]:
  """Documents of a JSONL or TSV file (see the module docstring), checked, in file order."""
  path = os.fspath(path)
  lines = _read_lines(path, "documents")
  docs = []
  if _is_jsonl(path, lines[0][1]):
    for number, line in lines:
      where = f"{path}:{number}"
      record = _json_object(line, where)
      docs.append(make_document(record.get("id"), record.get("text"), record.get("title"), where))
  else:
    names = _tsv_header(path, *lines[0], allowed=("id", "text", "title"), required=("id", "text"))
    for number, line in lines[1:]:
      row = _tsv_row(path, number, line, names)
      docs.append(make_document(row["id"], row["text"], row.get("title") or None, f"{path}:{number}"))
  if not docs:
    raise SearchError(f"documents {path} has a header but no documents")
  _check_unique(docs, "document")
  return docs


def _as_documents(documents) -> tuple[list[Document], str]:
  """(documents, source): from a file path, or from Documents / dicts / (id, text) pairs."""
  if isinstance(documents, (str, os.PathLike)):
    return read_documents(documents), os.path.abspath(documents)
  docs = []
  for i, item in enumerate(documents):
    where = f"documents[{i}]"
    if isinstance(item, Document):
      docs.append(make_document(item.id, item.text, item.title, item.source or where))
    elif isinstance(item, dict):
      docs.append(make_document(item.get("id"), item.get("text"), item.get("title"), where))
    elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
      docs.append(make_document(*item, where=where))
    else:
      raise SearchError(f"{where}: expected a Document, a dict with 'id' and 'text', or an (id, text) pair")
  if not docs:
    raise SearchError("no documents to index")
  _check_unique(docs, "document")
  return docs, "<memory>"


def _relevant_ids(value: Any, where: str) -> tuple[str, ...]:
  if isinstance(value, (str, int)) and not isinstance(value, bool):
    value = [value]
  if not isinstance(value, list):
    raise SearchError(f"{where}: 'relevant' must be a list of document ids, got {type(value).__name__}")
  return tuple(dict.fromkeys(_check_id(v, where, "relevant") for v in value))


def read_queries(path: str, require_relevant: bool = False) -> list[Query]:
  """Queries of a JSONL or TSV file (see the module docstring), checked, in file order.

  require_relevant: every query must list at least one relevant document (evaluate).
  """
  path = os.fspath(path)
  lines = _read_lines(path, "queries")
  queries = []
  jsonl = _is_jsonl(path, lines[0][1])
  if not jsonl and lines[0][1].split("\t") in (["id", "query"], ["id", "query", "relevant"]):
    lines = lines[1:]
  for number, line in lines:
    where = f"{path}:{number}"
    if jsonl:
      record = _json_object(line, where)
      query_id, text, relevant = record.get("id"), record.get("query"), record.get("relevant")
      relevant = None if relevant is None else _relevant_ids(relevant, where)
    else:
      fields = line.split("\t")
      if len(fields) not in (2, 3):
        raise SearchError(f"{where}: expected 2 or 3 tab-separated fields (id, query[, relevant]), got {len(fields)}")
      query_id, text = fields[:2]
      relevant = None
      if len(fields) == 3:
        relevant = tuple(dict.fromkeys(_check_id(v.strip(), where, "relevant")
                                       for v in fields[2].split(",") if v.strip()))
    query_id = _check_id(query_id, where)
    if not isinstance(text, str) or not text.strip():
      raise SearchError(f"{where}: query {query_id!r} has no query text")
    if require_relevant and not relevant:
      raise SearchError(f"{where}: query {query_id!r} lists no relevant document ids")
    queries.append(Query(query_id, text, relevant, where))
  if not queries:
    raise SearchError(f"queries {path} has a header but no queries")
  _check_unique(queries, "query")
  return queries


# -- chunking ---------------------------------------------------------------------


def word_starts(text: str, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
  """bool [tokens]: token i begins a whitespace-separated word of `text`.

  offsets: (start, end) characters of each token. A token starts a word when
  it is the first one, when whitespace lies between it and the previous token,
  or when its own span begins with whitespace (byte-level / metaspace
  tokenizers may count the space into the token).
  """
  starts = np.zeros(len(offsets), bool)
  if len(offsets):
    starts[0] = True
  for i in range(1, len(offsets)):
    begin, previous_end = offsets[i][0], offsets[i - 1][1]
    gap = text[previous_end:begin] if begin > previous_end else ""
    starts[i] = any(c.isspace() for c in gap) or text[begin:begin + 1].isspace()
  return starts


def token_windows(starts: np.ndarray, chunk_tokens: int, overlap: int) -> list[tuple[int, int]]:
  """Token windows [s, e) over a text whose word starts are `starts` (bool [tokens]).

  Each window has at most chunk_tokens tokens and ends just before a word start
  (or at the end); the next one begins at the last word start that leaves at
  least `overlap` tokens shared, or at the first word start after that if
  none does. Only a word longer than half a window is cut inside (a cut before
  it would leave a window of a few tokens).
  """
  n = len(starts)
  if n <= chunk_tokens:
    return [(0, n)]
  boundaries = np.flatnonzero(starts).tolist()  # sorted token indices where a word begins
  windows = []
  s = 0
  while True:
    e = min(s + chunk_tokens, n)
    if e < n:
      # The last word start in (s, e]: the window then ends with a whole word.
      i = bisect.bisect_right(boundaries, e) - 1
      if boundaries[i] > s + chunk_tokens // 2:
        e = boundaries[i]
    windows.append((s, e))
    if e == n:
      return windows
    i = bisect.bisect_right(boundaries, e - overlap) - 1
    if i >= 0 and boundaries[i] > s:
      s = boundaries[i]
    else:
      # No word start leaves `overlap` shared tokens and moves on: take the
      # first one after s (more overlap), or cut inside an over-long word.
      i = bisect.bisect_right(boundaries, s)
      s = boundaries[i] if i < len(boundaries) and boundaries[i] < e else max(s + 1, e - overlap)


def chunk_spans(text: str, offsets: Sequence[tuple[int, int]], chunk_tokens: int,
                overlap: int) -> list[tuple[int, int]]:
  """Character spans [start, end) of the chunks of one text (see token_windows).

  A text of at most chunk_tokens tokens is one chunk spanning all of it;
  otherwise each span runs from its first token's start to its last token's
  end, less any whitespace at either side.
  """
  if len(offsets) <= chunk_tokens:
    return [(0, len(text))]
  spans = []
  for s, e in token_windows(word_starts(text, offsets), chunk_tokens, overlap):
    start, end = offsets[s][0], offsets[e - 1][1]
    while start < end and text[start].isspace():
      start += 1
    while end > start and text[end - 1].isspace():
      end -= 1
    spans.append((start, end))
  return spans


def chunk_documents(tokenizer, documents: Sequence[Document], chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                    overlap: int = DEFAULT_CHUNK_OVERLAP) -> list[Chunk]:
  """Chunks of every document, in document order, with the model tokenizer's offsets.

  tokenizer: a bert_jax.data.tokenizers.Tokenizer (encode_batch gives offsets).
  A title's tokens count against chunk_tokens, since the title is embedded
  with every chunk; a title of more than half the window is refused.
  """
  _check_chunking(chunk_tokens, overlap)
  titles = [d.title for d in documents if d.title]
  title_tokens = {}
  for start in range(0, len(titles), TOKENIZE_BATCH):
    batch = titles[start:start + TOKENIZE_BATCH]
    for title, encoding in zip(batch, tokenizer.encode_batch(batch, add_special_tokens=False)):
      title_tokens[title] = len(encoding.ids)
  chunks = []
  for start in range(0, len(documents), TOKENIZE_BATCH):
    batch = documents[start:start + TOKENIZE_BATCH]
    encodings = tokenizer.encode_batch([d.text for d in batch], add_special_tokens=False)
    for doc, encoding in zip(batch, encodings):
      room = chunk_tokens
      if doc.title:
        room -= title_tokens[doc.title]
        if room < chunk_tokens - chunk_tokens // 2:
          raise SearchError(f"{doc.source or doc.id}: the title of document {doc.id!r} has "
                            f"{title_tokens[doc.title]} tokens, more than half of chunk_tokens={chunk_tokens}")
      # The overlap shrinks with the room a title leaves, keeping windows moving forward.
      spans = chunk_spans(doc.text, encoding.offsets, room, min(overlap, room - 1))
      chunks.extend(Chunk(doc.id, i, s, e, doc.text[s:e]) for i, (s, e) in enumerate(spans))
  return chunks


def _check_chunking(chunk_tokens: int, overlap: int) -> None:
  if not isinstance(chunk_tokens, int) or chunk_tokens < 2:
    raise SearchError(f"chunk_tokens={chunk_tokens}: must be an integer >= 2")
  if not isinstance(overlap, int) or not 0 <= overlap < chunk_tokens:
    raise SearchError(f"chunk_overlap={overlap}: must be an integer in [0, chunk_tokens={chunk_tokens})")


def _indexed_text(chunk: Chunk, title: str | None) -> str:
  """What BM25 and the encoder see for a chunk: the document's title gives each chunk its context."""
  return f"{title}\n{chunk.text}" if title else chunk.text


# -- ranking ----------------------------------------------------------------------


def rrf(rankings: Sequence[Sequence[Hashable]], k: float = DEFAULT_RRF_K) -> list[tuple[Hashable, float]]:
  """Reciprocal rank fusion: [(item, sum over rankings of 1 / (k + rank))], best first.

  rankings: each a sequence of distinct items, best first (rank 1). An item
  missing from a ranking gets nothing from it. Ties go to the item with the
  better single rank, then to the one seen first (ranking order, then rank).
  """
  if k < 0:
    raise ValueError(f"rrf k={k}: must be >= 0")
  scores: dict[Hashable, float] = {}
  best: dict[Hashable, int] = {}
  for r, ranking in enumerate(rankings):
    seen = set()
    for rank, item in enumerate(ranking, 1):
      if item in seen:
        raise ValueError(f"rankings[{r}] lists {item!r} twice")
      seen.add(item)
      scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
      best[item] = min(best.get(item, rank), rank)
  first = {item: i for i, item in enumerate(scores)}  # dicts keep insertion order
  order = sorted(scores, key=lambda item: (-scores[item], best[item], first[item]))
  return [(item, scores[item]) for item in order]


def doc_max(chunk_scores: np.ndarray, doc_starts: np.ndarray) -> np.ndarray:
  """[..., chunks] -> [..., docs]: each document's best chunk score.

  doc_starts: int [docs], the first chunk of each document; a document's
  chunks are contiguous and in document order.
  """
  return np.maximum.reduceat(chunk_scores, doc_starts, axis=-1)


def top_documents(scores: np.ndarray, n: int, positive_only: bool = False) -> np.ndarray:
  """Indices of the n best of scores [docs], best first; ties keep document order.

  positive_only: drop scores <= 0 (BM25: documents sharing no term with the query).
  """
  order = np.argsort(-scores, kind="stable")[:n]
  return order[scores[order] > 0] if positive_only else order


# -- metrics (binary relevance, from bert_jax.evaluation) ------------------------


def metric_names(k: int) -> list[str]:
  """Column names of an evaluation at cut-off k: recall@1, recall@5, recall@k, mrr@k, ndcg@k."""
  return [f"recall@{c}" for c in sorted({1, 5, k})] + [f"mrr@{k}", f"ndcg@{k}"]


def score_rankings(ranked: Sequence[Sequence[str]], relevant: Sequence[Iterable[str]], k: int) -> dict[str, float]:
  """Mean of each metric in metric_names(k) over queries (ranked[i] judged by relevant[i], never empty)."""
  ranked = [list(ids) for ids in ranked]
  relevant = [set(rel) for rel in relevant]
  scores = {f"recall@{cut}": recall_at_k(ranked, relevant, cut) for cut in sorted({1, 5, k})}
  scores[f"mrr@{k}"] = mrr(ranked, relevant, k)
  scores[f"ndcg@{k}"] = ndcg_at_k(ranked, relevant, k)
  return scores


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
  """Markdown: one row per metric, one column per mode."""
  modes = [m for m in ("bm25", "dense", "hybrid") if m in metrics]
  names = list(next(iter(metrics.values())))
  lines = ["| metric | " + " | ".join(modes) + " |", "|---|" + "---:|" * len(modes)]
  lines += [f"| {name} | " + " | ".join(f"{metrics[m][name]:.3f}" for m in modes) + " |" for name in names]
  return "\n".join(lines)


# -- the index --------------------------------------------------------------------


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


def _sha256(path: str) -> str:
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
    docs, source = _as_documents(documents)
    _check_chunking(chunk_tokens, chunk_overlap)
    bm25_settings = {**BM25_PARAMS, "lower": True, "token_pattern": BM25_TOKEN_PATTERN,
                     "stopwords": BM25_STOPWORDS, "stemmer": stemmer or None}
    bm25_tokenizer = _bm25_tokenizer(bm25_settings)  # fails early on a missing PyStemmer
    path, loaded = _load_model(model)
    encoder, _, tokenizer = loaded
    defaults = embed.folder_defaults(path, encoder.config.max_length)
    specials = tokenizer.num_special_tokens()
    if chunk_tokens + specials > defaults["max_length"]:
      raise SearchError(f"chunk_tokens={chunk_tokens} does not fit the model's max_length {defaults['max_length']} "
                        f"with its {specials} special tokens: at most {defaults['max_length'] - specials}")
    chunks = chunk_documents(tokenizer, docs, chunk_tokens, chunk_overlap)
    titles = {d.id: d.title for d in docs if d.title}
    texts = [_indexed_text(c, titles.get(c.doc)) for c in chunks]

    tokens = bm25_tokenizer.tokenize(texts, update_vocab=True, return_as="tuple", show_progress=False)
    bm25 = bm25s.BM25(**BM25_PARAMS)
    # A copy of the vocabulary: bm25s keeps the dict it is given, and the tokenizer's grows at query time.
    bm25.index(bm25s.tokenization.Tokenized(ids=tokens.ids, vocab=dict(tokens.vocab)), show_progress=False)

    vectors = embed.embed_texts(loaded, texts, pooling=defaults["pooling"], normalize=True,
                                max_length=defaults["max_length"], batch_size=batch_size, progress=progress)
    vectors = embed.normalize_rows(vectors)  # cosine is a dot product from here on
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
            "documents_sha256": _sha256(source) if source != "<memory>" else None,
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
      _swap_into_place(tmp, os.path.abspath(folder))
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
    for number, line in _read_lines(chunks_path, "chunks"):
      record = _json_object(line, f"{chunks_path}:{number}")
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
    vectors = embed.normalize_rows(vectors)
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
    return [_fuse(b, d, rrf_k)[:k] for b, d in zip(ranked["bm25"], ranked["dense"])]

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
    ids["hybrid"] = [[doc for doc, _ in _fuse(b[:candidates], d[:candidates], rrf_k)[:cut]]
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


def _fuse(bm25: list[tuple[str, float]], dense: list[tuple[str, float]], rrf_k: float) -> list[tuple[str, float]]:
  return rrf([[doc for doc, _ in bm25], [doc for doc, _ in dense]], rrf_k)


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


def _swap_into_place(tmp: str, folder: str) -> None:
  """Renames the complete folder `tmp` to `folder`, replacing an existing index only after that works."""
  if not os.path.lexists(folder):
    os.rename(tmp, folder)
    return
  # A directory cannot be renamed over a non-empty one: move the old index aside first,
  # and back if the second rename fails.
  parent, name = os.path.split(folder)
  old = os.path.join(parent, f".{name}.old-{uuid.uuid4().hex[:8]}")
  os.rename(folder, old)
  try:
    os.rename(tmp, folder)
  except BaseException:
    os.rename(old, folder)
    raise
  shutil.rmtree(old, ignore_errors=True)


def _version() -> str:
  import bert_jax
  return bert_jax.__version__


def _write_atomically(path: str, text: str) -> None:
  """`text` to a temporary file beside `path`, renamed over it only when complete."""
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise SearchError(f"--output {path}: folder {folder} does not exist")
  handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(handle, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


# -- command line -----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m bert_jax.search", description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)

  index = commands.add_parser("index", help="chunk, BM25-index and embed a document collection")
  index.add_argument("--model", required=True, help="Hugging Face or bert_jax model folder")
  index.add_argument("--documents", required=True, help="JSONL or TSV documents (see the module docstring)")
  index.add_argument("--index", required=True, help="index folder to write (replaced only when complete)")
  index.add_argument("--chunk_tokens", type=int, default=DEFAULT_CHUNK_TOKENS, help="model tokens per chunk")
  index.add_argument("--chunk_overlap", type=int, default=DEFAULT_CHUNK_OVERLAP,
                     help="tokens that neighbouring chunks share (at least)")
  index.add_argument("--batch_size", type=int, default=None, help="rows per embedding batch")
  index.add_argument("--stemmer", default=None, help="PyStemmer language for BM25 terms (needs PyStemmer)")

  def search_flags(p):
    p.add_argument("--index", required=True, help="index folder written by `index`")
    p.add_argument("--k", type=int, default=DEFAULT_K, help="documents per query")
    p.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES,
                   help="top documents of each ranking that hybrid fuses")
    p.add_argument("--rrf_k", type=float, default=DEFAULT_RRF_K, help="RRF constant: 1 / (rrf_k + rank)")
    p.add_argument("--model", default=None, help="model folder for queries (default: the index's)")
    p.add_argument("--batch_size", type=int, default=None, help="rows per embedding batch")

  query = commands.add_parser("query", help="rank documents for queries")
  search_flags(query)
  source = query.add_mutually_exclusive_group(required=True)
  source.add_argument("--queries", help="JSONL or TSV queries (relevant ids optional)")
  source.add_argument("--query", action="append", help="a query text (repeatable)")
  query.add_argument("--mode", choices=MODES, default="hybrid")
  query.add_argument("--output", default=None, help="JSONL results to write (default: print)")

  evaluate = commands.add_parser("evaluate", help="recall / MRR / nDCG of bm25, dense and hybrid")
  search_flags(evaluate)
  evaluate.add_argument("--queries", required=True, help="JSONL or TSV queries with relevant doc ids")
  evaluate.add_argument("--output", default=None, help="metrics.json to write")

  for p in (index, query, evaluate):
    p.add_argument("--compilation_cache", action=argparse.BooleanOptionalAction, default=True,
                   help=f"keep compiled programs in {caches.path('jax_cache')}")
  return parser


def main(argv: Sequence[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  try:
    {"index": _run_index, "query": _run_query, "evaluate": _run_evaluate}[args.command](args)
  except (FileNotFoundError, ValueError, KeyError) as e:  # SearchError, EmbedError are ValueErrors
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    raise SystemExit(f"bert_jax.search: error: {message}") from e


def _run_index(args: argparse.Namespace) -> None:
  """Checks the target, documents and model folder before the model is loaded."""
  check_index_target(args.index)
  docs = read_documents(args.documents)
  if not os.path.isdir(args.model):
    raise SearchError(f"--model {args.model}: not a folder")
  if args.compilation_cache:
    caches.enable_compilation_cache()
  index = HybridIndex.build(args.model, docs, chunk_tokens=args.chunk_tokens, chunk_overlap=args.chunk_overlap,
                            batch_size=args.batch_size, stemmer=args.stemmer, progress=True)
  index.info["created"].update(documents=os.path.abspath(args.documents),
                               documents_sha256=_sha256(args.documents))
  index.save(args.index)
  counts = index.info["counts"]
  print(f"indexed {counts['documents']:,} documents as {counts['chunks']:,} chunks "
        f"({counts['chunked_documents']:,} documents chunked) in {args.index}", file=sys.stderr)


def _open_index(args: argparse.Namespace) -> HybridIndex:
  if args.compilation_cache:
    caches.enable_compilation_cache()
  return HybridIndex.load(args.index, model=args.model)


def _run_query(args: argparse.Namespace) -> None:
  if args.queries:
    queries = read_queries(args.queries)
  else:
    queries = [Query(f"q{i}", text, None, f"--query #{i}") for i, text in enumerate(args.query, 1)]
    for q in queries:
      if not q.text.strip():
        raise SearchError(f"{q.source}: empty query")
  index = _open_index(args)
  results = index.search([q.text for q in queries], args.k, args.mode, candidates=args.candidates,
                         rrf_k=args.rrf_k, batch_size=args.batch_size)
  if args.output:
    lines = [json.dumps({"id": q.id, "query": q.text, "mode": args.mode,
                         "results": [{"rank": r, "doc": doc, "score": score}
                                     for r, (doc, score) in enumerate(ranked, 1)]}, ensure_ascii=False)
             for q, ranked in zip(queries, results)]
    _write_atomically(args.output, "".join(line + "\n" for line in lines))
    return
  for q, ranked in zip(queries, results):
    print(f"query {q.id}: {q.text}")
    for rank, (doc, score) in enumerate(ranked, 1):
      print(f"  {rank:3d}  {score:9.4f}  {doc}")
    if not ranked:
      print("  (no documents)")


def _run_evaluate(args: argparse.Namespace) -> None:
  queries = read_queries(args.queries, require_relevant=True)
  index = _open_index(args)
  report = index.evaluate(queries, args.k, candidates=args.candidates, rrf_k=args.rrf_k,
                          batch_size=args.batch_size)
  if report["unknown_relevant"]:
    print(f"warning: {report['unknown_relevant']} relevant ids are not documents of the index "
          "(counted as never retrieved)", file=sys.stderr)
  print(f"{report['queries']} queries, {report['documents']} documents ({report['chunks']} chunks), "
        f"k={args.k}, candidates={args.candidates}, rrf_k={args.rrf_k:g}\n")
  print(metrics_table(report["metrics"]))
  if args.output:
    report = {**report, "index": os.path.abspath(args.index), "queries_file": os.path.abspath(args.queries),
              "model": index.info["model"]}
    _write_atomically(args.output, json.dumps(report, indent=2) + "\n")
