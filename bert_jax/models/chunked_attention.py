"""Exact softmax attention over long rows in blocks (FlashAttention's algorithm, in XLA loops).

A global layer at 8,192 tokens holds [b, h, 8192, 8192] scores: 1 GiB per row and head group
in float32, written and read several times by the one-product path (scores, mask, max, exp,
sum, divide, then again in the backward), at memory speed. Here the queries are cut into
chunks of `q_block` rows and the keys into blocks of `k_block`; a query chunk meets the key
blocks one at a time with a running max, sum and weighted sum of values (the online softmax),
so only [b, h, q_block, k_block] scores exist at once and they stay in cache:

    q [b, lq, h, d] -> [nq, b, h, q_block, d]   (a lax.map over query chunks)
    k, v            -> [nk, b, h, k_block, d]   (a lax.scan over key blocks inside each)
    forward keeps out [b, h, lq, d] and, per query, its top score and log-sum-exp above it

The backward (FlashAttention-2's: key blocks outside, query chunks inside) rebuilds each
block's probabilities as exp(scores - top - log_sum) and uses delta = rowsum(dout * out)
[b, h, lq] in place of softmax's rowsum(dp * p) over the keys:

    dv += p^T dout,  dp = dout v^T,  ds = p (dp - delta),  dq += ds k,  dk += ds^T q  (q scaled)

so the step's memory grows with the length, never with lq * lk. Masked scores get float32's
lowest value as in `attention.softmax_values`, so a query that may see nothing averages every
value, as the one-product path does. Lengths that the blocks do not divide are padded: padded
keys get -inf (no weight, even in a row that sees nothing), padded queries are dropped.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

# Scores per row (lq * lk) from which global attention runs in blocks (4,096 x 4,096: a
# long-context ModernBERT global layer; never a BERT row of 512).
CHUNKED_FROM = 4096 * 4096
# Block sizes. At [1, 4 heads, 8192, 64] float32 on a 2-core EPYC (1 MiB L2 a core, 32 MiB L3),
# queries x keys, forward: 256 x 512 0.60 s, 1024 x 256 0.58 s, 512 x 1024 0.64 s, 128 x 1024
# 0.84 s, 256 x 256 0.99 s; query chunks against all 8,192 keys at once 1.1 s. Forward +
# backward: 512 x 1024 2.5-2.7 s, 256 x 512 2.8-3.1 s; the one [8192, 8192] product 6.6 s.
Q_BLOCK, K_BLOCK = 512, 1024


def flash_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *, scale: float,
                    q_block: int = Q_BLOCK, k_block: int = K_BLOCK) -> jax.Array:
  """softmax(scale * q.k, masked) @ v in blocks (no dropout, no score bias).

  q [b, lq, h, d], k/v [b, lk, h, d], mask [b | 1, 1 | h, 1 | lq, lk] bool -> [b, lq, h, d].
  """
  lq, lk = q.shape[1], k.shape[1]
  q_block, k_block = min(q_block, lq), min(k_block, lk)
  nq, nk = math.ceil(lq / q_block), math.ceil(lk / k_block)
  if mask is None:
    mask = jnp.ones((1, 1, 1, lk), bool)
  # Heads ahead of the length throughout: the block products are then plain batched matmuls on
  # XLA:CPU (forward + backward 1.6x faster than in the [b, l, h, d] layout).
  heads_first = lambda x: x.transpose(0, 2, 1, 3)
  pad = lambda x, axis, to: jnp.pad(x, [(0, to - n if i == axis else 0) for i, n in enumerate(x.shape)])
  q, k, v = pad(heads_first(q), 2, nq * q_block), pad(heads_first(k), 2, nk * k_block), pad(heads_first(v), 2, nk * k_block)
  mask = pad(mask, 3, nk * k_block)
  if mask.shape[2] != 1:
    mask = pad(mask, 2, nq * q_block)
  # The scale goes on q once ([b, h, lq, d]) rather than on every block of scores (lk / d times
  # as many products, forward and backward); autodiff carries it to dq.
  out = _attention(q * jnp.asarray(scale, q.dtype), k, v, _mask_blocks(mask, q_block, k_block), q_block, k_block, lk)
  return heads_first(out[:, :, :lq])


def _blocks(x: jax.Array, block: int, axis: int = 2) -> jax.Array:
  """Cut `axis` of x into blocks, the block index first: [..., n * block, ...] -> [n, ..., block, ...]."""
  shape = x.shape[:axis] + (x.shape[axis] // block, block) + x.shape[axis + 1:]
  return jnp.moveaxis(x.reshape(shape), axis, 0)


def _unblock(x: jax.Array, axis: int = 2) -> jax.Array:
  """The inverse of `_blocks`: [n, ..., block, ...] -> [..., n * block, ...]."""
  x = jnp.moveaxis(x, 0, axis)
  return x.reshape(x.shape[:axis] + (-1,) + x.shape[axis + 2:])


def _mask_blocks(mask: jax.Array, q_block: int, k_block: int) -> jax.Array:
  """mask [B, H, 1 | lq, lk] -> [1 | nq, nk, B, H, 1 | q_block, k_block]."""
  keys = _blocks(mask, k_block, axis=3)                                        # [nk, B, H, 1|lq, kb]
  if mask.shape[2] == 1:
    return keys[None]
  return _blocks(keys, q_block, axis=3)                                       # [nq, nk, B, H, qb, kb]


def _scores(q, k, allowed, key_real):
  """q [b, h, qb, d] (scaled) x k [b, h, kb, d] -> masked scores [b, h, qb, kb] float32."""
  scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
  scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
  return scores if key_real is None else jnp.where(key_real, scores, -jnp.inf)


def _key_real(lk: int, nk: int, k_block: int) -> jax.Array | None:
  """bool [nk, k_block]: which key slots hold a real key (None when the blocks divide lk)."""
  return None if nk * k_block == lk else (jnp.arange(nk * k_block) < lk).reshape(nk, k_block)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _attention(q, k, v, masks, q_block, k_block, lk):
  """q [b, h, nq qb, d] (scaled), k/v [b, h, nk kb, d], masks from `_mask_blocks` -> [b, h, nq qb, d]."""
  return _forward(q, k, v, masks, q_block, k_block, lk)[0]


def _forward(q, k, v, masks, q_block, k_block, lk):
  k_blocks, v_blocks = _blocks(k, k_block), _blocks(v, k_block)
  key_real = _key_real(lk, k_blocks.shape[0], k_block)

  def query_chunk(xs):
    q_chunk, chunk_masks = xs
    chunk_masks = masks[0] if chunk_masks is None else chunk_masks              # [nk, B, H, 1|qb, kb]

    def key_block(carry, ys):
      top, total, acc = carry
      k_block_, v_block, allowed, real = ys
      scores = _scores(q_chunk, k_block_, allowed, real)
      new_top = jnp.maximum(top, jnp.max(scores, axis=-1))
      weights = jnp.exp(scores - new_top[..., None])
      fade = jnp.exp(top - new_top)               # the earlier blocks' weights, rescaled to new_top
      acc = acc * fade[..., None] + jnp.einsum("bhqk,bhkd->bhqd", weights.astype(v.dtype), v_block,
                                               preferred_element_type=jnp.float32)
      return (new_top, total * fade + jnp.sum(weights, axis=-1), acc), None

    rows = q_chunk.shape[:3]
    start = (jnp.full(rows, -jnp.inf), jnp.zeros(rows), jnp.zeros(rows + (v.shape[-1],)))
    (top, total, acc), _ = jax.lax.scan(key_block, start, (k_blocks, v_blocks, chunk_masks, key_real))
    # The max and the log-sum kept apart: for a query that sees nothing, top is float32's lowest
    # value and top + log(total) would round back to it, losing the 1 / lk of its uniform weights.
    return (acc / total[..., None]).astype(v.dtype), top, jnp.log(total)

  # A key mask (one for every query) is closed over; a per-query mask is mapped with its chunk.
  per_query = masks.shape[0] != 1
  out, top, log_total = jax.lax.map(query_chunk, (_blocks(q, q_block), masks if per_query else None))
  out = _unblock(out)
  return out, (q, k, v, masks, out, _unblock(top), _unblock(log_total))


def _backward(q_block, k_block, lk, residuals, d_out):
  q, k, v, masks, out, top, log_total = residuals
  delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)   # [b, h, lq]
  per_query = masks.shape[0] != 1
  query_xs = tuple(_blocks(x, q_block) for x in (q, d_out, top, log_total, delta))
  key_real = _key_real(lk, k.shape[2] // k_block, k_block)

  def key_block(dq, xs):
    k_block_, v_block, block_masks, real = xs                                   # masks [1|nq, B, H, 1|qb, kb]

    def query_chunk(carry, ys):
      dk, dv = carry
      (q_chunk, d_out_chunk, top_chunk, log_total_chunk, delta_chunk), allowed = ys
      allowed = block_masks[0] if allowed is None else allowed
      scores = _scores(q_chunk, k_block_, allowed, real)
      probs = jnp.exp(scores - top_chunk[..., None] - log_total_chunk[..., None])
      dv = dv + jnp.einsum("bhqk,bhqd->bhkd", probs.astype(v.dtype), d_out_chunk, preferred_element_type=jnp.float32)
      dp = jnp.einsum("bhqd,bhkd->bhqk", d_out_chunk, v_block, preferred_element_type=jnp.float32)
      # Masked scores are constants: no gradient reaches q or k through them (a query that sees
      # nothing still spreads its gradient over every value, through probs in dv).
      ds = jnp.where(allowed, probs * (dp - delta_chunk[..., None]), 0.0).astype(q.dtype)
      dk = dk + jnp.einsum("bhqk,bhqd->bhkd", ds, q_chunk, preferred_element_type=jnp.float32)
      return (dk, dv), jnp.einsum("bhqk,bhkd->bhqd", ds, k_block_, preferred_element_type=jnp.float32)

    zeros = jnp.zeros(k_block_.shape, jnp.float32), jnp.zeros(v_block.shape, jnp.float32)
    (dk, dv), dq_chunks = jax.lax.scan(query_chunk, zeros, (query_xs, block_masks if per_query else None))
    return dq + _unblock(dq_chunks), (dk, dv)

  key_masks = jnp.swapaxes(masks, 0, 1)                                         # [nk, 1|nq, B, H, ...]
  dq, (dk, dv) = jax.lax.scan(key_block, jnp.zeros(q.shape, jnp.float32),
                              (_blocks(k, k_block), _blocks(v, k_block), key_masks, key_real))
  return dq.astype(q.dtype), _unblock(dk).astype(k.dtype), _unblock(dv).astype(v.dtype), None


_attention.defvjp(_forward, _backward)
