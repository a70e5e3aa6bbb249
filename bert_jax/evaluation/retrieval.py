"""Retrieval scores with binary relevance: recall@k, MRR, nDCG@k, as pytrec_eval / BEIR / MS MARCO.

Every function takes ranked_ids [queries][ranked] (best first) and relevant
[queries] (the relevant ids of each query, none empty) and averages over queries.

`text_vector_retrieval` scores an alignment both ways (texts -> the vectors they name,
vectors -> their texts) from embeddings: whole splits rank every candidate, so it works
from each query's rank of its first relevant candidate (`first_relevant_ranks`) in numpy,
which gives what `recall_at_k` and `mrr` give for the full rankings.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def _check_retrieval(ranked_ids, relevant, k) -> list[set]:
  """Validates the arguments; returns the relevance collections as sets."""
  if len(ranked_ids) != len(relevant):
    raise ValueError(f"{len(ranked_ids)} ranked lists but {len(relevant)} relevance sets")
  if not ranked_ids:
    raise ValueError("no queries to score")
  if k is not None and k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  for i, rel in enumerate(relevant):
    # Every score here is undefined (or meaningless) for a query nothing is relevant to.
    if not rel:
      raise ValueError(f"query {i} has no relevant ids")
  return [set(rel) for rel in relevant]


def _top_hits(ranked: Sequence[Hashable], rel: set, k: int | None) -> list[bool]:
  """[min(k, len(ranked))] whether each of the top k ids is relevant; a repeated id counts only the first time."""
  seen, hits = set(), []
  for doc in ranked[:k]:
    hits.append(doc in rel and doc not in seen)
    seen.add(doc)
  return hits


def recall_at_k(ranked_ids: Sequence[Sequence[Hashable]], relevant: Sequence[set], k: int) -> float:
  """Recall@k: |relevant within the top k| / |relevant| per query, averaged over queries.

  As `recall_k` in BEIR / pytrec_eval's recall_k (the denominator is the full
  relevant set, not min(k, |relevant|)).

  Args:
    ranked_ids: [queries][ranked] ids, best first.
    relevant: [queries] set of relevant ids; none may be empty.
    k: cutoff, >= 1.
  """
  relevant = _check_retrieval(ranked_ids, relevant, k)
  return float(np.mean([sum(_top_hits(ranked, rel, k)) / len(rel) for ranked, rel in zip(ranked_ids, relevant)]))


def mrr(ranked_ids: Sequence[Sequence[Hashable]], relevant: Sequence[set], k: int | None = None) -> float:
  """Mean reciprocal rank: 1 / (1-based rank of the first relevant id), 0 if none in the top k; as MRR@k of MS MARCO.

  Args:
    ranked_ids: [queries][ranked] ids, best first.
    relevant: [queries] set of relevant ids; none may be empty.
    k: cutoff, >= 1; None looks at the whole ranking.
  """
  relevant = _check_retrieval(ranked_ids, relevant, k)
  scores = []
  for ranked, rel in zip(ranked_ids, relevant):
    hits = _top_hits(ranked, rel, k)
    scores.append(1.0 / (hits.index(True) + 1) if any(hits) else 0.0)
  return float(np.mean(scores))


def ndcg_at_k(ranked_ids: Sequence[Sequence[Hashable]], relevant: Sequence[set], k: int) -> float:
  """NDCG@k with binary gains and log2 discount; as pytrec_eval's ndcg_cut_k.

  DCG sums 1 / log2(r + 1) over the 1-based ranks r <= k holding a relevant
  id; it is divided by the DCG of the ideal ranking, which puts
  min(k, |relevant|) relevant ids first. Averaged over queries.

  Args:
    ranked_ids: [queries][ranked] ids, best first.
    relevant: [queries] set of relevant ids; none may be empty.
    k: cutoff, >= 1.
  """
  relevant = _check_retrieval(ranked_ids, relevant, k)
  discounts = 1.0 / np.log2(np.arange(2, k + 2))  # [k] for ranks 1..k.
  scores = []
  for ranked, rel in zip(ranked_ids, relevant):
    hits = np.asarray(_top_hits(ranked, rel, k), dtype=np.float64)
    dcg = float(hits @ discounts[:len(hits)])
    ideal = float(discounts[:min(k, len(rel))].sum())
    scores.append(dcg / ideal)
  return float(np.mean(scores))


# Texts <-> the vectors they name (alignment to a fixed tower) ------------------------------------

def first_relevant_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
  """int64 [Q]: the 1-based rank of each query's first relevant candidate.

  Candidates are ordered by descending score, ties by index (as a stable sort of -scores), so
  the rank equals `ranked.index(first relevant) + 1` of that ranking.

  Args:
    scores: float [Q, C].
    relevant: bool [Q, C]; every query needs at least one relevant candidate.
  """
  scores, relevant = np.asarray(scores), np.asarray(relevant, bool)
  if scores.shape != relevant.shape or scores.ndim != 2:
    raise ValueError(f"scores {scores.shape} and relevant {relevant.shape}: expected the same [queries, candidates]")
  empty = ~relevant.any(1)
  if empty.any():
    raise ValueError(f"query {int(np.argmax(empty))} has no relevant candidate")
  best = np.where(relevant, scores, -np.inf).max(1, keepdims=True)   # [Q, 1] the best relevant score
  at_best = scores == best
  first = np.argmax(relevant & at_best, axis=1)[:, None]              # [Q, 1] its lowest index
  ahead = (scores > best) | (at_best & (np.arange(scores.shape[1])[None] < first))
  return 1 + ahead.sum(1)


def _rank_metrics(ranks: np.ndarray, prefix: str, ks) -> dict[str, float]:
  out = {f"{prefix}_recall@{k}": float(np.mean(ranks <= k)) for k in ks}
  out[f"{prefix}_mrr"] = float(np.mean(1.0 / ranks))
  return out


def text_vector_retrieval(text_embeddings: np.ndarray, text_rows: np.ndarray, vectors: np.ndarray,
                          ks: Sequence[int] = (1, 5, 10), chunk: int = 512) -> dict[str, float]:
  """Recall@k and MRR of retrieval by cosine both ways between texts and the vectors they name.

  text -> vector: each text ranks the distinct rows its split names (`vectors[unique(text_rows)]`);
  the one it names is relevant. vector -> text: each of those rows ranks all texts of the split;
  it counts as found at the first of its texts (several texts may name one row, as captions
  do), so recall@k is "any of its texts in the top k", as `recall_at_k` over the texts' row ids.
  `mean_mrr` averages the two MRRs.

  Args:
    text_embeddings: float [T, D].
    text_rows: int [T], the row of `vectors` each text names.
    vectors: float [N, D], the fixed tower's embeddings (rows not named are not candidates).
    ks: the recall cutoffs.
    chunk: queries scored at once (memory: chunk x candidates floats).
  Returns:
    {"text_to_vector_recall@k", "text_to_vector_mrr", "vector_to_text_recall@k", "vector_to_text_mrr",
     "mean_mrr"}.
  """
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  texts = unit(np.asarray(text_embeddings, np.float32))
  rows = np.asarray(text_rows)
  if rows.shape != (len(texts),):
    raise ValueError(f"text_rows {rows.shape}: expected one row index per text ({len(texts)})")
  if not len(texts):
    raise ValueError("no texts to score")
  named, owner = np.unique(rows, return_inverse=True)          # [U] rows named, [T] each text's position in them
  candidates = unit(np.asarray(vectors, np.float32)[named])    # [U, D]
  to_vector = np.concatenate([
      first_relevant_ranks(texts[i:i + chunk] @ candidates.T, owner[i:i + chunk, None] == np.arange(len(named)))
      for i in range(0, len(texts), chunk)])
  to_text = np.concatenate([
      first_relevant_ranks(candidates[i:i + chunk] @ texts.T, np.arange(i, min(i + chunk, len(named)))[:, None]
                           == owner[None])
      for i in range(0, len(named), chunk)])
  out = {**_rank_metrics(to_vector, "text_to_vector", ks), **_rank_metrics(to_text, "vector_to_text", ks)}
  out["mean_mrr"] = (out["text_to_vector_mrr"] + out["vector_to_text_mrr"]) / 2
  return out
