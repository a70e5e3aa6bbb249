"""Heads and pooling against hand computations; DeBERTa's enhanced mask decoder wiring."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.models import build
from bert_jax.models.heads import cls_pool, l2_normalize, max_pool, mean_pool
from bert_jax.models.model import EncoderModel


def test_pooling_by_hand():
  hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
  mask = np.array([[1, 1, 0], [1, 0, 0]])
  np.testing.assert_allclose(mean_pool(hidden, mask), [[1.0, 2.0], [6.0, 7.0]])
  np.testing.assert_allclose(max_pool(hidden, mask), [[2.0, 3.0], [6.0, 7.0]])
  np.testing.assert_allclose(cls_pool(hidden, mask), [[0.0, 1.0], [6.0, 7.0]])
  np.testing.assert_allclose(l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize("head,field,shape", [("classification", "logits", (2, 3)),
                                              ("token_classification", "logits", (2, 7, 3)),
                                              ("qa", "start_logits", (2, 7)),
                                              ("pretraining", "pair_logits", (2, 2))])
def test_task_heads_shapes(head, field, shape):
  model = EncoderModel(build("bert", "tiny", vocab_size=50, num_labels=3), head=head)
  ids = jnp.ones((2, 7), jnp.int32)
  out = model.apply(model.init(jax.random.key(0), ids), ids)
  assert getattr(out, field).shape == shape


def test_enhanced_mask_decoder_wiring():
  cfg = build("deberta", "tiny", vocab_size=64, emd_layers=1)
  ids = jnp.asarray(np.random.default_rng(0).integers(3, 64, (2, 12)), jnp.int32)
  model = EncoderModel(cfg, head="mlm")
  variables = model.init(jax.random.key(0), ids)
  params = jax.tree.map(lambda x: x, variables["params"])
  plain = EncoderModel(cfg.replace(emd_layers=0), head="mlm")
  plain_params = {k: v for k, v in params.items() if k != "emd_position_embeddings"}
  reference = plain.apply({"params": plain_params}, ids)
  # With zero positions, one decoder pass is the last layer over its own input: the plain model's output.
  zeroed = dict(params, emd_position_embeddings=jax.tree.map(jnp.zeros_like, params["emd_position_embeddings"]))
  np.testing.assert_allclose(model.apply({"params": zeroed}, ids).logits, reference.logits, atol=1e-5)
  # Real positions change the MLM logits but never the encoder's own output.
  out = model.apply({"params": params}, ids)
  np.testing.assert_array_equal(out.last_hidden_state, reference.last_hidden_state)
  assert np.abs(out.logits - reference.logits).max() > 1e-3
  with pytest.raises(ValueError, match="emd_layers needs"):
    cfg.replace(scan_layers=True)


def test_activations_match_their_formulas():
  from scipy.special import erf

  from bert_jax.models.config import ACTIVATIONS
  from bert_jax.models.layers import activation
  x = np.linspace(-6, 6, 241)
  tanh_gelu = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
  sigmoid = 1 / (1 + np.exp(-x))
  formulas = {
      "gelu": 0.5 * x * (1 + erf(x / np.sqrt(2))), "gelu_python": 0.5 * x * (1 + erf(x / np.sqrt(2))),
      "gelu_new": tanh_gelu, "gelu_pytorch_tanh": tanh_gelu, "gelu_fast": tanh_gelu, "gelu_accurate": tanh_gelu,
      "quick_gelu": x / (1 + np.exp(-1.702 * x)), "relu": np.maximum(x, 0), "relu6": np.clip(x, 0, 6),
      "leaky_relu": np.where(x > 0, x, 0.01 * x), "silu": x * sigmoid, "swish": x * sigmoid,
      "mish": x * np.tanh(np.log1p(np.exp(x))), "tanh": np.tanh(x), "sigmoid": sigmoid, "linear": x,
  }
  assert set(formulas) == set(ACTIVATIONS)
  for name, expected in formulas.items():
    np.testing.assert_allclose(activation(name)(jnp.asarray(x, jnp.float32)), expected, atol=2e-6, err_msg=name)
