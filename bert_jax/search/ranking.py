"""Rankings of documents: reciprocal rank fusion, a document's best chunk score, and the metrics.

rrf fuses rankings by the sum over rankings of 1 / (rrf_k + rank), rank from
1; hybrid search fuses the BM25 and the dense ranking this way. The metrics
are bert_jax.evaluation's recall_at_k, mrr and ndcg_at_k (binary relevance,
as pytrec_eval / BEIR compute them).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from bert_jax.evaluation import mrr, ndcg_at_k, recall_at_k

DEFAULT_RRF_K = 60


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


def fuse(bm25: list[tuple[str, float]], dense: list[tuple[str, float]], rrf_k: float) -> list[tuple[str, float]]:
  """RRF of a BM25 and a dense ranking, each [(doc_id, score)] best first."""
  return rrf([[doc for doc, _ in bm25], [doc for doc, _ in dense]], rrf_k)


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

