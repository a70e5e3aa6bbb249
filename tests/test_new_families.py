"""XLM-RoBERTa, DistilBERT and ELECTRA beyond the parity goldens: heads found from the stored keys,
options the converter refuses, and a BERT trained by replaced-token detection exporting as ELECTRA.

Everything compares against the committed goldens (tests/testdata/hf, written by
tests/parity/make_model_goldens.py); nothing here needs torch.
"""

import json
import pathlib

import numpy as np
import pytest
from safetensors.numpy import load_file

from bert_jax.convert.hf_config import hf_config_from_model, model_config_from_hf
from bert_jax.convert.pretrained import (detect_hf_head, export_hf, from_pretrained, load_bert_jax, load_hf,
                                         read_hf_state, save_pretrained)
from bert_jax.models import build
from bert_jax.models.model import EncoderModel

HF = pathlib.Path(__file__).parent / "testdata" / "hf"
ATOL = 1e-4


def _golden(case):
  return dict(np.load(HF / case / "golden.npz"))


def _logits(model, params, g):
  return np.asarray(model.apply({"params": params}, g["input_ids"], attention_mask=g["attention_mask"],
                                token_type_ids=g["token_type_ids"]).logits)


def _config(case, **changes):
  return {**json.loads((HF / case / "config.json").read_text()), **changes}


@pytest.mark.parametrize("case,head", [("electra_discriminator", "rtd"), ("electra_no_projection", "rtd"),
                                       ("electra_generator", "mlm"), ("distilbert_gelu", "mlm"),
                                       ("xlm_roberta", "mlm")])
def test_the_stored_keys_name_the_head(case, head):
  assert detect_hf_head(read_hf_state(str(HF / case))) == head


@pytest.mark.parametrize("case,head,named", [("electra_discriminator", "mlm", "MLM"),
                                             ("electra_generator", "rtd", "replaced-token-detection")])
def test_a_head_the_folder_lacks_is_named(case, head, named):
  with pytest.raises(KeyError, match=named):
    from_pretrained(HF / case, head=head)


def test_a_discriminator_folder_loads_as_a_bare_encoder():
  g = _golden("electra_discriminator")
  model, params = from_pretrained(HF / "electra_discriminator")
  assert "rtd_head" not in params and not model.uses_pooler
  out = model.apply({"params": params}, g["input_ids"], attention_mask=g["attention_mask"],
                    token_type_ids=g["token_type_ids"])
  assert np.abs(np.asarray(out.last_hidden_state) - g["last_hidden_state"]).max() <= ATOL


def test_scanned_electra_layers_match_reference():
  g = _golden("electra_discriminator")
  model, params = from_pretrained(HF / "electra_discriminator", head="rtd", scan_layers=True)
  assert "layers" in params["encoder"]
  assert np.abs(_logits(model, params, g) - g["logits"]).max() <= ATOL


def test_sinusoidal_distilbert_positions_raise():
  with pytest.raises(ValueError, match="sinusoidal_pos_embds"):
    model_config_from_hf(_config("distilbert_gelu", sinusoidal_pos_embds=True))


def test_distilbert_config_names_and_fixed_epsilon():
  cfg = model_config_from_hf(_config("distilbert_relu"))
  sizes = (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size, cfg.hidden_act)
  assert sizes == (40, 2, 5, 61, "relu")
  assert cfg.layer_norm_eps == 1e-12 and cfg.type_vocab_size == 0 and cfg.pooler == "none"
  with pytest.raises(ValueError, match="epsilon"):
    hf_config_from_model(cfg.replace(layer_norm_eps=1e-5))
  with pytest.raises(ValueError, match="pooler"):
    export_hf("/nonexistent", EncoderModel(cfg, with_pooler=True), {})


def test_electra_sizes_and_embedding_width():
  assert build("electra", "small").embedding_size == 128 and build("electra", "base").embedding_size is None
  assert model_config_from_hf(_config("electra_no_projection")).embedding_size is None
  assert model_config_from_hf(_config("electra_generator")).embedding_size == 44
  # ELECTRA projects only when E != H: an ALBERT-style projection of E == H has no ELECTRA layout.
  with pytest.raises(ValueError, match="embedding_size == hidden_size"):
    hf_config_from_model(build("electra", "base", embedding_size=768))


def _bert_discriminator(case):
  """The golden ELECTRA discriminator (E == H) as what RTD pretraining keeps: a BERT with the RTD head."""
  electra, params = from_pretrained(HF / case, head="rtd")
  cfg = electra.config.replace(family="bert", pooler="tanh", mlm_act=None)
  return EncoderModel(cfg, head="rtd"), params


def test_a_bert_rtd_model_exports_as_an_electra_discriminator(tmp_path):
  case = "electra_no_projection"
  model, params = _bert_discriminator(case)
  assert not model.uses_pooler
  export_hf(str(tmp_path), model, params)
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["model_type"] == "electra" and config["architectures"] == ["ElectraForPreTraining"]
  reference = _config(case)
  for key in sorted(set(config) & set(reference) - {"transformers_version", "dtype", "torch_dtype"}):
    assert config[key] == reference[key], key
  original, exported = load_file(HF / case / "model.safetensors"), load_file(tmp_path / "model.safetensors")
  assert sorted(exported) == sorted(original)
  for key, value in original.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)
  g = _golden(case)
  again, again_params = from_pretrained(tmp_path, head="rtd")
  assert again.config.family == "electra"
  assert np.abs(_logits(again, again_params, g) - g["logits"]).max() <= ATOL


def test_a_bert_rtd_model_with_a_pooler_is_refused(tmp_path):
  model, params = _bert_discriminator("electra_no_projection")
  with_pooler = EncoderModel(model.config, head="rtd", with_pooler=True)
  params = {**params, "pooler": {"dense": {"kernel": np.zeros((32, 32), np.float32),
                                           "bias": np.zeros((32,), np.float32)}}}
  with pytest.raises(ValueError, match="no pooler"):
    export_hf(str(tmp_path), with_pooler, params)


def test_an_rtd_checkpoint_folder_round_trips(tmp_path):
  """HF discriminator -> bert_jax folder (head "rtd") -> HF folder again, tensors unchanged."""
  case = "electra_discriminator"
  model, params, _ = load_hf(str(HF / case), head="rtd")
  save_pretrained(str(tmp_path / "ckpt"), model, params)
  model, params, meta = load_bert_jax(str(tmp_path / "ckpt"), head="rtd")
  assert meta["head"] == "rtd"
  export_hf(str(tmp_path / "hf"), model, params)
  original, exported = load_file(HF / case / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
  assert sorted(exported) == sorted(original)
  for key, value in original.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_a_backbone_tensor_the_layout_lacks_is_refused_on_export(tmp_path):
  """A bare BERT with factorised embeddings: BERT's layout has no projection (with an MLM head, as RTD
  pretraining's generator, it exports as an ELECTRA generator instead)."""
  import jax
  import jax.numpy as jnp
  from bert_jax.convert.pretrained import unbox
  model = EncoderModel(build("bert", "tiny", vocab_size=64, embedding_size=32), head=None)
  params = unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  with pytest.raises(ValueError, match="embeddings/projection"):
    export_hf(str(tmp_path), model, params)
