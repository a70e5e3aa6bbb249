"""Splash attention (JAX's Pallas TPU kernel) for `model.attention_impl="splash"`.

    q/k/v [b, l, h, d], segments [b, l] int -> context [b, l, h, d]

The kernel (jax.experimental.pallas.ops.tpu.splash_attention) never forms the [l, l] scores:
it walks blocks of queries and keys, skips blocks its mask rules out, and keeps the softmax
statistics in float32. Here it takes
  - the layer's mask as segment ids (`SegmentIds`): a token sees the keys of its own segment;
  - on local layers, `LocalMask` with |i - j| <= window on both sides (ModernBERT's sliding
    window), on global layers `FullMask`; the same mask for every head.

The mask reaches the encoder as a boolean [b, 1, 1 | l, l] (models/model.py); `segment_labels`
turns it back into segment ids once per forward. That is exact for the masks
`attention_mask_4d` builds (key padding; same packed document and both tokens real): every
valid query sees the same keys as on the XLA path. Padded queries get segment 0 and attend
to the padding only (on the XLA path they average over what they may see); their outputs
are never read, by the losses or the poolers, which mask them.

Under a mesh the kernel runs per shard (`jax.shard_map`): rows split as the "batch" logical
axis is, heads as "act_heads"; the length must stay whole. Inside `with splash.interpreted():`
the kernel runs in Pallas' interpreter, on any backend (the CPU tests); otherwise it is
lowered for the TPU (on a TPU, or ahead of time for one: launch/aot_compile.py).
The kernel has no dropout on the probabilities (ModelConfig refuses attention_dropout_rate > 0
with splash) and no additive bias (MPNet's relative positions, DeBERTa's c2p / p2c: refused).
"""

from __future__ import annotations

import contextlib
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

# The logical axes of q / k / v (attention.HEAD_ACTIVATION): what the kernel's shards follow.
HEAD_AXES = ("batch", "length", "act_heads", "kv")
LANES = 128  # TPU blocks: the length must be a multiple of this
_interpret = [False]  # set by `interpreted()`, read when a call is traced


@contextlib.contextmanager
def interpreted():
  """Calls traced inside run the kernel in Pallas' interpreter (slow; any backend)."""
  _interpret.append(True)
  try:
    yield
  finally:
    _interpret.pop()


def segment_labels(mask: jax.Array | None) -> jax.Array | None:
  """bool [b, 1, 1 | l, l] -> int32 [b, l]: 0 on padding, else one label per packed document.

  Key padding [b, 1, 1, l]: 1 for tokens. Pair masks [b, 1, l, l] (same document, both real):
  1 + the first key each query sees, the first token of its document.
  """
  if mask is None:
    return None
  if mask.shape[1] != 1:
    raise ValueError(f"splash attention takes a mask shared by the heads [b, 1, 1 | l, l]; got {mask.shape}")
  if mask.shape[-2] == 1:
    return mask[:, 0, 0, :].astype(jnp.int32)
  rows = mask[:, 0]
  return jnp.where(rows.any(-1), jnp.argmax(rows, axis=-1).astype(jnp.int32) + 1, 0)


def block_size(length: int, interpret: bool) -> int:
  """The kernel's query / key block: up to 512 rows dividing the length (TPU: multiples of 128)."""
  for block in (512, 256, 128):
    if length % block == 0:
      return block
  if interpret and length <= 512:
    return length  # the interpreter has no lane constraint: one block per row
  raise ValueError(f"attention_impl='splash' needs the length to be a multiple of {LANES}; got {length}")


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segments: jax.Array | None, *, scale: float,
              window: int = 0, dropout=None, deterministic: bool = True, interpret: bool | None = None) -> jax.Array:
  """softmax(scale * q.k within segments and the window) @ v -> [b, l, h, d], in q's dtype."""
  if dropout is not None and not deterministic and dropout.rate > 0:
    raise ValueError("attention_impl='splash' has no dropout on the attention probabilities; "
                     "set model.attention_dropout_rate=0")
  if interpret is None:
    interpret = _interpret[-1]
  body = functools.partial(_kernel_call, scale=scale, window=window, interpret=interpret)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return body(q, k, v, segments)
  spec = nn.logical_to_mesh_axes(HEAD_AXES)
  if spec is None or len(spec) < 2 or spec[1] is not None:
    raise ValueError(f"splash attention needs whole rows on each device; the length is sharded as {spec}")
  spec = P(*spec, *([None] * (4 - len(spec))))
  segment_spec = P(spec[0], None)
  return jax.shard_map(body, mesh=mesh, in_specs=(spec, spec, spec, None if segments is None else segment_spec),
                       out_specs=spec, check_vma=False)(q, k, v, segments)


def _kernel_call(q, k, v, segments, *, scale, window, interpret):
  """One shard: [b, l, h, d] each, segments [b, l] or None."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel_lib
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib
  _, length, heads, _ = q.shape
  shape = (length, length)
  one = mask_lib.LocalMask(shape, (window, window), offset=0) if window else mask_lib.FullMask(shape)
  block = block_size(length, interpret)
  sizes = kernel_lib.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                                block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
  kernel = kernel_lib.make_splash_mha(mask_lib.MultiHeadMask([one] * heads), block_sizes=sizes, head_shards=1,
                                      q_seq_shards=1, interpret=interpret)
  # The kernel takes [h, l, d] per row and no scale: the scale goes into q, in float32.
  to_heads = lambda x: x.transpose(0, 2, 1, 3)
  q = to_heads((q.astype(jnp.float32) * scale).astype(q.dtype))
  k, v = to_heads(k), to_heads(v.astype(q.dtype))
  k = k.astype(q.dtype)
  if segments is None:
    out = jax.vmap(kernel)(q, k, v)
  else:
    ids = kernel_lib.SegmentIds(q=segments, kv=segments)
    out = jax.vmap(lambda q, k, v, ids: kernel(q, k, v, segment_ids=ids))(q, k, v, ids)
  return out.transpose(0, 2, 1, 3)
