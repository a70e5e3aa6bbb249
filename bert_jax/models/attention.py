"""Multi-head self-attention (BERT/RoBERTa/ALBERT/MPNet), the shared softmax core, MPNet's relative bias.

Shapes: x [batch, length, hidden]; q/k/v [batch, length, heads, head_dim];
mask [batch, 1 | heads, 1 | q_length, k_length] bool (True = may attend).

MPNet's relative position bias: one table [rows, heads], shared by every layer, read at
T5's bidirectional bucket of each key-minus-query distance and added to the scaled scores.

Attention maps for distillation (MiniLM): when the "intermediates" collection
is mutable (`model.apply(..., mutable=["intermediates"])`), every attention
module sows `attention_probs` [b, heads, lq, lk] float32 (post-mask softmax,
before dropout) and `attention_values` [b, lk, heads, head_dim] float32;
`bert_jax.models.model.collect_attention` orders them by layer. Otherwise the
sow is a no-op and nothing extra is computed.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.models import chunked_attention, local_attention, rotary, splash
from bert_jax.models.config import ModelConfig
from bert_jax.models.dropout import Dropout
from bert_jax.models.layers import Dense, constrain


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *, scale: float,
           bias: jax.Array | None = None, dropout: Dropout | None = None, deterministic: bool = True,
           impl: str = "xla", return_probs: bool = False, window: int = 0, segments: jax.Array | None = None):
  """softmax(scale * q.k + bias, masked) @ v with the softmax in float32.

  q [b, lq, h, d], k/v [b, lk, h, d], bias [b|1, h, lq, lk] (already scaled) -> [b, lq, h, d].
  Masked scores get float32's lowest value, as the reference implementations do.
  return_probs: also return the probabilities [b, h, lq, lk] float32 (before dropout); this
  takes the einsum path even when impl="cudnn", since the fused kernel never exposes them.
  window > 0: only keys with |i - j| <= window within the mask (local layers): in blocks
  (models/local_attention.py) where that saves work, else as a mask on the full product.
  segments [b, l] int: the mask as segment labels (models/splash.py), read by impl="splash" only.
  Rows of at least 4,096 x 4,096 scores without bias or dropout (long-context global layers) run
  in blocks of queries and keys (models/chunked_attention.py, FlashAttention's algorithm): the
  same numbers, memory linear in the length.
  """
  if impl == "splash" and not return_probs:
    if bias is not None:
      raise ValueError("attention_impl='splash' takes no additive score bias (relative positions)")
    if segments is None and mask is not None:  # called outside the encoder, which labels the mask once
      segments = splash.segment_labels(mask)
    return splash.attention(q, k, v, segments, scale=scale, window=window, dropout=dropout,
                            deterministic=deterministic)
  if window:
    if not return_probs and local_attention.pays(q.shape[1], window) and bias is None:
      return local_attention.band_attention(q, k, v, mask, half=window, scale=scale, dropout=dropout,
                                            deterministic=deterministic)
    mask = local_attention.window_mask(mask, q.shape[1], window)
  no_dropout = dropout is None or deterministic or dropout.rate == 0.0
  if impl == "cudnn" and no_dropout and not return_probs:
    return fused_attention(q, k, v, mask, bias, scale)
  if (not window and no_dropout and not return_probs and bias is None
      and q.shape[1] * k.shape[1] >= chunked_attention.CHUNKED_FROM):
    return chunked_attention.flash_attention(q, k, v, mask, scale=scale)
  # Heads moved ahead of the length first: XLA:CPU then runs the per-head products as plain
  # batched matmuls (the forward 2.3x faster in isolation at [56, 72, 12, 32]; the attention
  # core of the movie-set embedding 3.45 -> 3.11 s, the transposes included).
  scores = jnp.einsum("bhqd,bhkd->bhqk", heads_first(q), heads_first(k), preferred_element_type=jnp.float32) * scale
  if bias is not None:
    scores = scores + bias.astype(jnp.float32)
  return softmax_values(scores, v, mask, dropout=dropout, deterministic=deterministic, return_probs=return_probs)


def fused_attention(q, k, v, mask, bias, scale):
  """cuDNN flash attention (jax.nn.dot_product_attention); GPU only.

  A key-padding mask [b, 1, 1, lk] becomes per-row key lengths (the kernel's own padding
  support, which needs right padding, as every bert_jax pipeline produces); float32 inputs
  run in bfloat16 (the kernel has no float32 path); other masks
  (packed segments [b, 1, lq, lk]) are passed as they are, broadcast over heads.
  """
  lengths = None
  if mask is not None and mask.shape[-2] == 1 and bias is None:
    lengths = jnp.sum(mask[:, 0, 0, :], axis=-1).astype(jnp.int32)
    mask = None
  elif mask is not None:
    mask = jnp.broadcast_to(mask, (q.shape[0], q.shape[2], q.shape[1], k.shape[1]))
  dtype = q.dtype if q.dtype in (jnp.bfloat16, jnp.float16) else jnp.bfloat16  # the kernel's input types
  out = jax.nn.dot_product_attention(q.astype(dtype), k.astype(dtype), v.astype(dtype),
                                     bias=None if bias is None else bias.astype(dtype), mask=mask, scale=scale,
                                     key_value_seq_lengths=lengths,
                                     # Every query row is computed (padded ones too, as the reference does).
                                     query_seq_lengths=None if lengths is None else jnp.full_like(lengths, q.shape[1]),
                                     implementation="cudnn")
  return out.astype(v.dtype)


def softmax_values(scores: jax.Array, v: jax.Array, mask: jax.Array | None, *,
                   dropout: Dropout | None = None, deterministic: bool = True,
                   head_weights: jax.Array | None = None, return_probs: bool = False):
  """Masked float32 softmax over the last axis of scores [b, h, lq, lk], then @ v [b, lk, h, d].

  head_weights [h, h] mixes the probabilities across heads (DeBERTa v1 talking heads).
  return_probs: return (context, probs) with probs [b, h, lq, lk] float32 before dropout and,
  with talking heads, after the mixing (so those rows need not sum to 1).
  """
  scores = scores.astype(jnp.float32)
  if mask is not None:
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1)
  recorded = probs
  if dropout is not None:
    probs = dropout(probs, deterministic=deterministic)
  if head_weights is not None:
    probs = jnp.einsum("bhqk,hg->bgqk", probs, head_weights)
    if return_probs:
      # Mixed again without dropout: what the layer attends with at evaluation.
      recorded = jnp.einsum("bhqk,hg->bgqk", recorded, head_weights.astype(jnp.float32))
  # The transpose back is written out: asked for a "bqhd" output, einsum contracts into [b, h, d, q],
  # the slow layout this avoids.
  context = jnp.einsum("bhqk,bhkd->bhqd", probs.astype(v.dtype), heads_first(v)).transpose(0, 2, 1, 3)
  return (context, recorded) if return_probs else context


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """T5's bidirectional bucket [l, l] int of key j minus query i, as MPNet's reference computes it.

  Keys after the query take the upper half of the buckets; within a half, the first
  half of its buckets hold the distances 0, 1, ... exactly and the rest are log-spaced up
  to max_distance, from which every distance shares the last one (32 / 128: the buckets of
  one direction start at distances 0..8, 12, 16, 23, 32, 46, 64, 91). The logarithm runs in
  float32 with the reference's operations in its order, so boundaries that are exact in real
  numbers (16, 32, 64) round as they do there.
  """
  positions = np.arange(length, dtype=np.int64)
  n = positions[:, None] - positions[None, :]          # query minus key: the reference's -relative_position
  half = num_buckets // 2
  buckets = (n < 0).astype(np.int64) * half
  n = np.abs(n)
  exact = half // 2
  ratio = np.maximum(n, exact).astype(np.float32) / np.float32(exact)  # distances below `exact` use n itself
  logs = np.log(ratio) / np.float32(math.log(max_distance / exact)) * np.float32(half - exact)
  large = np.minimum(exact + logs.astype(np.int64), half - 1)
  return buckets + np.where(n < exact, n, large)


def relative_position_bias(table: jax.Array, length: int, num_buckets: int, max_distance: int) -> jax.Array:
  """table [rows, heads] -> bias [1, heads, l, l] float32 (rows >= num_buckets, checked by ModelConfig)."""
  buckets = relative_position_buckets(length, num_buckets, max_distance)
  return jnp.take(table.astype(jnp.float32), buckets, axis=0).transpose(2, 0, 1)[None]


def heads_first(x: jax.Array) -> jax.Array:
  """[b, l, h, d] -> [b, h, l, d]."""
  return x.transpose(0, 2, 1, 3)


def record_attention(module: nn.Module, probs: jax.Array, v: jax.Array) -> None:
  """Sows the attention probabilities [b, h, lq, lk] and values [b, lk, h, d] (float32) into
  "intermediates"; callers only compute probs when `module.is_mutable_collection("intermediates")`."""
  module.sow("intermediates", "attention_probs", probs.astype(jnp.float32))
  module.sow("intermediates", "attention_values", v.astype(jnp.float32))


HEAD_ACTIVATION = ("batch", "length", "act_heads", "kv")


def qkv_dense(cfg: ModelConfig, dtype) -> tuple[Dense, Dense, Dense]:
  """The query, key and value projections hidden -> [heads, head_dim].

  Called inside a compact method: the modules become the caller's children
  `query`, `key` and `value`.
  """
  features = (cfg.num_heads, cfg.dim_per_head)
  axes = ("embed", "heads", "kv")
  bias = cfg.attention_bias
  return (Dense(features, axes, use_bias=bias, dtype=dtype, name="query"),
          Dense(features, axes, use_bias=bias and cfg.attention_key_bias, dtype=dtype, name="key"),
          Dense(features, axes, use_bias=bias, dtype=dtype, name="value"))


class SelfAttention(nn.Module):
  """BERT self-attention: scaled dot product over the content, with rotary positions or an additive bias
  (MPNet's relative positions) when the model has them."""

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None, *, deterministic: bool = True,
               relative: dict | None = None, query: jax.Array | None = None,
               rotary_tables: tuple[jax.Array, jax.Array] | None = None,
               bias: jax.Array | None = None, window: int = 0, segments: jax.Array | None = None) -> jax.Array:
    """x [b, l, hidden] (keys, values; queries unless `query` is given) -> context [b, l, heads, head_dim].

    rotary_tables: (cos, sin) [b | 1, l, head_dim] that rotate q and k (models/rotary.py).
    bias: [b | 1, heads, l, l] added to the scaled scores before the mask (`relative_position_bias`).
    window, segments: see `attend` (the sliding window of local layers; the mask as segment labels).
    """
    cfg = self.config
    query_proj, key_proj, value_proj = qkv_dense(cfg, self.dtype)
    q = constrain(query_proj(x if query is None else query), HEAD_ACTIVATION)
    k, v = constrain(key_proj(x), HEAD_ACTIVATION), constrain(value_proj(x), HEAD_ACTIVATION)
    if rotary_tables is not None:
      q, k = rotary.rotate(q, rotary_tables), rotary.rotate(k, rotary_tables)
    dropout = Dropout(cfg.attention_dropout_rate, cfg.dropout_impl) if cfg.attention_dropout_rate else None
    # Only when asked for (mutable "intermediates"): otherwise no probabilities are kept or computed.
    record = self.is_mutable_collection("intermediates")
    out = attend(q, k, v, mask, scale=cfg.dim_per_head ** -0.5, bias=bias, dropout=dropout,
                 deterministic=deterministic, impl=cfg.attention_impl, return_probs=record, window=window,
                 segments=segments)
    if record:
      out, probs = out
      record_attention(self, probs, v)
    return out
