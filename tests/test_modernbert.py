"""ModernBERT beyond the parity goldens: packed rows, the sliding window, context extension, pretraining, errors."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import train
from bert_jax.convert import hf_config
from bert_jax.metrics import read_metrics
from bert_jax.models import build
from bert_jax.models.model import EncoderModel
from bert_jax.models.rotary import segment_positions
from tests.test_configs import load_config
from tests.test_train import apply, corpus  # noqa: F401 - the small-corpus fixture

CFG = build("modernbert", "tiny", vocab_size=97, hidden_size=32, num_heads=2, intermediate_size=40, num_layers=4,
            local_attention=6, global_attn_every_n_layers=2, max_position_embeddings=64)


def _params(cfg, head=None):
  model = EncoderModel(cfg, head=head)
  return model, nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])


def test_segment_positions_restart_per_document():
  segments = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0]])
  np.testing.assert_array_equal(segment_positions(segments), [[0, 1, 2, 0, 1, 0, 0, 1]])


def test_a_packed_row_computes_each_document_as_if_alone():
  """Attention within the document, rotary positions from 0, the window counted within it."""
  model, params = _params(CFG)
  rng = np.random.default_rng(0)
  lengths = (11, 7, 9)
  docs = [rng.integers(5, CFG.vocab_size, n).astype(np.int32) for n in lengths]
  row = np.concatenate(docs + [np.zeros(3, np.int32)])[None]
  segments = np.concatenate([np.full(n, k + 1) for k, n in enumerate(lengths)] + [np.zeros(3)])[None].astype(np.int32)
  packed = model.apply({"params": params}, row, np.ones_like(row), segment_ids=segments).last_hidden_state[0]
  start = 0
  for doc in docs:
    alone = model.apply({"params": params}, doc[None]).last_hidden_state[0]
    np.testing.assert_allclose(packed[start:start + len(doc)], alone, atol=2e-5)
    start += len(doc)


def test_sliding_window_against_a_masked_reference():
  """One local attention layer equals a global layer given the window |i - j| <= window / 2 as a mask."""
  from bert_jax.models import rotary
  from bert_jax.models.encoder import Layer
  cfg = CFG.replace(num_layers=2, global_attn_every_n_layers=2)  # layer 1 is local
  model, params = _params(cfg)
  ids = np.random.default_rng(1).integers(5, cfg.vocab_size, (2, 20)).astype(np.int32)
  ours = model.apply({"params": params}, ids, output_hidden_states=True).hidden_states
  # Reference: the same weights as a global layer, the window given as an explicit mask.
  globally = cfg.replace(local_attention=0)
  x = ours[1]
  distance = np.abs(np.arange(20)[:, None] - np.arange(20)[None])
  window_mask = jnp.asarray((distance <= cfg.local_attention // 2)[None, None]) & jnp.ones((2, 1, 1, 20), bool)
  positions = jnp.arange(20)[None]
  layer_params = {"params": params["encoder"]["layer_1"]}
  shared = {"rotary_global": rotary.rotary_tables(positions, cfg.dim_per_head, cfg.local_rotary_base)}
  ref = Layer(globally, index=1).apply(layer_params, x, window_mask, shared)
  final = params["encoder"]["final_norm"]["scale"]
  ref = (ref - ref.mean(-1, keepdims=True)) / np.sqrt(ref.var(-1, keepdims=True) + cfg.layer_norm_eps) * final
  np.testing.assert_allclose(ours[2], ref, atol=2e-5)


def test_scanned_layers_are_refused_with_a_reason():
  with pytest.raises(ValueError, match="scan_layers"):
    CFG.replace(scan_layers=True)


@pytest.mark.parametrize("change,named", [
    ({"layer_types": ["full_attention", "full_attention", "sliding_attention"]}, "layer_types"),
    ({"rope_parameters": {"full_attention": {"rope_type": "linear", "rope_theta": 1.0, "factor": 2.0},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 1.0}}}, "rope_type"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings"),
    ({"classifier_pooling": "max"}, "classifier_pooling"),
])
def test_unsupported_reference_options_are_named(change, named):
  hf = {"model_type": "modernbert", "vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 3,
        "num_attention_heads": 2, "intermediate_size": 40, **change}
  with pytest.raises(ValueError, match=named):
    hf_config.model_config_from_hf(hf, "config.json")


def test_reference_config_round_trip():
  hf = {"model_type": "modernbert", "vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 5,
        "num_attention_heads": 2, "intermediate_size": 40, "local_attention": 10, "global_attn_every_n_layers": 2,
        "global_rope_theta": 1000.0, "local_rope_theta": 100.0, "attention_bias": True, "decoder_bias": False}
  cfg = hf_config.model_config_from_hf(hf)
  assert (cfg.global_attn_every_n_layers, cfg.rotary_base, cfg.local_rotary_base) == (2, 1000.0, 100.0)
  assert [cfg.is_local_layer(i) for i in range(5)] == [False, True, False, True, False]
  back = hf_config.model_config_from_hf(hf_config.hf_config_from_model(cfg, "mlm"))
  assert back == cfg


def _pretrain_config(corpus, **extra):  # noqa: F811 - the fixture's value
  flags = {"data.max_length": 64, "data.max_predictions": 20, "batch_size": 16, "log_every": 1, "eval_every": 0,
           "eval_steps": 2, "checkpoint_every": 1000, "optimizer.warmup_steps": 5,
           "optimizer.learning_rate": 3e-3, **corpus, **extra}
  return apply(load_config("pretrain", "modernbert-tiny"), [f"--config.{k}={v}" for k, v in flags.items()])


def test_modernbert_tiny_pretrains_on_packed_rows(corpus, tmp_path):  # noqa: F811
  config = _pretrain_config(corpus, total_steps=40)
  assert config.data.packing and config.data.mask_rate == 0.3 and config.optimizer.schedule == "wsd"
  last = train.train_and_evaluate(config, str(tmp_path))
  records = read_metrics(tmp_path)
  losses = {m["step"]: m["train/loss"] for m in records if "train/loss" in m}
  accuracy = {m["step"]: m["train/mlm_accuracy"] for m in records if "train/mlm_accuracy" in m}
  assert np.mean([losses[s] for s in range(36, 41)]) < losses[1] - 3.0
  assert np.mean([accuracy[s] for s in range(36, 41)]) > accuracy[1] + 0.02
  assert last["eval/mlm_accuracy"] > 0.02

  # Context extension: a longer row and another rotary base, starting from the trained model.
  longer = _pretrain_config(corpus, total_steps=2, init_from=str(tmp_path / "model"),
                            **{"data.max_length": 128, "data.max_predictions": 40, "model.rotary_base": 320000.0})
  train.train_and_evaluate(longer, str(tmp_path / "extended"))
  meta = json.loads((tmp_path / "extended" / "model" / "bert_jax.json").read_text())
  assert meta["model"]["rotary_base"] == 320000.0
  first = [m for m in read_metrics(tmp_path / "extended") if "train/loss" in m][0]["train/loss"]
  assert first < losses[1] - 2.0  # it started from the trained weights, not from scratch
