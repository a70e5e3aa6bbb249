"""Cross-encoder re-ranking (`rerank`): a (query, passage) scorer trained listwise or pointwise.

Data: JSON lines, one query per line:

    {"query": "...", "positives": ["..."], "negatives": ["...", "..."]}

(`positive` / `negative` as single strings also work), or a TSV/CSV/JSONL
table of rows `query`, `passage`, `label` (1 relevant, 0 not), grouped by query.

- listwise (default): each positive with the query's first group_size - 1
  negatives (cycled when there are fewer) forms a group; the loss is the cross
  entropy of the softmax over the group's scores with the positive as target.
- pointwise: every (query, passage) pair is a row with binary cross entropy.

Evaluation scores every candidate of every query and reports MRR@10,
nDCG@10 and recall@1 (bert_jax.evaluation). The scorer is a sequence
classification model with one output; `python -m bert_jax.rerank` applies it.
"""

from __future__ import annotations


import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import evaluation
from bert_jax.data.batching import Dataset
from bert_jax.data import finetune as finetune_data
from bert_jax.models.config import ModelConfig
from bert_jax.tasks.base import cross_entropy, example_count, forward, weighted_sum
from bert_jax.tasks.finetune.base import FinetuneTask, TaskObjective


def read_groups(path: str) -> list[dict]:
  """[{"query", "positives": [...], "negatives": [...], "line"}] from grouped JSONL or a flat table."""
  name = path[:-3] if path.endswith(".gz") else path
  if name.endswith((".jsonl", ".json")):
    rows = finetune_data.read_json_lines(path)
    if "passage" not in rows[0][1]:  # grouped lines; rows of query / passage / label are a table
      return _grouped_jsonl(path, rows)
  table = finetune_data.read_table(path, text_columns=("query",), pair_column="passage", label_column="label")
  if table.pairs is None:
    raise ValueError(f"{path}: expected columns query, passage, label (or grouped JSON lines)")
  groups: dict[str, dict] = {}
  for i, (query, passage, label) in enumerate(zip(table.sentences, table.pairs, table.labels)):
    score = finetune_data.parse_score(label, table.where(i))
    group = groups.setdefault(query, {"query": query, "positives": [], "negatives": [], "line": table.line_numbers[i]})
    group["positives" if score > 0 else "negatives"].append(passage)
  return list(groups.values())


def _grouped_jsonl(path: str, rows: list[tuple[int, dict]]) -> list[dict]:
  groups = []
  for number, row in rows:
    where = f"{path}:{number}"
    if not isinstance(row.get("query"), str) or not row["query"].strip():
      raise ValueError(f"{where}: expected an object with a non-empty string 'query'")
    group = {"query": row["query"], "line": number}
    for key in ("positives", "negatives"):
      value = row.get(key, row.get(key[:-1], []))
      value = [value] if isinstance(value, str) else value
      if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{where}: '{key}' must be a list of non-empty strings")
      group[key] = value
    if not group["positives"]:
      raise ValueError(f"{where}: no positive passage (key 'positives' or 'positive')")
    groups.append(group)
  return groups


class RankingObjective(TaskObjective):
  """Listwise softmax cross entropy over [B, G] group scores (positive first), or pointwise BCE over [B]."""

  head = "classification"

  def __init__(self, cfg: ModelConfig, listwise: bool):
    super().__init__(cfg)
    self.listwise = listwise

  def totals(self, batch):
    return {"task_count": example_count(batch)}

  def scores(self, params, batch, rng=None):
    """[B, ...] rows of token arrays [..., L] (or their packed rows) -> scores [B, ...]."""
    lead = batch.get("unpack", batch["input_ids"]).shape[:-1]
    return forward(self.model(rng), params, batch, rng).logits[:, 0].reshape(lead)

  def predict(self, params, batch):
    return {"scores": self.scores(params, batch)}

  def sums(self, params, batch, rng):
    scores = self.scores(params, batch, rng)
    if self.listwise:
      loss = cross_entropy(scores, jnp.zeros(scores.shape[0], jnp.int32))
      correct = (jnp.argmax(scores, -1) == 0).astype(jnp.float32)
    else:
      labels = batch["labels"].astype(jnp.float32)
      loss = optax.sigmoid_binary_cross_entropy(scores, labels)
      correct = ((scores > 0) == (labels > 0.5)).astype(jnp.float32)
    return {"task_loss": weighted_sum(loss, batch), "task_correct": weighted_sum(correct, batch),
            "task_count": example_count(batch)}


class RerankTask(FinetuneTask):
  """`rerank`: MRR@10, nDCG@10 and recall@1 over each query's candidates."""

  name = "rerank"
  head = "classification"

  def example_tokens(self, cfg: ModelConfig) -> int | None:
    return None if cfg.classifier_pooling == "mean" else 1

  def encode(self, queries: list[str], passages: list[str]) -> dict[str, np.ndarray]:
    return self.tokenizer.batch(queries, passages, max_length=self.config.data.max_length)

  def load(self, path, split, labels=None):
    groups = read_groups(path)
    keys = ("input_ids", "attention_mask", "token_type_ids")
    listwise = self.config.rerank_loss == "listwise"
    if split == "train" and listwise:
      size = int(self.config.data.group_size)
      queries, passages = [], []
      for group in groups:
        if not group["negatives"] and size > 1:
          raise ValueError(f"{path}:{group['line']}: listwise training needs negatives for every query "
                           "(or config.rerank_loss=pointwise)")
        for positive in group["positives"]:
          negatives = [group["negatives"][i % len(group["negatives"])] for i in range(size - 1)]
          queries += [group["query"]] * size
          passages += [positive] + negatives
      flat = self.encode(queries, passages)
      arrays = {k: flat[k].reshape(-1, size, flat[k].shape[-1]) for k in keys}
      lengths = arrays["attention_mask"].sum(-1).max(-1)
      return Dataset(arrays, keys, lengths.astype(np.int32), path)
    queries, passages, labels, owners = [], [], [], []
    for index, group in enumerate(groups):
      for label, key in ((1, "positives"), (0, "negatives")):
        for passage in group[key]:
          queries.append(group["query"]), passages.append(passage), labels.append(label), owners.append(index)
    arrays = {k: v for k, v in self.encode(queries, passages).items()}
    arrays["labels"] = np.asarray(labels, np.int32)
    return Dataset(arrays, keys, arrays["attention_mask"].sum(-1).astype(np.int32), path,
                   extra={"owners": np.asarray(owners), "groups": len(groups)})

  def model_config(self, cfg, labels):
    pooling = {"mean": "mean", "cls": "cls"}.get(self.config.pooling, "pooler")
    return cfg.replace(num_labels=1, classifier_pooling=pooling)

  def objective(self, cfg, labels):
    return RankingObjective(cfg, listwise=self.config.rerank_loss == "listwise")

  def metrics(self, dataset, outputs):
    scores, owners, labels = np.asarray(outputs["scores"]), dataset.extra["owners"], dataset.arrays["labels"]
    ranked, relevant = [], []
    for q in range(dataset.extra["groups"]):
      rows = np.flatnonzero(owners == q)
      order = rows[np.argsort(-scores[rows], kind="stable")]
      ranked.append([int(r) for r in order])
      relevant.append({int(r) for r in rows if labels[r] > 0})
    return {"mrr": evaluation.mrr(ranked, relevant, k=10), "ndcg": evaluation.ndcg_at_k(ranked, relevant, 10),
            "recall@1": evaluation.recall_at_k(ranked, relevant, 1)}

  def metadata(self, labels):
    return {"task": self.name, "max_length": int(self.config.data.max_length)}
