"""Replaced-token detection: corruption by hand, and where each loss's gradient flows under each sharing mode."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bert_jax.models import build
from bert_jax.tasks.pretrain.rtd import RTDObjective, replace_at
from tests.test_train import corpus  # noqa: F401 - the small-corpus fixture


def test_replace_at_by_hand():
  ids = jnp.array([[10, 11, 12, 13], [20, 21, 22, 23]])
  out = replace_at(ids, jnp.array([[1, 3], [0, 0]]), jnp.array([[7, 8], [9, 9]]), jnp.array([[1.0, 1.0], [1.0, 0.0]]))
  np.testing.assert_array_equal(out, [[10, 7, 12, 8], [9, 21, 22, 23]])


def _setup(sharing):
  cfg = build("bert", "tiny", vocab_size=40, num_layers=1, scan_layers=True)
  rtd = ml_collections.ConfigDict({"generator_scale": 0.5, "generator_depth_scale": 1.0,
                                   "discriminator_weight": 50.0, "embedding_sharing": sharing})
  objective = RTDObjective(cfg, rtd)
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 40, (4, 12)).astype(np.int32)
  positions = np.tile(np.array([2, 5, 7], np.int32), (4, 1))
  batch = {"input_ids": ids.copy(), "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids),
           "masked_positions": positions, "masked_ids": np.take_along_axis(ids, positions, 1),
           "masked_weights": np.ones(positions.shape, np.float32)}
  batch["input_ids"][:, [2, 5, 7]] = 4
  init = jax.jit(lambda i: nn.meta.unbox(objective.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, i)))
  params = init(jnp.asarray(ids))
  return objective, params, batch


def _grads(objective, params, batch, term):
  def loss(p):
    sums = objective.sums(p, batch, jax.random.key(1))
    return sums[f"{term}_loss"]
  return jax.jit(jax.grad(loss))(params)


@pytest.mark.parametrize("sharing", ["gdes", "shared", "none"])
def test_gradient_flow_by_sharing_mode(sharing):
  objective, params, batch = _setup(sharing)
  rtd = _grads(objective, params, batch, "rtd")
  mlm = _grads(objective, params, batch, "mlm")
  gen_words = lambda g: np.abs(g["generator"]["embeddings"]["word_embeddings"]["embedding"]).sum()
  assert gen_words(mlm) > 0
  if sharing == "gdes":
    assert gen_words(rtd) == 0, "GDES: the discriminator loss must not move the generator's embeddings"
    assert np.abs(rtd["embedding_delta"]["embedding"]).sum() > 0
    assert np.abs(mlm["embedding_delta"]["embedding"]).sum() == 0
  elif sharing == "shared":
    assert gen_words(rtd) > 0 and "word_embeddings" not in params["discriminator"]["embeddings"]
  else:
    assert gen_words(rtd) == 0 and "word_embeddings" in params["discriminator"]["embeddings"]


def test_labels_mark_exactly_the_changed_tokens():
  objective, params, batch = _setup("gdes")
  sums = jax.jit(objective.sums)(params, batch, jax.random.key(3))
  # Sampled tokens that equal the original count as original: at most 3 replaced per row.
  assert 0 <= float(sums["replaced"]) <= 12
  assert float(sums["rtd_count"]) == 48


def test_a_run_keeps_the_discriminator_and_the_generator(corpus, tmp_path):
  """WORKDIR/model is the discriminator (head rtd), WORKDIR/generator the generator (head mlm); with
  ELECTRA's sharing both hold the one word-embedding table."""
  from bert_jax import train
  from bert_jax.convert.pretrained import from_pretrained
  from tests.test_train import quick_config
  config = quick_config(corpus, total_steps=2, objective="rtd", **{"rtd.embedding_sharing": "shared"})
  train.train_and_evaluate(config, str(tmp_path))
  discriminator, d_params = from_pretrained(tmp_path / "model", head="rtd")
  generator, g_params = from_pretrained(tmp_path / "generator", head="mlm")
  assert generator.config.hidden_size == discriminator.config.hidden_size // 2
  assert generator.config.embedding_size == discriminator.config.embed_dim
  np.testing.assert_array_equal(d_params["embeddings"]["word_embeddings"]["embedding"],
                                g_params["embeddings"]["word_embeddings"]["embedding"])


def test_both_models_of_a_run_export_as_electra_folders(corpus, tmp_path):
  """The discriminator exports as ElectraForPreTraining, the generator as ElectraForMaskedLM; each
  Hugging Face folder reloads to the same outputs."""
  import json

  from bert_jax import train
  from bert_jax.convert.pretrained import export_hf, from_pretrained
  from tests.test_train import quick_config
  config = quick_config(corpus, total_steps=1, objective="rtd", **{"model.scan_layers": False})
  train.train_and_evaluate(config, str(tmp_path))
  ids = np.random.default_rng(0).integers(5, 800, (2, 12)).astype(np.int32)
  for name, head, architecture in (("model", "rtd", "ElectraForPreTraining"), ("generator", "mlm", "ElectraForMaskedLM")):
    model, params = from_pretrained(tmp_path / name, head=head)
    export_hf(str(tmp_path / f"hf_{name}"), model, params)
    hf = json.loads((tmp_path / f"hf_{name}" / "config.json").read_text())
    assert (hf["model_type"], hf["architectures"]) == ("electra", [architecture])
    again, again_params = from_pretrained(tmp_path / f"hf_{name}", head=head)
    np.testing.assert_allclose(again.apply({"params": again_params}, ids).logits,
                               model.apply({"params": params}, ids).logits, atol=1e-5)
