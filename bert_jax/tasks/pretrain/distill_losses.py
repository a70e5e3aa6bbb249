"""Distillation losses: pure float32 functions returning *sums* over weighted rows or positions.

Sums (never means) fit the Objective contract of sums and counts, so gradient accumulation
and multi-batch evaluation add up exactly:

  soft_target_kl         T^2 * KL(softmax(t / T) || softmax(s / T)) per row (Hinton et al., 2015; the T^2
                         keeps the gradient scale independent of T)
  hidden_mse             mean over features of (s - t)^2 per token (hidden-state transfer, TinyBERT-style)
  cosine_embedding_loss  1 - cos(s, t) per token (DistilBERT's hidden-state alignment)
  attention_kl           KL(teacher || student) over keys, averaged over heads, per valid query (MiniLM)
  value_relation         softmax(V V^T / sqrt(d)) per head: MiniLM's value relation, compared with attention_kl
  distill_logits_sums    soft targets plus hard labels for classification fine-tuning, as Objective sums

The teacher side is always a constant (stop_gradient).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.tasks.base import cross_entropy

_TINY = float(np.finfo(np.float32).tiny)


def _weights(weights: jax.Array | None, shape) -> jax.Array:
  return jnp.ones(shape, jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)


def soft_target_kl(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float,
                   weights: jax.Array | None = None) -> jax.Array:
  """T^2 * sum over rows of weights * KL(softmax(teacher / T) || softmax(student / T)).

  student_logits, teacher_logits [..., V]; weights [...] (None: all 1) -> float32 scalar (a sum).
  The teacher side is a constant (stop_gradient).
  """
  if student_logits.shape != teacher_logits.shape:
    raise ValueError(f"soft_target_kl: student logits {student_logits.shape} and teacher logits "
                     f"{teacher_logits.shape} differ (do teacher and student share the vocabulary?)")
  t = float(temperature)
  if t <= 0:
    raise ValueError(f"soft_target_kl: temperature must be > 0, got {temperature}")
  log_p = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / t, axis=-1)
  log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, axis=-1)
  kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
  return t * t * jnp.sum(kl * _weights(weights, kl.shape))


def hidden_mse(student_hidden: jax.Array, teacher_hidden: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Sum over tokens of mask * mean over features of (student - teacher)^2.

  student_hidden, teacher_hidden [..., L, H] (project the student first when widths differ);
  mask [..., L] (None: all 1) -> float32 scalar. The mean over H keeps the scale width independent.
  """
  if student_hidden.shape != teacher_hidden.shape:
    raise ValueError(f"hidden_mse: student {student_hidden.shape} vs teacher {teacher_hidden.shape}; "
                     "project the student to the teacher's width first")
  diff = student_hidden.astype(jnp.float32) - jax.lax.stop_gradient(teacher_hidden).astype(jnp.float32)
  per_token = jnp.mean(jnp.square(diff), axis=-1)
  return jnp.sum(per_token * _weights(mask, per_token.shape))


def cosine_embedding_loss(student_hidden: jax.Array, teacher_hidden: jax.Array, mask: jax.Array | None = None,
                          eps: float = 1e-8) -> jax.Array:
  """Sum over tokens of mask * (1 - cos(student, teacher)) (DistilBERT's alignment, target +1).

  student_hidden, teacher_hidden [..., L, H]; mask [..., L] (None: all 1) -> float32 scalar.
  """
  if student_hidden.shape != teacher_hidden.shape:
    raise ValueError(f"cosine_embedding_loss: student {student_hidden.shape} vs teacher {teacher_hidden.shape}; "
                     "project the student to the teacher's width first")
  s = student_hidden.astype(jnp.float32)
  t = jax.lax.stop_gradient(teacher_hidden).astype(jnp.float32)
  norm = lambda x: jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(x), axis=-1)), eps)
  cos = jnp.sum(s * t, axis=-1) / (norm(s) * norm(t))
  return jnp.sum((1.0 - cos) * _weights(mask, cos.shape))


def attention_kl(student_probs: jax.Array, teacher_probs: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """MiniLM's attention transfer: sum over valid queries of the head-mean KL(teacher || student) over keys.

  student_probs, teacher_probs [b, heads, lq, lk] (rows are distributions; zeros at masked keys,
  which then contribute nothing); mask [b, lq] (None: all 1) -> float32 scalar.

  The head counts must match (ValueError otherwise), as in MiniLM: averaging the maps over heads
  would discard exactly the per-head structure this loss transfers. Give the student the
  teacher's number of heads (its head_dim may differ).
  """
  if student_probs.shape[1] != teacher_probs.shape[1]:
    raise ValueError(f"attention_kl: the student has {student_probs.shape[1]} attention heads and the teacher "
                     f"{teacher_probs.shape[1]}; attention transfer needs equal head counts (set "
                     "config.model.num_heads to the teacher's, or alpha_attention / alpha_value to 0)")
  if student_probs.shape != teacher_probs.shape:
    raise ValueError(f"attention_kl: student maps {student_probs.shape} vs teacher maps {teacher_probs.shape}")
  p = jax.lax.stop_gradient(teacher_probs).astype(jnp.float32)
  q = student_probs.astype(jnp.float32)
  # Clamped logs keep masked keys (p = q = 0) finite in value and gradient; where() drops their terms.
  terms = jnp.where(p > 0, p * (jnp.log(jnp.maximum(p, _TINY)) - jnp.log(jnp.maximum(q, _TINY))), 0.0)
  per_query = jnp.mean(jnp.sum(terms, axis=-1), axis=1)  # [b, lq]
  return jnp.sum(per_query * _weights(mask, per_query.shape))


def value_relation(values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """MiniLM's value relation softmax(V V^T / sqrt(d)) per head, in float32.

  values [b, l, heads, d]; mask: keys a token may relate to, [b, l] or broadcastable to
  [b, heads, l, l] (bool / 0-1) -> [b, heads, l, l] rows summing to 1, zeros at masked keys.
  """
  v = values.astype(jnp.float32)
  scores = jnp.einsum("bqhd,bkhd->bhqk", v, v) * (v.shape[-1] ** -0.5)
  if mask is not None:
    mask = jnp.asarray(mask).astype(bool)
    if mask.ndim == 2:
      mask = mask[:, None, None, :]
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    return jnp.where(mask, jax.nn.softmax(scores, axis=-1), 0.0)
  return jax.nn.softmax(scores, axis=-1)


def distill_logits_sums(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array | None,
                        weights: jax.Array | None, temperature: float, alpha_kd: float,
                        alpha_hard: float) -> dict[str, jax.Array]:
  """Soft targets plus hard labels for classification fine-tuning, as Objective sums.

  student_logits, teacher_logits [B, C] (teacher treated as a constant); labels [B] int (None
  when alpha_hard == 0); weights [B] (0 drops a row; None: all 1). Returns float32 sums:
    distill_loss  alpha_kd * T^2 KL + alpha_hard * cross entropy   (train on distill_loss / distill_count)
    kd_loss, hard_loss, hard_correct (the parts, for logging), and
    distill_count, kd_count, hard_count = sum(weights),
  so `Objective.summarize` logs distill_loss, kd_loss, hard_loss and hard_accuracy means. Use
  Term("distill_loss", "distill_count") as the objective's single term.
  """
  w = _weights(weights, student_logits.shape[:-1])
  count = jnp.sum(w)
  kd = soft_target_kl(student_logits, teacher_logits, temperature, w)
  out = {"kd_loss": kd, "kd_count": count, "distill_count": count}
  total = float(alpha_kd) * kd
  if labels is not None:
    hard = jnp.sum(cross_entropy(student_logits, labels) * w)
    correct = (jnp.argmax(student_logits, -1) == labels).astype(jnp.float32)
    out.update(hard_loss=hard, hard_correct=jnp.sum(correct * w), hard_count=count)
    total = total + float(alpha_hard) * hard
  elif alpha_hard:
    raise ValueError("distill_logits_sums: alpha_hard > 0 needs labels")
  out["distill_loss"] = total
  return out
