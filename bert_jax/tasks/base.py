"""The objective interface the train and eval steps use.

An objective returns *sums and counts* (never means) for a batch, so gradient
accumulation and multi-batch evaluation add up exactly; `terms` says which sums
form the loss: loss = sum(weight * sums[loss_key] / totals[count_key]).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-position cross entropy in float32: logits [..., V], labels [...] -> [...].

  The label's logit is picked with a one-hot compare rather than a gather, so the
  gradient (softmax - one_hot) is one elementwise pass instead of a scatter into
  a zero [..., V] buffer (a large share of the MLM head's backward on CPU).
  """
  logits = logits.astype(jnp.float32)
  one_hot = labels[..., None] == jax.lax.broadcasted_iota(labels.dtype, logits.shape, logits.ndim - 1)
  picked = jnp.sum(jnp.where(one_hot, logits, 0.0), axis=-1)
  return jax.nn.logsumexp(logits, axis=-1) - picked


@dataclasses.dataclass(frozen=True)
class Term:
  loss: str          # key of the summed loss
  count: str         # key of the count it is divided by
  weight: float = 1.0


class Objective:
  """Subclasses set `terms` and implement init / sums."""

  terms: tuple[Term, ...] = ()

  def init(self, rngs: Mapping[str, jax.Array], input_ids: jax.Array):
    """Boxed params (flax LogicallyPartitioned leaves) for input_ids [1, L]."""
    raise NotImplementedError

  def sums(self, params, batch: Mapping[str, jax.Array], rng: jax.Array | None) -> dict[str, jax.Array]:
    """Loss sums and counts for a batch; rng None means evaluation (no dropout, no sampling noise)."""
    raise NotImplementedError

  def count_keys(self) -> list[str]:
    return sorted({t.count for t in self.terms})

  def sum_keys(self) -> list[str]:
    raise NotImplementedError

  def loss(self, sums: Mapping[str, jax.Array], totals: Mapping[str, jax.Array]) -> jax.Array:
    return sum(t.weight * sums[t.loss] / jnp.maximum(totals[t.count], 1.0) for t in self.terms)

  def totals(self, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Counts over the whole (global) batch, computed before any micro-batching."""
    raise NotImplementedError

  def summarize(self, sums: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Means for logging: every `<name>_loss` / `<name>_correct` over `<name>_count`."""
    out = {}
    for key, value in sums.items():
      name, _, kind = key.rpartition("_")
      if kind == "loss":
        out[f"{name}_loss"] = value / jnp.maximum(sums[f"{name}_count"], 1.0)
      elif kind == "correct":
        out[f"{name}_accuracy"] = value / jnp.maximum(sums[f"{name}_count"], 1.0)
    return out
