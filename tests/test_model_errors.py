"""Bad input to the model and converter fails loudly, naming what is wrong."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from bert_jax.convert.pretrained import from_pretrained, save_pretrained
from bert_jax.models.config import ModelConfig
from bert_jax.models.model import EncoderModel
from tests.conftest import TESTDATA

HF = TESTDATA / "hf"


def test_sequence_longer_than_position_table_raises():
  model = EncoderModel(ModelConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                                   max_position_embeddings=8))
  with pytest.raises(ValueError, match="longer than the position table"):
    model.init(jax.random.key(0), jnp.ones((1, 9), jnp.int32))


def test_roberta_position_table_counts_the_padding_offset():
  model, params = from_pretrained(HF / "roberta", head="mlm")
  limit = model.config.max_position_embeddings - model.config.pad_token_id - 1
  model.apply({"params": params}, np.full((1, limit), 5, np.int32))
  with pytest.raises(ValueError, match=f"allows \\({limit} tokens"):
    model.apply({"params": params}, np.full((1, limit + 1), 5, np.int32))


def test_missing_tensor_is_named(tmp_path):
  shutil.copytree(HF / "bert_gelu", tmp_path / "m")
  state = load_file(tmp_path / "m" / "model.safetensors")
  del state["bert.encoder.layer.1.attention.self.key.weight"]
  save_file(state, tmp_path / "m" / "model.safetensors")
  with pytest.raises(KeyError, match="encoder.layer.1.attention.self.key.weight"):
    from_pretrained(tmp_path / "m", head="mlm")


def test_wrong_shape_is_named(tmp_path):
  shutil.copytree(HF / "bert_gelu", tmp_path / "m")
  config = json.loads((tmp_path / "m" / "config.json").read_text())
  config["intermediate_size"] += 1
  (tmp_path / "m" / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match="intermediate.dense|mlp/wi"):
    from_pretrained(tmp_path / "m", head="mlm")


def test_unexpected_backbone_tensor_is_named(tmp_path):
  shutil.copytree(HF / "bert_gelu", tmp_path / "m")
  state = load_file(tmp_path / "m" / "model.safetensors")
  state["bert.encoder.layer.0.attention.self.distance_embedding.weight"] = np.zeros((3, 3), np.float32)
  save_file(state, tmp_path / "m" / "model.safetensors")
  with pytest.raises(ValueError, match="distance_embedding"):
    from_pretrained(tmp_path / "m", head="mlm")


def test_untied_decoder_is_refused(tmp_path):
  shutil.copytree(HF / "bert_gelu", tmp_path / "m")
  state = load_file(tmp_path / "m" / "model.safetensors")
  words = state["bert.embeddings.word_embeddings.weight"]
  state["cls.predictions.decoder.weight"] = words + 1.0
  save_file(state, tmp_path / "m" / "model.safetensors")
  with pytest.raises(ValueError, match="untied"):
    from_pretrained(tmp_path / "m", head="mlm")


def test_unsupported_model_type_and_position_type(tmp_path):
  shutil.copytree(HF / "bert_gelu", tmp_path / "m")
  config = json.loads((tmp_path / "m" / "config.json").read_text())
  (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "position_embedding_type": "relative_key"}))
  with pytest.raises(ValueError, match="relative_key"):
    from_pretrained(tmp_path / "m")
  (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "model_type": "funnel"}))
  with pytest.raises(ValueError, match=r"model_type='funnel' is not supported; expected one of .*'modernbert'"):
    from_pretrained(tmp_path / "m")


def test_an_architecture_without_a_head_here_names_itself(tmp_path):
  """A BertForMultipleChoice folder: converting it, or asking for a head, would drop its classifier."""
  from bert_jax.convert import __main__ as convert
  shutil.copytree(HF / "bert_cross_encoder", tmp_path / "m")
  config = json.loads((tmp_path / "m" / "config.json").read_text())
  (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMultipleChoice"]}))
  named = r"architectures=\['BertForMultipleChoice'\] is not supported .* 'BertForSequenceClassification'"
  with pytest.raises(ValueError, match=named):
    convert.to_bert_jax(str(tmp_path / "m"), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()
  with pytest.raises(ValueError, match=named):
    from_pretrained(tmp_path / "m", head="classification")
  model, _ = from_pretrained(tmp_path / "m")  # the encoder alone is well defined
  assert model.head_name is None


def test_bert_jax_checkpoint_round_trip_and_shape_mismatch(tmp_path):
  model, params = from_pretrained(HF / "deberta_v3", head="mlm")
  save_pretrained(tmp_path / "ckpt", model, params, tokenizer_from=str(HF / "deberta_v3"))
  again, params2 = from_pretrained(tmp_path / "ckpt", head="mlm")
  assert again.config == model.config
  jax.tree.map(np.testing.assert_array_equal, params, params2)
  scanned, params3 = from_pretrained(tmp_path / "ckpt", head="mlm", scan_layers=True)
  ids = np.array([[1, 5, 6, 7, 2]], np.int32)
  np.testing.assert_allclose(scanned.apply({"params": params3}, ids).logits,
                             model.apply({"params": params}, ids).logits, atol=1e-5)
  meta = json.loads((tmp_path / "ckpt" / "bert_jax.json").read_text())
  meta["model"]["hidden_size"] += 4
  (tmp_path / "ckpt" / "bert_jax.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="do not fit the model"):
    from_pretrained(tmp_path / "ckpt")


def test_save_pretrained_keeps_the_old_folder_until_complete(tmp_path, monkeypatch):
  model, params = from_pretrained(HF / "bert_gelu", head="mlm")
  save_pretrained(tmp_path / "ckpt", model, params)
  before = (tmp_path / "ckpt" / "bert_jax.json").read_bytes()
  import orbax.checkpoint as ocp

  def broken_save(self, *a, **k):
    raise OSError("disk full")
  monkeypatch.setattr(ocp.StandardCheckpointer, "save", broken_save)
  with pytest.raises(OSError):
    save_pretrained(tmp_path / "ckpt", model, params)
  assert (tmp_path / "ckpt" / "bert_jax.json").read_bytes() == before
  from_pretrained(tmp_path / "ckpt", head="mlm")
