"""DistilBERT (`distilbert`): BERT's post-LN layers under their own names, no token types, no pooler.

The config fields are XLM's (`dim`, `n_layers`, `n_heads`, `hidden_dim`, `activation`); every LayerNorm
epsilon is 1e-12, fixed in the reference code. The MLM head is `vocab_transform` -> activation ->
`vocab_layer_norm` -> `vocab_projector` (tied to the word embeddings, with a bias).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bert_jax.convert.families import bert
from bert_jax.convert.keys import Entry, dense, norm
from bert_jax.models.config import ModelConfig

MODEL_TYPES = ("distilbert",)
PREFIX = "distilbert"
ARCHITECTURES = {("distilbert", None): "DistilBertModel", ("distilbert", "mlm"): "DistilBertForMaskedLM",
                 **bert.task_architectures("distilbert", "DistilBert")}

LAYER_NORM_EPS = 1e-12  # DistilBERT's modules hard-code it; config.json has no field for it


def config_from_hf(hf: Mapping[str, Any], source: str, legacy: bool | None = None) -> ModelConfig:
  """DistilBERT's config.json -> ModelConfig (missing fields take DistilBertConfig's defaults)."""
  if hf.get("sinusoidal_pos_embds", False):
    raise ValueError(f"{source}: sinusoidal_pos_embds=true is not supported (bert_jax reads a learned position "
                     "table; a sinusoidal one would load as if trained)")
  activation = hf.get("activation", "gelu")
  if not isinstance(activation, str):
    raise ValueError(f"{source}: activation must be a string, got {activation!r}")
  return ModelConfig(
      family="distilbert", vocab_size=hf.get("vocab_size", 30522), hidden_size=hf.get("dim", 768),
      num_layers=hf.get("n_layers", 6), num_heads=hf.get("n_heads", 12), intermediate_size=hf.get("hidden_dim", 3072),
      hidden_act=activation, max_position_embeddings=hf.get("max_position_embeddings", 512), type_vocab_size=0,
      layer_norm_eps=LAYER_NORM_EPS, pad_token_id=hf.get("pad_token_id") if hf.get("pad_token_id") is not None else 0,
      dropout_rate=hf.get("dropout", 0.1), attention_dropout_rate=hf.get("attention_dropout", 0.1), pooler="none",
      **bert.label_config(hf))


def hf_config(cfg: ModelConfig, legacy: bool = True) -> dict[str, Any]:
  """The config.json fields of a DistilBERT model; what DistilBERT cannot hold raises."""
  if cfg.layer_norm_eps != LAYER_NORM_EPS:
    raise ValueError(f"DistilBERT's LayerNorm epsilon is fixed at {LAYER_NORM_EPS}; got {cfg.layer_norm_eps}")
  if cfg.type_vocab_size:
    raise ValueError(f"DistilBERT has no token types; got type_vocab_size={cfg.type_vocab_size}")
  return dict(
      vocab_size=cfg.vocab_size, dim=cfg.hidden_size, n_layers=cfg.num_layers, n_heads=cfg.num_heads,
      hidden_dim=cfg.intermediate_size, activation=cfg.hidden_act, max_position_embeddings=cfg.max_position_embeddings,
      sinusoidal_pos_embds=False, dropout=cfg.dropout_rate, attention_dropout=cfg.attention_dropout_rate,
      pad_token_id=cfg.pad_token_id, initializer_range=0.02, tie_word_embeddings=True, **bert.label_hf_config(cfg))


def layer_entries(ours: tuple[str, ...], hf: str) -> list[Entry]:
  """One layer `transformer.layer.{i}`: BERT's post-LN layer, DistilBERT's names."""
  a = (*ours, "attention")
  out = []
  for name, key in (("query", "q_lin"), ("key", "k_lin"), ("value", "v_lin")):
    out += dense((*a, "self", name), f"{hf}.attention.{key}", "heads_in")
  out += dense((*a, "output"), f"{hf}.attention.out_lin", "heads_out")
  out += norm((*a, "norm"), f"{hf}.sa_layer_norm")
  out += dense((*ours, "mlp", "wi"), f"{hf}.ffn.lin1")
  out += dense((*ours, "mlp", "wo"), f"{hf}.ffn.lin2")
  out += norm((*ours, "mlp", "norm"), f"{hf}.output_layer_norm")
  return out


def key_table(cfg: ModelConfig, head: str | None, with_pooler: bool, legacy: bool = True) -> list[Entry]:
  if head not in (None, "mlm", *bert.TASK_HEADS):
    raise ValueError(f"Hugging Face conversion of head={head!r} is not supported for distilbert")
  if with_pooler:
    raise ValueError("DistilBERT has no pooler; convert without one (pooler='none')")
  out = bert.embedding_entries(cfg)
  for i in range(cfg.num_layers):
    out += layer_entries(("encoder", f"layer_{i}"), f"transformer.layer.{i}")
  mlm = bert.mlm_entries("vocab_transform", "vocab_layer_norm", "vocab_projector.bias")
  return out + bert.head_entries(cfg, head, with_pooler, mlm, pair_key="")
