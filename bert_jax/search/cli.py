"""`python -m bert_jax.search index|query|evaluate`: flags, the three commands, and their output files.

Each command checks its inputs (documents, queries, the index target, the
model folder) before the model is loaded; an --output file appears only
when complete. With several processes (bert_jax.embed.processes) every
process embeds its share of the rows and process 0 prints and writes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from bert_jax.embed import processes
from bert_jax.runtime import caches, fileio
from bert_jax.search.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS
from bert_jax.search.documents import Query, SearchError, read_documents, read_queries
from bert_jax.search.index import (DEFAULT_CANDIDATES, DEFAULT_K, MODES, HybridIndex, check_index_target,
                                   file_sha256)
from bert_jax.search.ranking import DEFAULT_RRF_K, metrics_table


def _write_output(path: str, text: str) -> None:
  """`text` to --output `path`, which a reader never sees half-written."""
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise SearchError(f"--output {path}: folder {folder} does not exist")
  fileio.write_atomic(path, text)


def _parser() -> argparse.ArgumentParser:
  from bert_jax import search  # the package docstring documents the commands
  parser = argparse.ArgumentParser(prog="python -m bert_jax.search", description=search.__doc__.split("\n")[0])
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
    processes.add_flags(p)
  return parser


def main(argv: Sequence[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  with processes.errors_end_this_process():
    try:
      processes.initialize(args, SearchError)
      {"index": _run_index, "query": _run_query, "evaluate": _run_evaluate}[args.command](args)
    except (FileNotFoundError, ValueError, KeyError) as e:  # SearchError, EmbedError are ValueErrors
      message = e.args[0] if isinstance(e, KeyError) and e.args else e
      raise SystemExit(f"bert_jax.search: error: {message}") from e
    processes.written(args.command)


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
                               documents_sha256=file_sha256(args.documents))
  if not processes.writes():
    return
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
  if not processes.writes():
    return
  if args.output:
    lines = [json.dumps({"id": q.id, "query": q.text, "mode": args.mode,
                         "results": [{"rank": r, "doc": doc, "score": score}
                                     for r, (doc, score) in enumerate(ranked, 1)]}, ensure_ascii=False)
             for q, ranked in zip(queries, results)]
    _write_output(args.output, "".join(line + "\n" for line in lines))
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
  if not processes.writes():
    return
  if report["unknown_relevant"]:
    print(f"warning: {report['unknown_relevant']} relevant ids are not documents of the index "
          "(counted as never retrieved)", file=sys.stderr)
  print(f"{report['queries']} queries, {report['documents']} documents ({report['chunks']} chunks), "
        f"k={args.k}, candidates={args.candidates}, rrf_k={args.rrf_k:g}\n")
  print(metrics_table(report["metrics"]))
  if args.output:
    report = {**report, "index": os.path.abspath(args.index), "queries_file": os.path.abspath(args.queries),
              "model": index.info["model"]}
    _write_output(args.output, json.dumps(report, indent=2) + "\n")
