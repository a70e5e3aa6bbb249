"""DeBERTa's disentangled attention against a slow, obvious implementation written from the paper.

He et al. (2021), eq. 4: A_ij = Q_i.K_j + Q_i.Kr_{d(i,j)} + K_j.Qr_{d(j,i)} with
d(i, j) = clamp(i - j + k, 0, 2k - 1), scaled by 1 / sqrt(3d); DeBERTa-v2 first
maps i - j into log buckets. The loops below index the table per (i, j) pair,
exactly as written there, independently of our matmul + rel_shift formulation.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.models.config import ModelConfig
from bert_jax.models.relative import DisentangledSelfAttention, log_bucket, rel_shift


def slow_bucket(r: int, bucket_size: int, max_position: int) -> int:
  """Log bucket of one distance, written from the DeBERTa-v2 description."""
  mid = bucket_size // 2
  if abs(r) < mid:
    return r
  log_pos = math.ceil(math.log(abs(r) / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
  return int(math.copysign(log_pos, r)) if abs(r) > mid else r


def slow_scores(q, k, kr, qr, cfg: ModelConfig, length: int):
  """Per-pair loop: q/k [L, H, D], kr/qr [2k, H, D] (projected table) -> raw scores [H, L, L] (unscaled)."""
  span = cfg.relative_span
  max_rel = cfg.max_relative_positions if cfg.max_relative_positions > 0 else cfg.max_position_embeddings
  out = np.zeros((q.shape[1], length, length))
  for i in range(length):
    for j in range(length):
      r = i - j
      if cfg.position_buckets > 0:
        r = slow_bucket(r, cfg.position_buckets, max_rel)
      delta = min(max(r + span, 0), 2 * span - 1)
      score = np.einsum("hd,hd->h", q[i], k[j])
      if "c2p" in cfg.pos_att_type:
        score = score + np.einsum("hd,hd->h", q[i], kr[delta])
      if "p2c" in cfg.pos_att_type:
        # Key j looks at query i through the relative position of j with respect to i, negated:
        # d(j, i) for the key-to-query distance equals delta for a symmetric bucket.
        score = score + np.einsum("hd,hd->h", k[j], qr[delta])
      out[:, i, j] = score
  return out


def test_rel_shift_is_a_gather():
  rng = np.random.default_rng(0)
  for length in (1, 2, 5, 17):
    x = rng.normal(size=(3, length, 2 * length - 1)).astype(np.float32)
    expected = np.empty((3, length, length))
    for i in range(length):
      for j in range(length):
        expected[:, i, j] = x[:, i, j - i + length - 1]
    np.testing.assert_array_equal(np.asarray(rel_shift(jnp.asarray(x))), expected)


@pytest.mark.parametrize("bucket_size,max_position", [(8, 32), (256, 512), (16, 48), (6, 24)])
def test_log_buckets_match_the_formula(bucket_size, max_position):
  distances = np.arange(-3 * max_position, 3 * max_position)
  ours = log_bucket(distances, bucket_size, max_position)
  expected = [slow_bucket(int(r), bucket_size, max_position) for r in distances]
  # float32 vs float64 may round differently exactly on a bucket edge; allow none off by more than one
  # and require agreement almost everywhere.
  diff = np.abs(ours - np.array(expected))
  assert diff.max() <= 1 and (diff == 0).mean() > 0.99
  assert np.all(ours == -log_bucket(-distances, bucket_size, max_position)), "buckets are odd-symmetric"


CONFIGS = {
    "v1": dict(pos_att_type=("c2p", "p2c"), max_relative_positions=6, attention_key_bias=False, pos_key_bias=False),
    "v2_buckets": dict(pos_att_type=("p2c", "c2p"), position_buckets=8, max_relative_positions=32),
    "v3_shared": dict(pos_att_type=("p2c", "c2p"), position_buckets=4, max_relative_positions=16, share_att_key=True),
    "c2p_only": dict(pos_att_type=("c2p",), max_relative_positions=64),
    "p2c_only": dict(pos_att_type=("p2c",), position_buckets=6, max_relative_positions=12),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_disentangled_attention_matches_slow_reference(name):
  cfg = ModelConfig(hidden_size=24, num_heads=3, attention_type="disentangled", dropout_rate=0.0,
                    attention_dropout_rate=0.0, max_position_embeddings=64, **CONFIGS[name])
  length, batch = 19, 2
  rng = np.random.default_rng(1)
  x = rng.normal(size=(batch, length, cfg.hidden_size)).astype(np.float32)
  table = rng.normal(size=(2 * cfg.relative_span, cfg.hidden_size)).astype(np.float32)
  keep = np.ones((batch, length), bool)
  keep[1, 13:] = False
  mask = keep[:, None, None, :]
  module = DisentangledSelfAttention(cfg)
  params = nn.meta.unbox(module.init(jax.random.key(0), x, mask, relative={"embeddings": table})["params"])
  params = jax.tree.map(lambda p: p + 0.3 * rng.normal(size=p.shape).astype(np.float32), params)
  ours = module.apply({"params": params}, x, mask, relative={"embeddings": table})

  def project(name, inputs):
    p = params[name]
    y = np.einsum("...e,ehd->...hd", inputs, p["kernel"])
    return y + p["bias"] if "bias" in p else y

  d = cfg.dim_per_head
  scale = 1 / math.sqrt(d * (1 + len(cfg.pos_att_type)))
  for b in range(batch):
    q, k, v = project("query", x[b]), project("key", x[b]), project("value", x[b])
    kr = project("key" if cfg.share_att_key else "pos_key", table) if "c2p" in cfg.pos_att_type else None
    qr = project("query" if cfg.share_att_key else "pos_query", table) if "p2c" in cfg.pos_att_type else None
    scores = slow_scores(q, k, kr, qr, cfg, length) * scale
    scores = np.where(keep[b][None, None, :], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    expected = np.einsum("hqk,khd->qhd", probs, v)
    np.testing.assert_allclose(np.asarray(ours[b]), expected, atol=2e-5, rtol=1e-5)
