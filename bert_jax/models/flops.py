"""Model FLOPs of a training step: what MFU is measured against (the PaLM / MaxText convention)."""

from __future__ import annotations

from bert_jax.models.config import ModelConfig


def train_flops(cfg: ModelConfig, batch: int, length: int, predictions: int | None = None) -> float:
  """Model FLOPs of one training step (forward + backward = 3x forward), rematerialisation not counted.

  The MFU convention of PaLM / MaxText: every matmul once, 2 FLOPs per multiply-add.
  Per token and layer: the q/k/v/output projections (8 H^2), the feed-forward (4 H I; 6 H I
  with a GLU, whose input projection is 2 I wide), the attention scores and the weighted sum
  (4 K H, K the keys a query meets: L on global layers, the window's
  min(L, 2 (local_attention // 2) + 1) on ModernBERT's local layers, the band they compute,
  so long-context MFU is not inflated by scores that are masked away); DeBERTa's disentangled
  terms add the c2p / p2c products against the 2k-row relative table (4 * 2k * H per token and term) and
  the projections of that table. The MLM head runs at `predictions` positions per row
  (all positions when None): the transform (2 H E) and the vocabulary projection (2 E V).
  Embedding lookups cost no FLOPs. XLA's own cost analysis undercounts library calls on
  GPU (cuBLAS / cuDNN), so MFU is reported against this count.
  """
  h, i, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
  keys = sum(min(length, 2 * (cfg.local_attention // 2) + 1) if cfg.is_local_layer(n) else length
             for n in range(layers)) / layers  # per layer, on average
  feed_forward = (6 if cfg.mlp_type == "glu" else 4) * h * i
  per_token_layer = 8 * h * h + feed_forward + 4 * keys * h
  table_flops = 0.0
  if cfg.attention_type == "disentangled" and cfg.relative_attention:
    span = 2 * cfg.relative_span
    terms = len(cfg.pos_att_type)
    per_token_layer += terms * 4 * span * h / 2  # each query/key meets `span` relative rows (gathered to L)
    table_flops = layers * terms * 2 * span * h * h * (0 if cfg.share_att_key else 1)
  forward = batch * length * layers * per_token_layer + table_flops
  if cfg.embedding_size and cfg.embedding_size != h:
    forward += batch * length * 2 * cfg.embedding_size * h
  rows = batch * (predictions if predictions is not None else length)
  e = cfg.embedding_size or h
  forward += rows * (2 * h * e + 2 * e * cfg.vocab_size)
  return 3.0 * forward
