"""Output heads' building blocks and pooling.

MLM: transform (dense -> act -> LayerNorm) then the word embeddings, tied, plus a
bias: one class covers BERT, RoBERTa, ALBERT, DeBERTa (legacy and v3 heads) and
ModernBERT (whose dense and norm biases are optional). The task heads' layouts
(models/head_table.py) are built from Classifier, DenseClassifier, ContextPooler and
Transform, named as the reference models name them.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models.config import ModelConfig
from bert_jax.models.dropout import Dropout
from bert_jax.models.layers import Dense, LayerNorm, activation, param_with_axes


def gather_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
  """x [b, l, H], positions [b, m] int -> [b, m, H]."""
  return jnp.take_along_axis(x, positions[..., None].astype(jnp.int32), axis=1)


def transform(x: jax.Array, cfg: ModelConfig, dtype, width: int) -> jax.Array:
  """dense -> act -> LayerNorm, [..., H] -> [..., width]; called in a compact method, the layers become the
  caller's `dense` and `norm` (the MLM heads' transform and ModernBERT's `head`)."""
  x = Dense((width,), ("embed", "embed_out"), use_bias=cfg.mlm_dense_bias, dtype=dtype, name="dense")(x)
  x = activation(cfg.mlm_act or cfg.hidden_act)(x)
  return LayerNorm(cfg.layer_norm_eps, dtype, name="norm", use_bias=cfg.norm_bias)(x)


class MLMHead(nn.Module):
  """hidden [b, l | m, H] -> logits [b, l | m, vocab], decoder tied to the word embeddings."""

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, embeddings: nn.Module) -> jax.Array:
    cfg = self.config
    x = transform(x, cfg, self.dtype, cfg.mlm_transform_size or cfg.embed_dim)
    logits = embeddings.attend(x).astype(jnp.float32)
    if cfg.mlm_decoder_bias:
      logits = logits + param_with_axes(self, "bias", nn.initializers.zeros, (cfg.vocab_size,), ("vocab",))
    return logits


class Pooler(nn.Module):
  """tanh(dense(hidden[:, 0])) -> [b, H] (BERT, RoBERTa, ALBERT)."""

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = Dense((self.config.hidden_size,), ("embed", "embed_out"), dtype=self.dtype, name="dense")(x[:, 0])
    return jnp.tanh(x)


class ReplacedTokenHead(nn.Module):
  """ELECTRA's discriminator head: hidden [b, l, H] -> dense -> act -> [b, l] logits (replaced or not)."""

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    x = activation(cfg.hidden_act)(Dense((cfg.hidden_size,), ("embed", "embed_out"), dtype=self.dtype,
                                         name="dense")(x))
    return Dense((1,), ("embed", "classes"), dtype=self.dtype, name="prediction")(x)[..., 0].astype(jnp.float32)


class Classifier(nn.Module):
  """dropout -> dense: [..., H] -> [..., num_outputs] (sequence / token classification, NSP, SOP, QA)."""

  num_outputs: int
  dropout_rate: float = 0.1
  dtype: jnp.dtype = jnp.float32
  dropout_impl: str = "hash"

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    x = Dropout(self.dropout_rate, self.dropout_impl)(x, deterministic=deterministic)
    return Dense((self.num_outputs,), ("embed", "classes"), dtype=self.dtype, name="dense")(x).astype(jnp.float32)


def cls_pool(hidden: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """hidden [b, l, H] -> [b, H]: the first token."""
  del mask
  return hidden[:, 0]


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Mask-aware mean over the sequence: hidden [b, l, H], mask [b, l] -> [b, H]."""
  mask = mask.astype(jnp.float32)[..., None]
  total = jnp.sum(hidden.astype(jnp.float32) * mask, axis=1)
  return total / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)


def max_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Mask-aware max over the sequence: [b, l, H], [b, l] -> [b, H] (padding never wins)."""
  masked = jnp.where(mask[..., None].astype(bool), hidden.astype(jnp.float32), -jnp.inf)
  return jnp.max(masked, axis=1)


POOLING = {"cls": cls_pool, "mean": mean_pool, "max": max_pool}


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||_2, eps) along the last axis (as torch.nn.functional.normalize)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


class Transform(nn.Module):
  """ModernBERT's `head` before every task classifier: [..., H] -> dense -> act -> LayerNorm -> [..., H]."""

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return transform(x, self.config, self.dtype, self.config.hidden_size)


class DenseClassifier(nn.Module):
  """RoBERTa-style classifier: dropout -> dense -> act -> dropout -> out_proj, [b, H] -> [b, num_outputs]."""

  num_outputs: int
  act: str
  dropout_rate: float = 0.1
  dtype: jnp.dtype = jnp.float32
  dropout_impl: str = "hash"

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    dropout = Dropout(self.dropout_rate, self.dropout_impl)
    x = Dense((x.shape[-1],), ("embed", "embed_out"), dtype=self.dtype, name="dense")(
        dropout(x, deterministic=deterministic))
    x = dropout(activation(self.act)(x), deterministic=deterministic)
    return Dense((self.num_outputs,), ("embed", "classes"), dtype=self.dtype, name="out_proj")(x).astype(jnp.float32)


class ContextPooler(nn.Module):
  """DeBERTa's pooler: dropout -> dense -> act on the first token, [b, l, H] -> [b, H]."""

  act: str
  dropout_rate: float = 0.1
  dtype: jnp.dtype = jnp.float32
  dropout_impl: str = "hash"

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    x = Dropout(self.dropout_rate, self.dropout_impl)(x[:, 0], deterministic=deterministic)
    return activation(self.act)(Dense((x.shape[-1],), ("embed", "embed_out"), dtype=self.dtype, name="dense")(x))
