"""Re-rank candidate passages with a cross-encoder: `python -m bert_jax.rerank`.

    python -m bert_jax.rerank --model=WORKDIR/best --input=candidates.jsonl --output=ranked.jsonl [--top_k=10]

Input: JSON lines, one query per line, candidates as strings or objects:

    {"id": "q1", "query": "...", "passages": ["...", {"id": "d7", "text": "..."}]}

Output: the same lines with `passages` reordered by descending score, each as
{"id" (given, or the candidate's index), "text", "score"}, cut to --top_k.
The model is a bert_jax checkpoint with a one-output classification head (as
`configs/finetune.py:rerank` writes it) or a Hugging Face cross-encoder folder as
it is (a *ForSequenceClassification with one label, e.g. the ms-marco MiniLM
re-rankers); pairs are batched in length order so each batch pads to a small bucket, its
rows split over every device (of every process: the flags of bert_jax.embed.processes;
process 0 writes the output).
Scores are the head's logit, or its sigmoid where the folder is a sentence-transformers
CrossEncoder (its `activation_fn`, sigmoid by default for one label) — `--activation`
chooses otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np

from bert_jax import sharding
from bert_jax.data import batching
from bert_jax.embed import processes
from bert_jax.runtime import fileio

# Pairs per batch and device unless batch_size says otherwise.
BATCH_PER_DEVICE = 64


def read_candidates(path: str) -> list[dict]:
  """[{"id", "query", "passages": [{"id", "text"}]}] with errors naming the line."""
  from bert_jax.data.finetune import read_json_lines
  out = []
  for number, row in read_json_lines(path):
    where = f"{path}:{number}"
    if not isinstance(row.get("query"), str) or not row["query"].strip():
      raise ValueError(f"{where}: expected an object with a non-empty string 'query'")
    passages = row.get("passages")
    if not isinstance(passages, list) or not passages:
      raise ValueError(f"{where}: 'passages' must be a non-empty list")
    clean = []
    for i, p in enumerate(passages):
      if isinstance(p, str):
        p = {"id": i, "text": p}
      if not isinstance(p, dict) or not isinstance(p.get("text"), str) or not p["text"].strip():
        raise ValueError(f"{where}: passages[{i}] must be a non-empty string or an object with 'text'")
      clean.append({"id": p.get("id", i), "text": p["text"]})
    out.append({**row, "passages": clean})
  return out


ACTIVATIONS = ("identity", "sigmoid")


def _score(logits: jax.Array, sigmoid: bool) -> jax.Array:
  return jax.nn.sigmoid(logits) if sigmoid else logits


def folder_activation(path: str) -> str:
  """The score a folder's own tools report: bert_jax folders the logit; a Hugging Face cross-encoder
  folder what sentence-transformers' CrossEncoder applies (config.json's `sentence_transformers.activation_fn`,
  or the older `sbert_ce_default_activation_function`; sigmoid when it names none)."""
  from bert_jax.convert.pretrained import META_FILE
  if os.path.isfile(os.path.join(path, META_FILE)):
    return "identity"
  with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
    config = json.load(f)
  named = ((config.get("sentence_transformers") or {}).get("activation_fn")
           or config.get("sbert_ce_default_activation_function") or "Sigmoid")
  return "identity" if named.rsplit(".", 1)[-1] == "Identity" else "sigmoid"


class Reranker:
  """Scores (query, passage) pairs with a cross-encoder checkpoint, on every device.

  batch_size: pairs per batch (default BATCH_PER_DEVICE per device), rounded up to a
  multiple of the devices; each process feeds the rows of its own devices.
  """

  def __init__(self, path: str, *, max_length: int | None = None, batch_size: int | None = None,
               dtype: str | None = None, activation: str = "auto"):
    from bert_jax.data.tokenizers import check_fits, load_tokenizer
    from bert_jax.convert.pretrained import META_FILE, from_pretrained
    from bert_jax.convert.sentence_transformers import default_max_length
    try:
      model, params = from_pretrained(path, head="classification", **({"dtype": dtype} if dtype else {}))
    except KeyError as e:  # a folder of an encoder or another head: no scores to give
      raise ValueError(f"{path} is not a cross-encoder: it has no sequence-classification head to score pairs "
                       f"with ({e.args[0] if e.args else e}); fine-tune one with configs/finetune.py:rerank") from None
    if model.config.num_labels != 1:
      raise ValueError(f"{path}: the classification head has {model.config.num_labels} outputs; a re-ranker has 1")
    if batch_size is not None and batch_size < 1:
      raise ValueError(f"--batch_size={batch_size}: must be >= 1")
    self.mesh = sharding.data_parallel_mesh()
    self.shards = sharding.batch_shards(self.mesh)
    self.model, self.batch_size = model, batch_size or BATCH_PER_DEVICE * self.shards
    self.params = sharding.replicate(params, self.mesh)
    self.tokenizer = load_tokenizer(path)
    check_fits(self.tokenizer, model.config.vocab_size)
    saved = {}
    if os.path.isfile(os.path.join(path, META_FILE)):
      with open(os.path.join(path, META_FILE)) as f:
        saved = json.load(f).get("finetune", {})
    limit = model.config.max_length  # -1: no position table (relative positions)
    self.max_length = max_length or saved.get("max_length") or default_max_length(limit)
    if 0 <= limit < self.max_length:  # positions past the table would be read clamped: wrong scores
      source = "--max_length" if max_length else f"max_length in {os.path.join(path, META_FILE)}"
      raise ValueError(f"{source}={self.max_length} is longer than the model allows ({model.config.max_length} "
                       f"tokens in {path})")
    self.activation = folder_activation(path) if activation == "auto" else activation
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"--activation={activation!r}: expected auto or one of {ACTIVATIONS}")
    sigmoid = self.activation == "sigmoid"
    # Scores come back whole to every process ([batch] floats: a cheap gather), as predict_split fetches them.
    self._apply = jax.jit(lambda params, batch: _score(self.model.apply(
        {"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits[:, 0],
        sigmoid), out_shardings=jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec()))

  def _put(self, arrays: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """A batch (every process holds all of it) split by rows over the mesh, each process placing its own rows."""
    names = list(arrays)
    rows = len(arrays[names[0]])
    placed = sharding.shard_rows(lambda start, stop: tuple(arrays[k][start:stop] for k in names), rows, self.mesh)
    return dict(zip(names, placed))

  def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
    """[n] scores of the pairs (queries[i], passages[i]), batched in length order like every evaluation."""
    arrays = self.tokenizer.batch(list(queries), list(passages), max_length=self.max_length)
    lengths = arrays["attention_mask"].sum(1).astype(np.int32)
    dataset = batching.Dataset(arrays, tuple(arrays), lengths, "<pairs>")
    batch = -(-min(self.batch_size, len(lengths)) // self.shards) * self.shards  # rows split evenly
    return batching.predict_split(lambda p, b: {"scores": self._apply(p, b)}, self.params, dataset, batch,
                                  (), put=self._put)["scores"]

  def rerank(self, rows: list[dict], top_k: int | None = None) -> list[dict]:
    pairs = [(r["query"], p["text"], i, j) for i, r in enumerate(rows) for j, p in enumerate(r["passages"])]
    scores = self.score([q for q, *_ in pairs], [t for _, t, *_ in pairs])
    out = [dict(r, passages=[]) for r in rows]
    for (_, _, i, j), s in zip(pairs, scores):
      out[i]["passages"].append({**rows[i]["passages"][j], "score": float(s)})
    for row in out:
      row["passages"].sort(key=lambda p: -p["score"])
      if top_k:
        row["passages"] = row["passages"][:top_k]
    return out


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bert_jax.rerank", description=__doc__.split("\n")[0])
  parser.add_argument("--model", required=True, help="cross-encoder checkpoint folder")
  parser.add_argument("--input", required=True, help="JSON lines: query + passages")
  parser.add_argument("--output", required=True, help="JSON lines written here (- for stdout)")
  parser.add_argument("--top_k", type=int, default=None, help="keep the best k passages per query")
  parser.add_argument("--max_length", type=int, default=None, help="tokens per pair (default: the training length)")
  parser.add_argument("--batch_size", type=int, default=None,
                      help=f"pairs per batch (default: {BATCH_PER_DEVICE} per device)")
  parser.add_argument("--dtype", default=None, help="compute dtype, e.g. bfloat16")
  parser.add_argument("--activation", default="auto", choices=("auto", *ACTIVATIONS),
                      help="score = logit (identity) or its sigmoid; auto: the folder's own (see the docstring)")
  processes.add_flags(parser)
  args = parser.parse_args(argv)
  with processes.errors_end_this_process():
    run(args)


def run(args: argparse.Namespace) -> None:
  """Reads, scores, and writes the output (process 0 of several)."""
  start = time.time()
  try:
    processes.initialize(args)
    rows = read_candidates(args.input)
    reranker = Reranker(args.model, max_length=args.max_length, batch_size=args.batch_size, dtype=args.dtype,
                        activation=args.activation)
    ranked = reranker.rerank(rows, args.top_k)
  except (ValueError, FileNotFoundError, KeyError) as e:
    raise SystemExit(f"error: {e}") from None
  if processes.writes():
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ranked)
    if args.output == "-":
      sys.stdout.write(text)
    else:
      fileio.write_atomic(args.output, text)
    pairs = sum(len(r["passages"]) for r in rows)
    print(f"re-ranked {len(rows)} queries ({pairs} pairs) in {time.time() - start:.1f} s", file=sys.stderr)
  processes.written(args.output)
