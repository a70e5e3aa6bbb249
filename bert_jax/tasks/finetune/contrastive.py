"""Contrastive sentence embeddings (`contrastive`): in-batch negatives, symmetric loss, temperature.

Training rows are pairs (`sentence`, `sentence2`: an anchor and its positive)
or triplets (plus a `negative` column: a hard negative) from TSV/CSV/JSONL.
Each anchor must pick its positive among every positive and hard negative of
the batch (multiple-negatives ranking loss, as sentence-transformers'
MultipleNegativesRankingLoss); the symmetric term also makes each positive pick
its anchor among the anchors. Similarities are cosines divided by the
temperature. Embeddings are mean-pooled by default (`pooling`, "auto" = the
checkpoint's own sentence-transformers pooling).

Validation rows are scored pairs (`sentence`, `sentence2`, `label` = a
similarity score, STS style): Spearman and Pearson correlation between the
scores and the cosine similarities. The best checkpoint is written with
sentence-transformers' module files, so `bert_jax.embed` (and
sentence-transformers) use the same pooling and normalisation.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import evaluation
from bert_jax.convert import sentence_transformers
from bert_jax.data.batching import Dataset
from bert_jax.data import finetune as finetune_data
from bert_jax.models.config import ModelConfig
from bert_jax.models.heads import POOLING, l2_normalize
from bert_jax.models.model import EncoderModel
from bert_jax.tasks.base import cross_entropy, example_count, example_mask, forward, mask_padding_pairs, weighted_sum
from bert_jax.tasks.finetune.base import FinetuneTask, TaskObjective

SIDES = ("a", "p", "n")  # anchor, positive, hard negative


def header_columns(path: str) -> list[str]:
  """Column names of a TSV/CSV header or the keys of a JSONL file's first object."""
  import gzip
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8", errors="replace") as f:
    first = f.readline().rstrip("\r\n").lstrip("\ufeff")
  name = path[:-3] if path.endswith(".gz") else path
  if name.endswith((".jsonl", ".json")):
    try:
      return list(json.loads(first))
    except (json.JSONDecodeError, TypeError):
      return []
  return first.split("\t" if name.endswith(".tsv") else ",")


def encode_side(tokenizer, texts: list[str], max_length: int, side: str) -> dict[str, np.ndarray]:
  arrays = tokenizer.batch(texts, max_length=max_length)
  return {f"{side}_input_ids": arrays["input_ids"], f"{side}_attention_mask": arrays["attention_mask"]}


def embed(model: EncoderModel, params, batch, side: str, pooling: str, rng=None) -> jax.Array:
  """The `{side}_` sentences of a batch (ids / mask [B, L], or their packed rows) -> L2-normalised
  sentence embeddings [B, H] float32."""
  out = forward(model, params, batch, rng, prefix=f"{side}_")
  return l2_normalize(POOLING[pooling](out.last_hidden_state, example_mask(batch, f"{side}_")))


class ContrastiveObjective(TaskObjective):
  """Symmetric in-batch-negatives cross entropy over cosine / temperature."""

  def __init__(self, cfg: ModelConfig, pooling: str, temperature: float, symmetric: bool = True):
    super().__init__(cfg, with_pooler=False)
    self.pooling, self.temperature, self.symmetric = pooling, temperature, symmetric

  def totals(self, batch):
    return {"task_count": example_count(batch, "a_")}

  def embeddings(self, params, batch, side: str, rng=None) -> jax.Array:
    key = None if rng is None else jax.random.fold_in(rng, SIDES.index(side))
    return embed(self.model(rng), params, batch, side, self.pooling, key)

  def predict(self, params, batch):
    return {"a": self.embeddings(params, batch, "a"), "p": self.embeddings(params, batch, "p")}

  def sums(self, params, batch, rng):
    anchors = self.embeddings(params, batch, "a", rng)
    positives = self.embeddings(params, batch, "p", rng)
    candidates = positives
    if "n_input_ids" in batch:
      candidates = jnp.concatenate([positives, self.embeddings(params, batch, "n", rng)])
    labels = jnp.arange(anchors.shape[0])
    scores = mask_padding_pairs(anchors @ candidates.T / self.temperature, batch)   # [B, B or 2B]
    loss = cross_entropy(scores, labels)
    if self.symmetric:
      loss = (loss + cross_entropy(mask_padding_pairs(positives @ anchors.T / self.temperature, batch), labels)) / 2
    correct = (jnp.argmax(scores, -1) == labels).astype(jnp.float32)
    return {"task_loss": weighted_sum(loss, batch), "task_correct": weighted_sum(correct, batch),
            "task_count": example_count(batch, "a_")}


class ContrastiveTask(FinetuneTask):
  """`contrastive`: validation Spearman / Pearson of cosine similarity against gold scores."""

  name = "contrastive"
  head = None
  with_pooler = False

  packed_inputs = tuple(f"{side}_" for side in SIDES)

  def _pooling(self) -> str:
    return {"pooler": "cls"}.get(self.config.pooling, self.config.pooling)

  def example_tokens(self, cfg: ModelConfig) -> int | None:
    return 1 if self._pooling() == "cls" else None

  def load(self, path, split, labels=None):
    data = self.config.data
    max_length = data.max_length
    if split == "train":
      table = finetune_data.read_table(path, text_columns=(data.text_column,), pair_column=data.pair_column,
                                 require_label=False)
      if table.pairs is None:
        raise ValueError(f"{path}: contrastive training needs a '{data.pair_column}' column (the positive)")
      arrays = {**encode_side(self.tokenizer, table.sentences, max_length, "a"),
                **encode_side(self.tokenizer, table.pairs, max_length, "p")}
      if "negative" in header_columns(path):
        negatives = finetune_data.read_table(path, text_columns=("negative",), pair_column=None, require_label=False)
        arrays.update(encode_side(self.tokenizer, negatives.sentences, max_length, "n"))
    else:
      table = finetune_data.read_table(path, text_columns=(data.text_column,), pair_column=data.pair_column,
                                 label_column=data.label_column)
      if table.pairs is None:
        raise ValueError(f"{path}: contrastive validation needs scored pairs ('{data.text_column}', "
                         f"'{data.pair_column}', '{data.label_column}')")
      arrays = {**encode_side(self.tokenizer, table.sentences, max_length, "a"),
                **encode_side(self.tokenizer, table.pairs, max_length, "p")}
      arrays["scores"] = np.array([finetune_data.parse_score(v, table.where(i)) for i, v in enumerate(table.labels)],
                                  np.float32)
    token_keys = tuple(k for k in arrays if k[0] in SIDES and k[1] == "_")
    lengths = np.max([arrays[f"{s}_attention_mask"].sum(1) for s in SIDES if f"{s}_attention_mask" in arrays], 0)
    return Dataset(arrays, token_keys, lengths.astype(np.int32), path)

  def objective(self, cfg, labels):
    if self.config.optimizer.grad_accum_steps != 1:
      raise ValueError("contrastive: optimizer.grad_accum_steps must be 1 (in-batch negatives span the whole batch)")
    return ContrastiveObjective(cfg, self._pooling(), float(self.config.temperature))

  def metrics(self, dataset, outputs):
    cosine = np.sum(np.asarray(outputs["a"]) * np.asarray(outputs["p"]), axis=-1)
    scores = dataset.arrays["scores"]
    return {"spearman": evaluation.spearman(scores, cosine), "pearson": evaluation.pearson(scores, cosine)}

  def metadata(self, labels):
    return {"task": self.name, "pooling": self._pooling(), "normalize": True}

  def export_files(self, path: str, **task_params) -> None:
    """sentence-transformers module files: Transformer -> Pooling -> Normalize."""
    sentence_transformers.write_modules(path, self._pooling(), normalize=True,
                                        max_length=self.config.data.max_length)

