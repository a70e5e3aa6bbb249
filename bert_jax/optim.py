"""Optax optimizers from `config.optimizer`: AdamW / LAMB, warmup + decay, clipping, decay masks, LLRD.

Gradient accumulation lives in the train step (a scan over micro-batches), so
one optimizer update is one step and schedules count optimizer steps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

# Parameters that get weight decay: matrices and embedding tables, never LayerNorm or biases.
_DECAYED = ("kernel", "embedding", "head_logits_proj", "head_weights_proj")


def warmup_stable_decay(peak: float, end: float, stable_steps: int, decay_steps: int) -> optax.Schedule:
  """`peak` for stable_steps, then 1 - sqrt decay to `end` over decay_steps (ModernBERT's trapezoid)."""
  def schedule(count):
    progress = jnp.clip((count - stable_steps) / max(decay_steps, 1), 0.0, 1.0)
    return end + (peak - end) * (1.0 - jnp.sqrt(progress))
  return schedule


def learning_rate_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then linear / cosine / polynomial decay, constant, or wsd.

  wsd (warmup-stable-decay): constant after the warmup until the last `decay_ratio` of the
  steps, which decay as 1 - sqrt to `end_learning_rate`.
  """
  warmup = int(opt.warmup_ratio * total_steps) if opt.get("warmup_ratio", 0.0) > 0 else int(opt.warmup_steps)
  warmup = min(warmup, max(total_steps, 1))
  peak, end = float(opt.learning_rate), float(opt.end_learning_rate)
  decay_steps = max(total_steps - warmup, 1)
  if opt.schedule == "wsd":
    ratio = float(opt.get("decay_ratio", 0.1))
    if not 0.0 <= ratio <= 1.0:
      raise ValueError(f"config.optimizer.decay_ratio={ratio}: expected a fraction in [0, 1]")
    tail = min(int(round(ratio * total_steps)), decay_steps)
    decay = warmup_stable_decay(peak, end, decay_steps - tail, tail)
  elif opt.schedule == "linear":
    decay = optax.linear_schedule(peak, end, decay_steps)
  elif opt.schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
  elif opt.schedule == "polynomial":
    decay = optax.polynomial_schedule(peak, end, float(opt.power), decay_steps)
  elif opt.schedule == "constant":
    decay = optax.constant_schedule(peak)
  else:
    raise ValueError(f"config.optimizer.schedule={opt.schedule!r}: expected linear, cosine, polynomial, constant "
                     "or wsd")
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _path_names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def weight_decay_mask(params) -> object:
  """True for leaves that get weight decay (see _DECAYED)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _path_names(path)[-1] in _DECAYED, params)


def layer_depths(params, num_layers: int) -> object:
  """Depth of each parameter for layer-wise LR decay: embeddings 0, layer i -> i + 1, the rest num_layers + 1.

  Scanned layers (encoder/layers, stacked on axis 0) get a depth vector [num_layers]
  shaped to broadcast over the stacked parameter.
  """
  def depth(path, leaf):
    names = _path_names(path)
    if names[0] == "embeddings":
      return jnp.zeros((), jnp.float32)
    if names[0] == "encoder" and names[1] == "layers":
      return (jnp.arange(num_layers, dtype=jnp.float32) + 1).reshape((num_layers,) + (1,) * (leaf.ndim - 1))
    if names[0] == "encoder" and (m := re.match(r"layer_(\d+)$", names[1])):
      return jnp.asarray(int(m.group(1)) + 1, jnp.float32)
    if names[0] == "encoder" and names[1].startswith(("group_", "shared_")):
      return jnp.asarray(num_layers / 2 + 0.5, jnp.float32)  # shared across depths: the middle
    if names[0] == "encoder":  # relative embeddings, conv: seen by every layer, treat as embeddings
      return jnp.zeros((), jnp.float32)
    return jnp.asarray(num_layers + 1, jnp.float32)
  return jax.tree_util.tree_map_with_path(depth, params)


def scale_by_tree(factors) -> optax.GradientTransformation:
  """Multiplies each update by a fixed factor (a tree of arrays broadcastable to the params)."""
  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, f: u * f.astype(u.dtype), updates, factors), state
  return optax.GradientTransformation(init, update)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
  """optax.clip_by_global_norm that takes the gradients' norm from its caller (`grad_norm=`).

  The train step computes that norm anyway (a logged metric and the non-finite guard) and runs the
  update inside a branch, where XLA cannot share one reduction between the two: a second norm in the
  branch would round differently in its last bits, and clipping would move every later number.
  """
  def update(updates, state, params=None, *, grad_norm=None, **extra_args):
    del params, extra_args
    norm = optax.tree.norm(updates) if grad_norm is None else grad_norm
    trigger = jnp.squeeze(norm < max_norm)  # optax's formula, so clipped steps agree with it bit for bit
    return jax.tree.map(lambda t: jax.lax.select(trigger, t, (t / norm.astype(t.dtype)) * max_norm), updates), state
  return optax.GradientTransformationExtraArgs(optax.init_empty_state, update)


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int, params,
                   num_layers: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer and its schedule; `params` (shapes suffice) fix the masks and LLRD factors."""
  schedule = learning_rate_schedule(opt, total_steps)
  mask = weight_decay_mask(params)
  if opt.name == "adamw":
    core = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, mask=mask)
  elif opt.name == "lamb":
    core = optax.lamb(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, mask=mask)
  else:
    raise ValueError(f"config.optimizer.name={opt.name!r}: expected adamw or lamb")
  parts = []
  if opt.clip_norm and opt.clip_norm > 0:
    parts.append(clip_by_global_norm(opt.clip_norm))
  parts.append(core)
  if opt.layerwise_lr_decay != 1.0:
    decay = float(opt.layerwise_lr_decay)
    depths = layer_depths(params, num_layers)
    parts.append(scale_by_tree(jax.tree.map(lambda d: decay ** (num_layers + 1 - d), depths)))
  return optax.chain(*parts), schedule


def describe(opt: Mapping) -> str:
  return (f"{opt['name']} lr={opt['learning_rate']} {opt['schedule']} warmup={opt['warmup_steps']} "
          f"wd={opt['weight_decay']} clip={opt['clip_norm']}")
