"""Masked language modelling, optionally with a sentence-pair objective (BERT's NSP, ALBERT's SOP).

The MLM head runs only at `masked_positions` [B, M] (static M), so the vocabulary
projection costs B * M rows instead of B * L.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from bert_jax.models import flops
from bert_jax.models.config import ModelConfig
from bert_jax.models.model import EncoderModel
from bert_jax.tasks.base import Objective, Term, cross_entropy, example_weights, forward


def mlm_sums(logits: jax.Array, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """logits [B, M, V] at the masked positions -> summed loss, correct predictions, count."""
  weights = batch["masked_weights"].astype(jnp.float32)
  ce = cross_entropy(logits, batch["masked_ids"])
  correct = (jnp.argmax(logits, -1) == batch["masked_ids"]).astype(jnp.float32)
  return {"mlm_loss": jnp.sum(ce * weights), "mlm_correct": jnp.sum(correct * weights), "mlm_count": jnp.sum(weights)}


class MLMObjective(Objective):
  """MLM (+ NSP / SOP when with_pair)."""

  @classmethod
  def from_config(cls, cfg, config):
    return cls(cfg, with_pair=config.objective != "mlm")

  def __init__(self, cfg: ModelConfig, with_pair: bool):
    head = "pretraining" if with_pair else "mlm"
    self.with_pair = with_pair
    self.train_model = EncoderModel(cfg, head=head, deterministic=False)
    self.eval_model = EncoderModel(cfg, head=head, deterministic=True)
    self.terms = (Term("mlm_loss", "mlm_count"),) + ((Term("pair_loss", "pair_count"),) if with_pair else ())

  def init(self, rngs, input_ids):
    return self.train_model.init(rngs, input_ids)["params"]

  def sum_keys(self):
    keys = ["mlm_loss", "mlm_correct", "mlm_count"]
    return keys + (["pair_loss", "pair_correct", "pair_count"] if self.with_pair else [])

  def totals(self, batch):
    out = {"mlm_count": jnp.sum(batch["masked_weights"].astype(jnp.float32))}
    if self.with_pair:
      out["pair_count"] = jnp.sum(example_weights(batch))
    return out

  def model_flops(self, batch_size, length, predictions):
    return flops.train_flops(self.train_model.config, batch_size, length, predictions)

  def export(self, params):
    """WORKDIR/model: the encoder with its MLM (and NSP/SOP) head."""
    return {"model": (self.eval_model, params)}

  def sums(self, params, batch, rng):
    model = self.train_model if rng is not None else self.eval_model
    out = forward(model, params, batch, rng, masked_positions=batch["masked_positions"])
    sums = mlm_sums(out.logits, batch)
    if self.with_pair:
      labels, weights = batch["pair_labels"], example_weights(batch)
      sums["pair_loss"] = jnp.sum(cross_entropy(out.pair_logits, labels) * weights)
      sums["pair_correct"] = jnp.sum((jnp.argmax(out.pair_logits, -1) == labels).astype(jnp.float32) * weights)
      sums["pair_count"] = jnp.sum(weights)
    return sums
