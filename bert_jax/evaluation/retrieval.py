"""Retrieval scores with binary relevance: recall@k, MRR, nDCG@k, as pytrec_eval / BEIR / MS MARCO.

Every function takes ranked_ids [queries][ranked] (best first) and relevant
[queries] (the relevant ids of each query, none empty) and averages over queries.
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
