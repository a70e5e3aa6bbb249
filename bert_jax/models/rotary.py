"""Rotary position embeddings (RoFormer; ModernBERT's global and local layers).

Each query and key vector is rotated by angles that grow with its position, so their dot
product depends on the positions' difference only:

    inv_freq[k] = base ** (-2k / d)                    k = 0 .. d/2 - 1
    angle[p, j] = p * inv_freq[j mod d/2]              j = 0 .. d - 1 (the two halves share frequencies)
    rotate(x)   = x * cos(angle) + rotate_half(x) * sin(angle),   rotate_half([a, b]) = [-b, a]

The reference (Hugging Face's ModernBERT) computes the tables and the rotation in float32
whatever the compute dtype; so does this module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def segment_positions(segment_ids: jax.Array) -> jax.Array:
  """[b, l] int positions that restart at 0 where a packed row's segment id changes."""
  length = segment_ids.shape[-1]
  index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), segment_ids.shape)
  starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]],
                           axis=-1)
  first = jax.lax.cummax(jnp.where(starts, index, 0), axis=segment_ids.ndim - 1)
  return index - first


def rotary_tables(positions: jax.Array, head_dim: int, base: float) -> tuple[jax.Array, jax.Array]:
  """positions [b | 1, l] int -> (cos, sin), each [b | 1, l, head_dim] float32."""
  inv_freq = 1.0 / (jnp.float32(base) ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def rotate(x: jax.Array, tables: tuple[jax.Array, jax.Array]) -> jax.Array:
  """x [b, l, heads, head_dim] rotated by (cos, sin) [b | 1, l, head_dim], in float32; returns x's dtype."""
  cos, sin = (t[:, :, None, :] for t in tables)
  y = x.astype(jnp.float32)
  half = y.shape[-1] // 2
  rotated_half = jnp.concatenate([-y[..., half:], y[..., :half]], axis=-1)
  return (y * cos + rotated_half * sin).astype(x.dtype)
