"""Sliding-window attention in blocks: ModernBERT's local layers in time and memory linear in the length.

A local layer lets query i see key j when |i - j| <= half (half = local_attention // 2) and
the layer's mask allows it. The masked full product computes all L x L scores and throws
away all but 2 half + 1 per row; here the queries are cut into blocks of `block` rows and each
block meets only the keys its window can reach:

    q      [b, l, h, d]  -> pad to nb * block rows         -> [b, nb, block, h, d]
    k, v   [b, l, h, d]  -> pad `reach` blocks either side  -> [b, nb + 2 reach, block, h, d]
           block i takes key blocks i - reach .. i + reach  -> [b, nb, span, h, d]
           (reach = ceil(half / block), span = (2 reach + 1) block)
    scores [b, nb, h, block, span]: the band, the length padding and the layer's mask applied

so the work is nb * block * span = O(l * span) instead of O(l^2). The layer's mask is read
only inside the band: a key-padding mask [b, 1, 1, l] is blocked like the keys, a pair mask
[b, 1, l, l] (packed rows) is gathered at the band's positions, so any mask the full path takes
gives the same answer.

A query that may see nothing (a padded position whose window holds only padding) gets, on
the full path, the uniform average of every value in the row (softmax of all-equal scores);
it gets that here too, so the two paths agree at every position, padding included.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.models.dropout import Dropout

# Below this many keys per query row the full product is as cheap as the band (the blocks'
# gathers and padding then cost more than the scores they skip).
MIN_SAVING = 2


def window_mask(mask: jax.Array | None, length: int, half: int) -> jax.Array:
  """The full path's mask [b | 1, 1, l, l]: `mask` (or everything) within |i - j| <= half."""
  distance = np.abs(np.arange(length)[:, None] - np.arange(length)[None, :])
  band = jnp.asarray(distance <= half)[None, None]
  return band if mask is None else mask & band


def default_block(half: int) -> int:
  """Query rows per block: the half window, capped at 128 rows (then reach > 1), at least 8."""
  return max(8, min(128, half))


def geometry(length: int, half: int, block: int | None = None) -> tuple[int, int, int, int]:
  """-> (block, blocks, reach, span): rows per block, query blocks, key blocks each side, keys per block."""
  block = block or default_block(half)
  reach = max(1, math.ceil(half / block))
  return block, math.ceil(length / block), reach, (2 * reach + 1) * block


def pays(length: int, half: int, block: int | None = None) -> bool:
  """Whether the blocks compute at least MIN_SAVING x fewer scores than the full product."""
  _, _, _, span = geometry(length, half, block)
  return length >= MIN_SAVING * span


def band_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *, half: int, scale: float,
                   dropout: Dropout | None = None, deterministic: bool = True, block: int | None = None) -> jax.Array:
  """softmax over |i - j| <= half (and mask) of scale * q.k, @ v; float32 softmax. -> [b, l, h, d].

  q/k/v [b, l, h, d]; mask [b | 1, 1, 1 | l, l] bool or None. dropout acts on the band's
  probabilities (each kept probability is one the full path could keep; the draws differ).
  """
  batch, length, heads, dim = q.shape
  block, blocks, reach, span = geometry(length, half, block)
  padded = blocks * block
  q_blocks = _pad_rows(q, 0, padded - length).reshape(batch, blocks, block, heads, dim)
  k_windows, v_windows = (_windows(x, block, blocks, reach) for x in (k, v))

  scores = jnp.einsum("bnqhd,bnkhd->bnhqk", q_blocks, k_windows, preferred_element_type=jnp.float32) * scale
  allowed = _band_mask(mask, length, half, block, blocks, reach)   # [b | 1, nb, 1, block, span]
  scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1)
  if dropout is not None:
    probs = dropout(probs, deterministic=deterministic)
  context = jnp.einsum("bnhqk,bnkhd->bnqhd", probs.astype(v.dtype), v_windows)
  context = context.reshape(batch, padded, heads, dim)[:, :length]
  # Rows with nothing to see: the full path's uniform average over all l values.
  seen = allowed.any(-1).reshape(allowed.shape[0], padded)[:, :length]
  uniform = jnp.mean(v.astype(jnp.float32), axis=1, keepdims=True).astype(v.dtype)
  return jnp.where(seen[:, :, None, None], context, uniform)


def _pad_rows(x: jax.Array, before: int, after: int, axis: int = 1, value=0) -> jax.Array:
  widths = [(0, 0)] * x.ndim
  widths[axis] = (before, after)
  return jnp.pad(x, widths, constant_values=value)


def _windows(x: jax.Array, block: int, blocks: int, reach: int) -> jax.Array:
  """[b, l, ...] -> [b, nb, span, ...]: block i's keys, blocks i - reach .. i + reach (zero past the ends)."""
  length = x.shape[1]
  padded = _pad_rows(x, reach * block, (blocks + reach) * block - length)
  tiles = padded.reshape(x.shape[0], blocks + 2 * reach, block, *x.shape[2:])
  return jnp.concatenate([tiles[:, j:j + blocks] for j in range(2 * reach + 1)], axis=2)


def _band_mask(mask, length, half, block, blocks, reach) -> jax.Array:
  """bool [b | 1, nb, 1, block, span]: in the window, a real key, and allowed by `mask`."""
  span = (2 * reach + 1) * block
  rows = np.arange(blocks)[:, None, None] * block + np.arange(block)[None, :, None]          # query positions
  cols = (np.arange(blocks)[:, None, None] - reach) * block + np.arange(span)[None, None, :]  # key positions
  static = (np.abs(rows - cols) <= half) & (cols >= 0) & (cols < length)                  # [nb, block, span]
  allowed = jnp.asarray(static)[None, :, None]
  if mask is None:
    return allowed
  if mask.shape[1] != 1:
    raise ValueError(f"local attention takes a mask shared by the heads [b, 1, 1 | l, l]; got {mask.shape}")
  if mask.shape[-2] == 1:  # key padding: block it like the keys
    keys = _windows(mask[:, 0, 0, :, None], block, blocks, reach)[..., 0]              # [b, nb, span]
    return allowed & keys[:, :, None, None, :]
  # Pair mask (packed rows): read at the band's (query, key) positions only.
  pairs = _pad_rows(mask[:, 0], 0, blocks * block - length, axis=1, value=False)
  pairs = _pad_rows(pairs, reach * block, (blocks + reach) * block - length, axis=2, value=False)
  index = np.broadcast_to(cols + reach * block, (blocks, block, span)).reshape(1, blocks * block, span)
  band = jnp.take_along_axis(pairs, index, axis=2)                                       # [b, nb * block, span]
  return allowed & band.reshape(pairs.shape[0], blocks, 1, block, span)
