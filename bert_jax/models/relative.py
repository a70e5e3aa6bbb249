"""DeBERTa's disentangled attention (v1, and v2/v3 with log-bucketed positions).

score(i, j) = [ q_i.k_j  +  q_i.Kr[d(i, j)]  (c2p)  +  k_j.Qr[d(i, j)]  (p2c) ] / sqrt(head_dim * (1 + n_rel))

where Kr / Qr are the key / query projections of the relative-embedding table
and d(i, j) = clamp(bucket(i - j) + span, 0, 2 span - 1) indexes that table.

The reference implementations compute q.Kr for every row of the table,
[batch, heads, length, 2 span], and then `gather` the [length, length] entries
they need: a large gather that is slow on TPU and GPU. Since d depends on i - j
only, we instead take the 2L - 1 table rows for the distances -(L-1)..(L-1) (a
tiny gather of parameters, batch independent), do one matmul per term,
[batch, heads, length, 2L - 1], and turn "distance" columns into "key"
columns with `rel_shift` (pad-free reshape and slice; no gather).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.models.attention import (HEAD_ACTIVATION, attend, heads_first, qkv_dense, record_attention,
                                      softmax_values)
from bert_jax.models.config import ModelConfig
from bert_jax.models.dropout import Dropout
from bert_jax.models.layers import Dense, constrain, param_with_axes, default_kernel_init


def log_bucket(relative: np.ndarray, bucket_size: int, max_position: int) -> np.ndarray:
  """DeBERTa-v2's log buckets of relative distances (float32 maths, as the reference)."""
  relative = np.asarray(relative, np.int64)
  sign = np.sign(relative)
  mid = bucket_size // 2
  abs_pos = np.where((relative < mid) & (relative > -mid), mid - 1, np.abs(relative))
  ratio = (abs_pos.astype(np.float32) / np.float32(mid)).astype(np.float32)
  log_pos = np.ceil(np.log(ratio) / np.log(np.float32((max_position - 1) / mid)) * np.float32(mid - 1)) + mid
  log_pos = log_pos.astype(np.float32)
  return np.where(abs_pos <= mid, relative, log_pos * sign).astype(np.int64)


def relative_table_index(cfg: ModelConfig, distances: np.ndarray) -> np.ndarray:
  """Row of the relative-embedding table used for each query-minus-key distance."""
  span = cfg.relative_span
  max_relative = cfg.max_relative_positions if cfg.max_relative_positions >= 1 else cfg.max_position_embeddings
  bucketed = distances
  if cfg.position_buckets > 0 and max_relative > 0:
    bucketed = log_bucket(distances, cfg.position_buckets, max_relative)
  return np.clip(bucketed + span, 0, 2 * span - 1)


def rel_shift(x: jax.Array) -> jax.Array:
  """x [..., L, 2L - 1] -> y [..., L, L] with y[i, j] = x[i, j - i + L - 1].

  Flattening the last two axes and re-reading them with a row stride of 2L - 2
  moves each row one column to the left of the row above: a reshape and two
  slices, no gather.
  """
  length = x.shape[-2]
  if length == 1:
    return x
  flat = x.reshape(*x.shape[:-2], length * (2 * length - 1))
  flat = flat[..., length - 1:length - 1 + length * (2 * length - 2)]
  return flat.reshape(*x.shape[:-2], length, 2 * length - 2)[..., :length]


class DisentangledSelfAttention(nn.Module):
  """Content-to-content plus c2p / p2c relative terms (DeBERTa v1, v2, v3)."""

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None, *, deterministic: bool = True,
               relative: dict | None = None, query: jax.Array | None = None) -> jax.Array:
    """x [b, l, hidden]; relative["embeddings"] [2 span, hidden] -> context [b, l, heads, head_dim].

    query [b, l, hidden] replaces x as the source of queries (the enhanced mask decoder).
    """
    cfg = self.config
    query_proj, key, value = qkv_dense(cfg, self.dtype)
    q = constrain(query_proj(x if query is None else query), HEAD_ACTIVATION)
    k, v = constrain(key(x), HEAD_ACTIVATION), constrain(value(x), HEAD_ACTIVATION)
    scale = (cfg.dim_per_head * (1 + len(cfg.pos_att_type))) ** -0.5

    bias = None
    if cfg.relative_attention and cfg.pos_att_type:
      if relative is None:
        raise ValueError("disentangled attention needs the relative embeddings")
      bias = self.relative_scores(q, k, relative["embeddings"], query_proj, key, deterministic) * scale

    dropout = Dropout(cfg.attention_dropout_rate, cfg.dropout_impl) if cfg.attention_dropout_rate else None
    # Attention maps only when asked for (mutable "intermediates"; see attention.record_attention).
    record = self.is_mutable_collection("intermediates")
    if not cfg.talking_head:
      out = attend(q, k, v, mask, scale=scale, bias=bias, dropout=dropout, deterministic=deterministic,
                   impl=cfg.attention_impl, return_probs=record)
      if record:
        out, probs = out
        record_attention(self, probs, v)
      return out
    # Talking heads mix the logits and the probabilities across heads.
    scores = jnp.einsum("bhqd,bhkd->bhqk", heads_first(q), heads_first(k), preferred_element_type=jnp.float32) * scale
    if bias is not None:
      scores = scores + bias
    h = cfg.num_heads
    logits_mix = param_with_axes(self, "head_logits_proj", default_kernel_init, (h, h), ("heads", "heads_out"))
    weights_mix = param_with_axes(self, "head_weights_proj", default_kernel_init, (h, h), ("heads", "heads_out"))
    scores = jnp.einsum("bhqk,hg->bgqk", scores, logits_mix)
    out = softmax_values(scores, v, mask, dropout=dropout, deterministic=deterministic, head_weights=weights_mix,
                         return_probs=record)
    if record:
      out, probs = out
      record_attention(self, probs, v)
    return out

  def relative_scores(self, q, k, table, query, key, deterministic):
    """Unscaled c2p + p2c scores [b, heads, l, l] (float32)."""
    cfg = self.config
    length = q.shape[1]
    table = Dropout(cfg.dropout_rate, cfg.dropout_impl)(table.astype(self.dtype), deterministic=deterministic)
    # Table rows for distances i - j = -(L-1) .. L-1, in that order: [2L - 1].
    rows = relative_table_index(cfg, np.arange(-(length - 1), length))
    features, axes = (cfg.num_heads, cfg.dim_per_head), ("embed", "heads", "kv")
    scores = jnp.zeros((), jnp.float32)
    if "c2p" in cfg.pos_att_type:
      pos_key = key if cfg.share_att_key else Dense(features, axes, use_bias=cfg.pos_key_bias, dtype=self.dtype,
                                                    name="pos_key")
      # Column m of the product holds distance L-1-m, so that rel_shift lands on key j.
      keys_by_distance = jnp.take(pos_key(table), rows[::-1], axis=0)  # [2L-1, heads, head_dim]
      c2p = jnp.einsum("bqhd,mhd->bhqm", q, keys_by_distance, preferred_element_type=jnp.float32)
      scores = scores + rel_shift(c2p)
    if "p2c" in cfg.pos_att_type:
      pos_query = query if cfg.share_att_key else Dense(features, axes, dtype=self.dtype, name="pos_query")
      queries_by_distance = jnp.take(pos_query(table), rows, axis=0)  # [2L-1, heads, head_dim]
      p2c = jnp.einsum("bkhd,mhd->bhkm", k, queries_by_distance, preferred_element_type=jnp.float32)
      scores = scores + jnp.swapaxes(rel_shift(p2c), -1, -2)
    return scores
