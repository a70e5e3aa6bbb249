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

Every device: documents and queries are embedded by bert_jax.embed, each
batch split over all devices. Each command also takes bert_jax.main's
--coordinator_address=HOST:PORT --num_processes=N --process_id=I (none on
TPU VMs and SLURM): every process reads the inputs and embeds its share of
the rows, and process 0 alone writes the index or --output and prints.

Python:
    index = HybridIndex.build(model_path, "docs.jsonl")   # or a list of {"id", "text"} dicts
    index.save("idx"); index = HybridIndex.load("idx")
    index.search(["who built the ark"], k=10, mode="hybrid")  # [[(doc_id, score), ...]]
    rrf([["a", "b"], ["b", "c"]], k=60)                      # [("b", ...), ("a", ...), ("c", ...)]

The metrics are bert_jax.evaluation's recall_at_k, mrr and ndcg_at_k (binary
relevance, as pytrec_eval / BEIR compute them).

Modules:
  documents  Document / Query records, reading the documents and queries files; SearchError
  chunking   documents into token windows cut at word starts (Chunk)
  ranking    rrf, a document's best chunk score, the metrics table
  index      HybridIndex: build, save, load, search, evaluate
  cli        the index / query / evaluate commands
  rerank     the cross-encoder re-ranker (`python -m bert_jax.rerank`)
"""

from bert_jax.search.cli import main
from bert_jax.search.documents import Document, Query, SearchError, read_documents, read_queries
from bert_jax.search.index import MODES, HybridIndex
from bert_jax.search.ranking import rrf

__all__ = ["MODES", "Document", "HybridIndex", "Query", "SearchError", "main", "read_documents", "read_queries",
           "rrf"]
