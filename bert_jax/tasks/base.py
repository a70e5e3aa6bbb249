"""The objective interface the train and eval steps use, with every hook a task may implement.

An objective returns *sums and counts* (never means) for a batch, so gradient
accumulation and multi-batch evaluation add up exactly; `terms` says which sums
form the loss: loss = sum(weight * sums[loss_key] / totals[count_key]).

Besides init / sums / totals / sum_keys, which every objective implements, the loop
calls these hooks, declared here with defaults that do nothing:

  place(mesh, rules)                  put arrays the objective holds (a frozen teacher) on the mesh
  prepare_batch(batch)                add what the step needs beyond the data (a teacher's outputs)
  initial_params(params, shardings)   adjust a fresh run's params (a student copied from its teacher)
  model_flops(batch, length, slots)   FLOPs of one step for MFU, or None (XLA's count of the step)
  export(params)                      {folder: (model, params)} to save in WORKDIR ("model", ...), or {}

`forward` and `example_weights` (with `weighted_sum`, `example_count`, `mask_padding_pairs`) are the
helpers every objective's `sums` uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from bert_jax.models.config import ModelConfig
from bert_jax.models.model import EncoderModel, EncoderOutput


def forward(model: EncoderModel, params, batch: Mapping[str, jax.Array], rng, prefix: str = "",
            **kw) -> EncoderOutput:
  """model.apply on a batch's `{prefix}` input_ids / attention_mask / token_type_ids; rng None = eval.

  Packed rows (bert_jax.data.packing) bring `segment_ids` and `unpack`: the outputs are then the
  examples' [M, u], as for the padded batch. Leading axes beyond the first ([B, G, L] groups) are
  flattened: outputs are [B * G, ...].
  """
  ids = batch[f"{prefix}input_ids"]
  width = ids.shape[-1]
  flat = lambda name: None if f"{prefix}{name}" not in batch else batch[f"{prefix}{name}"].reshape(-1, width)
  unpack = batch.get(f"{prefix}unpack")
  if unpack is not None:
    unpack = unpack.reshape(-1, unpack.shape[-1])
  types = flat("token_type_ids")
  return model.apply({"params": params}, flat("input_ids"), flat("attention_mask"),
                     jnp.zeros_like(flat("input_ids")) if types is None else types,
                     segment_ids=flat("segment_ids"), unpack=unpack,
                     rngs={"dropout": rng} if rng is not None else None, **kw)


def num_examples(batch: Mapping[str, jax.Array], prefix: str = "") -> int:
  """Examples in a batch: its first axis, that of `unpack` when the rows are packed."""
  return batch.get(f"{prefix}unpack", batch[f"{prefix}input_ids"]).shape[0]


def example_mask(batch: Mapping[str, jax.Array], prefix: str = "") -> jax.Array:
  """[M, u] of each example's tokens, in example layout (packed or not)."""
  if f"{prefix}unpack" in batch:
    unpack = batch[f"{prefix}unpack"]
    return (unpack.reshape(-1, unpack.shape[-1]) >= 0).astype(jnp.int32)
  mask = batch[f"{prefix}attention_mask"]
  return mask.reshape(-1, mask.shape[-1])


def example_weights(batch: Mapping[str, jax.Array], prefix: str = "") -> jax.Array:
  """[B] float32: 0 for examples that only pad a batch (the last validation batch, a token-budget
  training step: bert_jax.data.token_budget), else 1."""
  if "example_weights" in batch:
    return batch["example_weights"].astype(jnp.float32)
  return jnp.ones((num_examples(batch, prefix),), jnp.float32)


def weighted_sum(values: jax.Array, batch: Mapping[str, jax.Array]) -> jax.Array:
  """Sum of per-example `values` [B] over the batch's real examples (all of them without example_weights)."""
  if "example_weights" not in batch:
    return jnp.sum(values)
  return jnp.sum(values * batch["example_weights"].astype(values.dtype))


def example_count(batch: Mapping[str, jax.Array], prefix: str = "") -> jax.Array:
  """[] float32: the batch's real examples."""
  return jnp.sum(example_weights(batch, prefix))


def mask_padding_pairs(scores: jax.Array, batch: Mapping[str, jax.Array]) -> jax.Array:
  """In-batch scores [B, k * B] (example i against candidate j, which belongs to example j mod B) with
  every pair involving a padding example set to -inf, except i's own (j == i), so that no real example
  meets a padding one as a negative and a padding row keeps a finite loss (weighted 0). Unchanged
  without example_weights."""
  if "example_weights" not in batch:
    return scores
  real = batch["example_weights"] > 0
  rows, columns = scores.shape
  i, j = jnp.arange(rows)[:, None], jnp.arange(columns)[None, :]
  padding = ~(real[:, None] & real[j % rows]) & (i != j)
  return jnp.where(padding, -jnp.inf, scores)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-position cross entropy in float32: logits [..., V], labels [...] -> [...].

  The label's logit is picked with a one-hot compare rather than a gather, so the
  gradient (softmax - one_hot) is one elementwise pass instead of a scatter into
  a zero [..., V] buffer (a large share of the MLM head's backward on CPU).
  """
  logits = logits.astype(jnp.float32)
  labels = jnp.asarray(labels)  # a host int64 array becomes JAX's int (int32 without x64) before the iota takes its type
  one_hot = labels[..., None] == jax.lax.broadcasted_iota(labels.dtype, logits.shape, logits.ndim - 1)
  picked = jnp.sum(jnp.where(one_hot, logits, 0.0), axis=-1)
  return jax.nn.logsumexp(logits, axis=-1) - picked


@dataclasses.dataclass(frozen=True)
class Term:
  loss: str          # key of the summed loss
  count: str         # key of the count it is divided by
  weight: float = 1.0


class Objective:
  """Subclasses set `terms` and implement init / sums / totals / sum_keys; the hooks are optional."""

  terms: tuple[Term, ...] = ()

  @classmethod
  def from_config(cls, cfg: ModelConfig, config: ml_collections.ConfigDict) -> Objective:
    """The objective a pretraining run's config asks for (config.objective names it in the task registry)."""
    raise NotImplementedError(f"{cls.__name__} is not built from a pretraining config")

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

  # Hooks: the loop calls each; the defaults do nothing. -------------------------------------------

  def place(self, mesh, rules) -> None:
    """Puts arrays the objective holds outside the train state (a frozen teacher) onto `mesh`."""

  def prepare_batch(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The global batch as the train / eval step receives it (distillation adds the teacher's outputs)."""
    return batch

  def initial_params(self, params, param_shardings):
    """A fresh run's params after init (and init_from); distillation may copy teacher layers here."""
    del param_shardings
    return params

  def model_flops(self, batch_size: int, length: int, predictions: int) -> float | None:
    """Model FLOPs of one training step (the MFU convention), or None: the loop then uses XLA's count."""
    del batch_size, length, predictions
    return None

  def export(self, params) -> dict[str, tuple[EncoderModel, Any]]:
    """What is worth keeping after pretraining: WORKDIR/<name> -> (model, params); "model" is what
    fine-tuning starts from. Nothing by default."""
    del params
    return {}
