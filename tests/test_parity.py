"""Golden parity with the reference implementations (Hugging Face transformers, PyTorch, float32).

The goldens were produced by tests/parity/make_model_goldens.py from randomly
initialised reference models (every parameter re-randomised) saved with
save_pretrained; here the same folders go through our converter and model.
"""

import json
import pathlib

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from bert_jax.convert.pretrained import export_hf, from_pretrained, load_hf

HF = pathlib.Path(__file__).parent / "testdata" / "hf"
CASES = sorted(p.name for p in HF.iterdir() if (p / "golden.npz").exists())
ATOL = 1e-4
# DistilBERT's config.json names for the sizes (XLM's).
DISTILBERT_NAMES = {"hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
                    "intermediate_size": "hidden_dim"}


def _golden(case):
  return dict(np.load(HF / case / "golden.npz"))


def _head(g):
  """The head a case loads with: the one its golden names (ELECTRA's discriminator: "rtd"), else MLM when
  it holds logits."""
  return str(g["head"]) if "head" in g else ("mlm" if "logits" in g else None)


def _run(model, params, g, **kw):
  return model.apply({"params": params}, g["input_ids"], attention_mask=g["attention_mask"],
                     token_type_ids=g["token_type_ids"], **kw)


def _max_err(ours, ref, mask=None):
  """Largest absolute difference; over every position, padding included, unless a mask is given."""
  diff = np.abs(np.asarray(ours) - ref)
  return float((diff if mask is None else diff[mask.astype(bool)]).max())


def test_every_family_has_goldens():
  families = {json.loads((HF / c / "config.json").read_text())["model_type"] for c in CASES}
  assert families == {"bert", "roberta", "albert", "deberta", "deberta-v2", "modernbert", "mpnet", "electra",
                      "distilbert", "xlm-roberta"}


@pytest.mark.parametrize("case", CASES)
def test_hidden_states_and_logits_match_reference(case):
  g = _golden(case)
  head = _head(g)
  model, params = from_pretrained(HF / case, head=head)
  out = _run(model, params, g, output_hidden_states=True)
  mask = None  # padded positions must match too (RoBERTa position ids, DeBERTa query masking)
  assert _max_err(out.last_hidden_state, g["last_hidden_state"], mask) <= ATOL
  assert out.hidden_states.shape == g["hidden_states"].shape
  for layer, (ours, ref) in enumerate(zip(out.hidden_states, g["hidden_states"])):
    assert _max_err(ours, ref, mask) <= ATOL, f"layer {layer}"
  for key in ("logits", "start_logits", "end_logits"):
    if key in g:
      assert getattr(out, key).shape == g[key].shape, key
      assert _max_err(getattr(out, key), g[key], mask) <= ATOL, key
  if "pooler_output" in g:
    np.testing.assert_allclose(out.pooler_output, g["pooler_output"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", ["bert_gelu", "deberta_v3", "deberta_v1", "roberta"])
def test_scanned_layers_match_reference(case):
  g = _golden(case)
  model, params = from_pretrained(HF / case, head="mlm", scan_layers=True)
  assert "layers" in params["encoder"]
  out = _run(model, params, g)
  assert _max_err(out.logits, g["logits"], g["attention_mask"]) <= ATOL


@pytest.mark.parametrize("case", ["bert_gelu", "deberta_v2_conv"])
def test_masked_positions_select_logits(case):
  g = _golden(case)
  model, params = from_pretrained(HF / case, head="mlm")
  positions = np.array([[1, 3], [2, 0], [5, 4]], np.int32)[: len(g["input_ids"])]
  out = _run(model, params, g, masked_positions=positions)
  expected = np.take_along_axis(g["logits"], positions[..., None], axis=1)
  np.testing.assert_allclose(out.logits, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_export_reproduces_reference_tensors(case, tmp_path):
  model, params, info = load_hf(str(HF / case), head=_head(_golden(case)))
  export_hf(str(tmp_path), model, params, legacy=info["legacy"])
  original = load_file(HF / case / "model.safetensors")
  exported = load_file(tmp_path / "model.safetensors")
  assert sorted(exported) == sorted(original)
  for key, value in original.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)
  ref_cfg = json.loads((HF / case / "config.json").read_text())
  new_cfg = json.loads((tmp_path / "config.json").read_text())
  for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "vocab_size", "max_position_embeddings"):
    key = key if key in ref_cfg else DISTILBERT_NAMES[key]
    assert new_cfg[key] == ref_cfg[key], key
  assert new_cfg["architectures"] == ref_cfg["architectures"]
  # Every other architecture setting the exported config writes is the reference's.
  for key in sorted(set(new_cfg) & set(ref_cfg) - {"architectures", "transformers_version", "dtype", "torch_dtype"}):
    assert new_cfg[key] == ref_cfg[key], key


def test_bfloat16_compute_stays_close():
  g = _golden("bert_gelu")
  model, params = from_pretrained(HF / "bert_gelu", head="mlm", dtype="bfloat16")
  out = _run(model, params, g)
  assert out.last_hidden_state.dtype == np.float32
  assert jax.tree.leaves(params)[0].dtype == np.float32
  err = _max_err(out.last_hidden_state, g["last_hidden_state"], g["attention_mask"])
  assert 0 < err < 0.1


def test_deberta_head_layout_follows_the_stored_keys(tmp_path):
  """Released DeBERTa checkpoints store lm_predictions.* without `legacy: false` in config.json."""
  import shutil
  case = "deberta_v3_lm_head"
  shutil.copytree(HF / case, tmp_path / case)
  cfg = json.loads((tmp_path / case / "config.json").read_text())
  cfg.pop("legacy", None)
  (tmp_path / case / "config.json").write_text(json.dumps(cfg))
  g = _golden(case)
  model, params = from_pretrained(tmp_path / case, head="mlm")
  assert _max_err(_run(model, params, g).logits, g["logits"]) <= ATOL


def test_mpnet_buckets_follow_the_reference():
  """MPNet's T5 buckets of key minus query (32 buckets, max distance 128), read off the reference."""
  from bert_jax.models.attention import relative_position_buckets
  buckets = relative_position_buckets(200, 32, 128)
  starts = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 23, 32, 46, 64, 91]  # first distance of each bucket
  expected = np.searchsorted(starts, np.arange(200), side="right") - 1
  np.testing.assert_array_equal(buckets[199, ::-1], expected)       # keys before the query: buckets 0..15
  np.testing.assert_array_equal(buckets[0, 1:], 16 + expected[1:])  # keys after it: 16..31
  assert buckets.max() == 31 and (np.diag(buckets) == 0).all()


@pytest.mark.parametrize("change,named", [({"pad_token_id": 0}, "pad_token_id"),
                                          ({"relative_attention_num_buckets": 16}, "relative_attention_num_buckets"),
                                          ({"tie_word_embeddings": False}, "tie_word_embeddings")])
def test_mpnet_options_the_reference_fixes_raise(change, named):
  from bert_jax.convert.hf_config import model_config_from_hf
  hf = {**json.loads((HF / "mpnet" / "config.json").read_text()), **change}
  with pytest.raises(ValueError, match=named):
    model_config_from_hf(hf)


def test_mpnet_export_refuses_what_the_reference_cannot_express():
  from bert_jax.convert.hf_config import hf_config_from_model
  from bert_jax.models import mpnet
  assert hf_config_from_model(mpnet.config("tiny"), "mlm")["relative_attention_num_buckets"] == 32
  with pytest.raises(ValueError, match="relative_attention_bucketing"):
    hf_config_from_model(mpnet.config("tiny", relative_attention_bucketing=16, relative_attention_num_buckets=32))


@pytest.mark.parametrize("case", CASES)
def test_the_folder_names_the_head_it_converts_with(case):
  """config.json's architectures and the stored keys pick the head each golden was made with."""
  from bert_jax.convert.pretrained import detect_hf_head, read_hf_config, read_hf_state
  architectures = read_hf_config(str(HF / case)).get("architectures") or ()
  assert detect_hf_head(read_hf_state(str(HF / case)), architectures) == _head(_golden(case))


@pytest.mark.parametrize("case", ["bert_classifier", "deberta_v2_tagger", "modernbert_qa", "distilbert_classifier"])
def test_the_convert_command_keeps_a_fine_tuned_head_both_ways(case, tmp_path):
  """python -m bert_jax.convert to bert_jax and back: the task head's logits are the reference's, and the
  folder it writes again holds the reference's tensors and class names."""
  from bert_jax.convert import __main__ as convert
  convert.to_bert_jax(str(HF / case), str(tmp_path / "ours"))
  model, params, _ = convert.to_hf(str(tmp_path / "ours"), str(tmp_path / "hf"))
  g = _golden(case)
  out = _run(model, params, g)
  for key in ("logits", "start_logits", "end_logits"):
    if key in g:
      assert _max_err(getattr(out, key), g[key]) <= ATOL, key
  original, exported = load_file(HF / case / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
  assert sorted(exported) == sorted(original)
  for key, value in original.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)
  ref_cfg = json.loads((HF / case / "config.json").read_text())
  new_cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert new_cfg["architectures"] == ref_cfg["architectures"]
  assert new_cfg.get("id2label") == ref_cfg.get("id2label")
