"""Splash attention (models/splash.py) against the XLA path, in Pallas' interpreter on the CPU (kept small: slow)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.models import build, local_attention, splash
from bert_jax.models.attention import attend
from bert_jax.models.model import EncoderModel, attention_mask_4d

LENGTH = 128  # one kernel block


def _packed(length=LENGTH):
  """Row 0: three documents; row 1: one document and right padding."""
  segments = np.ones((2, length), np.int32)
  segments[0, 40:] = 2
  segments[0, 97:] = 3
  segments[1, length - 30:] = 0
  return segments


def test_segment_labels_recover_the_documents():
  segments = _packed()
  labels = splash.segment_labels(attention_mask_4d(jnp.asarray(segments > 0), jnp.asarray(segments)))
  same = np.asarray(labels)[:, :, None] == np.asarray(labels)[:, None, :]
  np.testing.assert_array_equal(same, segments[:, :, None] == segments[:, None, :])
  np.testing.assert_array_equal(labels == 0, segments == 0)
  padding = splash.segment_labels(attention_mask_4d(jnp.asarray(segments > 0)))
  np.testing.assert_array_equal(padding, (segments > 0).astype(np.int32))


@pytest.mark.parametrize("window", [0, 16])
def test_kernel_matches_xla_with_segments_and_window(window):
  rng = np.random.default_rng(window)
  q, k, v = (jnp.asarray(rng.normal(size=(2, LENGTH, 2, 32)), jnp.float32) for _ in range(3))
  segments = _packed()
  mask = attention_mask_4d(jnp.asarray(segments > 0), jnp.asarray(segments))
  scale = 32 ** -0.5
  ours = splash.attention(q, k, v, splash.segment_labels(mask), scale=scale, window=window, interpret=True)
  ref_mask = local_attention.window_mask(mask, LENGTH, window) if window else mask
  ref = attend(q, k, v, ref_mask, scale=scale)
  valid = segments > 0  # padded queries attend to the padding here (their outputs are never read)
  np.testing.assert_allclose(np.asarray(ours)[valid], np.asarray(ref)[valid], atol=1e-5)


def test_kernel_gradients_match_xla():
  rng = np.random.default_rng(1)
  q, k, v = (jnp.asarray(rng.normal(size=(1, LENGTH, 1, 32)), jnp.float32) for _ in range(3))
  segments = _packed()[:1]
  mask = attention_mask_4d(jnp.asarray(segments > 0), jnp.asarray(segments))
  labels = splash.segment_labels(mask)
  weights = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
  ours = jax.grad(lambda q, k, v: jnp.sum(weights * splash.attention(q, k, v, labels, scale=0.2, window=8,
                                                                    interpret=True)), (0, 1, 2))(q, k, v)
  ref = jax.grad(lambda q, k, v: jnp.sum(weights * attend(q, k, v, mask, scale=0.2, window=8)), (0, 1, 2))(q, k, v)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_modernbert_with_splash_matches_xla_on_packed_rows():
  """Global layers FullMask + segments, local layers LocalMask + segments; rotary positions unchanged."""
  cfg = build("modernbert", "tiny", vocab_size=97, hidden_size=64, num_heads=2, intermediate_size=40, num_layers=3,
              local_attention=32, max_position_embeddings=LENGTH)
  segments = _packed()
  ids = np.random.default_rng(2).integers(5, cfg.vocab_size, (2, LENGTH)).astype(np.int32)
  outs = {}
  for impl in ("xla", "splash"):
    model = EncoderModel(cfg.replace(attention_impl=impl))
    with splash.interpreted():
      params = nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, LENGTH), jnp.int32))["params"])
      outs[impl] = model.apply({"params": params}, ids, np.ones_like(ids), segment_ids=segments).last_hidden_state
  valid = segments > 0
  np.testing.assert_allclose(np.asarray(outs["splash"])[valid], np.asarray(outs["xla"])[valid], atol=1e-4)


@pytest.mark.parametrize("family,overrides,named", [
    ("deberta", {}, "c2p / p2c"),
    ("mpnet", {"attention_dropout_rate": 0.0}, "relative bias"),
    ("bert", {}, "attention_dropout_rate"),
])
def test_what_splash_cannot_take_is_refused(family, overrides, named):
  with pytest.raises(ValueError, match=named):
    build(family, "tiny", attention_impl="splash", **overrides)


def test_lengths_off_the_tpu_block_are_refused():
  with pytest.raises(ValueError, match="multiple of 128"):
    splash.block_size(200, interpret=False)
