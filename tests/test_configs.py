"""Every standard config: parameter counts (jax.eval_shape, nothing allocated) against the reference counts."""

import importlib.util

import pytest

from bert_jax import config_lib
from bert_jax.models import albert, bert, count_backbone_params, modernbert, mpnet
from bert_jax.models import build, distilbert, electra, xlm_roberta
from tests.conftest import REPO

# BertModel / RobertaModel / AlbertModel / DebertaV2Model as transformers counts them.
REFERENCE = {
    "bert-base": 109_482_240, "bert-large": 335_141_888,
    "roberta-base": 124_645_632, "roberta-large": 355_359_744,
    "albert-base": 11_683_584, "albert-large": 17_683_968, "albert-xlarge": 58_724_864,
    "albert-xxlarge": 222_595_584,
    "deberta-base": 183_831_552, "deberta-large": 434_012_160,
    "modernbert-base": 149_014_272, "modernbert-large": 394_781_696,  # ModernBertModel
    "xlm-roberta-base": 278_043_648, "xlm-roberta-large": 559_890_432,  # XLMRobertaModel, pooler included
    "distilbert-base": 66_362_880,  # DistilBertModel
    "electra-small": 13_483_008, "electra-base": 108_891_648, "electra-large": 334_092_288,  # ElectraModel
    # MPNetModel of microsoft/mpnet-base's config.json (514 positions); MPNetConfig()'s own default of 512
    # positions counts 2 x 768 fewer, 109,484,928.
    "mpnet-base": 109_486_464,
}


def load_config(name: str, arg: str | None = None):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def closed_form(family: str, size: str) -> int:
  """Count written from the architectures (embeddings + layers + pooler), independent of the model code."""
  def layer(h, i):
    return 4 * (h * h + h) + 2 * (2 * h) + (h * i + i) + (i * h + h)
  if family == "modernbert":
    # No biases; norms without bias; no norm before the first layer's attention; a final norm; GLU Wi.
    layers, h, _, i = modernbert.SIZES[size]
    return 50368 * h + h + layers * (h * 3 * h + h * h + h * 2 * i + i * h + 2 * h) - h + h
  if family == "albert":
    layers, h, _, i = albert.SIZES[size]
    e, v, p = 128, 30000, 512
    return v * e + p * e + 2 * e + 2 * e + (e * h + h) + layer(h, i) + (h * h + h)
  if family == "mpnet":
    # RoBERTa's positions without token types, MPNet's vocabulary, one bias table [32 buckets, heads].
    layers, h, heads = mpnet.SIZES[size]
    return 30527 * h + 514 * h + 2 * h + layers * layer(h, 4 * h) + 32 * heads + h * h + h
  if family == "distilbert":
    # BERT layers on word + position embeddings (no token types), no pooler.
    layers, h, _, i = distilbert.SIZES[size]
    return 30522 * h + 512 * h + 2 * h + layers * layer(h, i)
  if family == "electra":
    # BERT's embeddings E wide, an E -> H projection (with bias) only when E != H, BERT layers, no pooler.
    layers, h, _, i, e = electra.SIZES[size]
    return 30522 * e + 512 * e + 2 * e + 2 * e + (e * h + h if e != h else 0) + layers * layer(h, i)
  layers, h, _ = bert.SIZES[size]
  i = 4 * h
  if family == "bert":
    return 30522 * h + 512 * h + 2 * h + 2 * h + layers * layer(h, i) + h * h + h
  if family == "roberta":
    return 50265 * h + 514 * h + 1 * h + 2 * h + layers * layer(h, i) + h * h + h
  if family == "xlm-roberta":  # RoBERTa with a 250,002-token vocabulary
    return 250002 * h + 514 * h + 1 * h + 2 * h + layers * layer(h, i) + h * h + h
  # DeBERTa-v3: no absolute positions or token types; 2 x 256 relative rows with their LayerNorm; no pooler.
  return 128100 * h + 2 * h + 512 * h + 2 * h + layers * layer(h, i)


STANDARD = ([(f, s) for f in ("bert", "roberta", "deberta") for s in bert.SIZES] + [("albert", s) for s in albert.SIZES]
            + [("modernbert", s) for s in modernbert.SIZES])


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_closed_form_reproduces_reference(name):
  assert closed_form(*name.rsplit("-", 1)) == REFERENCE[name]


@pytest.mark.parametrize("family,size", STANDARD)
def test_every_standard_config_has_the_reference_count(family, size):
  config = load_config("pretrain", f"{family}-{size}")
  count = count_backbone_params(config_lib.model_config(config))
  assert count == REFERENCE.get(f"{family}-{size}", closed_form(family, size))


@pytest.mark.parametrize("size", list(mpnet.SIZES))
def test_mpnet_builder_has_the_reference_count(size):
  # Not a configs/pretrain.py family yet: the builder's config directly.
  assert count_backbone_params(mpnet.config(size)) == REFERENCE.get(f"mpnet-{size}", closed_form("mpnet", size))


BUILT = ([("xlm-roberta", s) for s in xlm_roberta.SIZES] + [("distilbert", s) for s in distilbert.SIZES]
         + [("electra", s) for s in electra.SIZES])


@pytest.mark.parametrize("family,size", BUILT)
def test_family_builder_has_the_reference_count(family, size):
  # Not configs/pretrain.py families: the builders' configs directly.
  assert count_backbone_params(build(family, size)) == REFERENCE[f"{family}-{size}"]


@pytest.mark.parametrize("family", ["bert", "roberta", "albert", "deberta", "modernbert"])
def test_standard_vocabulary_fits_the_bundled_tokenizer(family):
  from bert_jax.data.tokenizers import check_fits, load_tokenizer
  config = load_config("pretrain", f"{family}-base")
  check_fits(load_tokenizer(config.data.tokenizer), config.model.vocab_size)
  assert config.model.vocab_size == {"bert": 30522, "roberta": 50265, "albert": 30000, "deberta": 128100,
                                     "modernbert": 50368}[family]


def test_unknown_model_key_is_named():
  config = load_config("quickstart")
  config.model.unlocked = True
  with pytest.raises(KeyError, match="unlocked"):
    config_lib.model_config(config)
