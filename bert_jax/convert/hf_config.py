"""Hugging Face `config.json` <-> `ModelConfig`, for model_type bert, roberta, albert, deberta, deberta-v2, modernbert."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bert_jax.models.config import ModelConfig

MODEL_TYPES = ("bert", "roberta", "albert", "deberta", "deberta-v2", "modernbert")


def _pos_att_type(value) -> tuple[str, ...]:
  if value is None:
    return ()
  if isinstance(value, str):
    value = value.split("|")
  return tuple(v.strip().lower() for v in value if v.strip())


def model_config_from_hf(hf: Mapping[str, Any], source: str = "config.json",
                         legacy: bool | None = None) -> ModelConfig:
  """Maps a Hugging Face config dict onto ModelConfig; unsupported options raise.

  legacy: DeBERTa's MLM head layout when known from the checkpoint's keys
  (released DeBERTa checkpoints store `lm_predictions.*` without saying
  `legacy: false`); None reads the config's `legacy` (default True).
  """
  model_type = hf.get("model_type")
  if model_type not in MODEL_TYPES:
    raise ValueError(f"{source}: model_type={model_type!r} is not supported; expected one of {MODEL_TYPES}")
  if model_type == "modernbert":
    return modernbert_config_from_hf(hf, source)
  position_type = hf.get("position_embedding_type", "absolute")
  if position_type not in (None, "absolute"):
    raise ValueError(f"{source}: position_embedding_type={position_type!r} is not supported (only 'absolute')")
  common = dict(
      family=model_type,
      vocab_size=hf["vocab_size"],
      hidden_size=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"],
      num_heads=hf["num_attention_heads"],
      intermediate_size=hf["intermediate_size"],
      hidden_act=hf.get("hidden_act", "gelu"),
      max_position_embeddings=hf.get("max_position_embeddings", 512),
      type_vocab_size=hf.get("type_vocab_size", 2),
      layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
      pad_token_id=hf.get("pad_token_id") if hf.get("pad_token_id") is not None else 0,
      dropout_rate=hf.get("hidden_dropout_prob", 0.1),
      attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.1),
  )
  if not isinstance(common["hidden_act"], str):
    raise ValueError(f"{source}: hidden_act must be a string, got {common['hidden_act']!r}")
  if model_type == "bert":
    return ModelConfig(**common)
  if model_type == "roberta":
    # RoBERTa's LM head always uses exact GELU, whatever hidden_act says.
    return ModelConfig(**common, position_ids="roberta", mlm_act="gelu")
  if model_type == "albert":
    return ModelConfig(**common, embedding_size=hf.get("embedding_size", 128), share_layers="all",
                       num_hidden_groups=hf.get("num_hidden_groups", 1), inner_group_num=hf.get("inner_group_num", 1))
  # DeBERTa v1 and v2/v3.
  v2 = model_type == "deberta-v2"
  embedding_size = hf.get("embedding_size") or hf["hidden_size"]
  legacy = hf.get("legacy", True) if legacy is None else legacy
  if not legacy and embedding_size != hf["hidden_size"]:
    raise ValueError(f"{source}: legacy=False needs embedding_size == hidden_size")
  norm_rel = [x.strip() for x in str(hf.get("norm_rel_ebd", "none")).lower().split("|")]
  if hf.get("attention_head_size") not in (None, hf["hidden_size"] // hf["num_attention_heads"]):
    raise ValueError(f"{source}: attention_head_size != hidden_size / num_attention_heads is not supported")
  return ModelConfig(
      **common,
      embedding_size=embedding_size,
      embedding_projection="project_then_norm",
      position_ids="absolute" if hf.get("position_biased_input", True) else "none",
      mask_embeddings=True,
      mask_padded_queries=True,
      attention_type="disentangled",
      attention_key_bias=v2,
      pos_key_bias=v2,
      relative_attention=bool(hf.get("relative_attention", False)),
      pos_att_type=_pos_att_type(hf.get("pos_att_type")),
      max_relative_positions=hf.get("max_relative_positions", -1),
      position_buckets=hf.get("position_buckets", -1) if v2 else -1,
      share_att_key=bool(hf.get("share_att_key", False)) if v2 else False,
      norm_rel_embeddings=v2 and "layer_norm" in norm_rel,
      talking_head=bool(hf.get("talking_head", False)) and not v2,
      conv_kernel_size=hf.get("conv_kernel_size", 0) if v2 else 0,
      conv_groups=hf.get("conv_groups", 1),
      conv_act=hf.get("conv_act", "tanh"),
      pooler="none",
      mlm_transform_size=embedding_size if legacy else hf["hidden_size"],
  )


def _rope_theta(hf: Mapping[str, Any], layer_type: str, legacy_key: str, default: float, source: str) -> float:
  """The rotary base of one layer type, from rope_parameters (transformers 5) or the older flat keys."""
  params = (hf.get("rope_parameters") or {}).get(layer_type) or {}
  rope_type = params.get("rope_type", "default")
  if rope_type != "default":
    raise ValueError(f"{source}: rope_parameters.{layer_type}.rope_type={rope_type!r} is not supported "
                     "(only 'default' rotary positions)")
  return float(params.get("rope_theta", hf.get(legacy_key, default)))


def modernbert_config_from_hf(hf: Mapping[str, Any], source: str) -> ModelConfig:
  """ModernBERT's config.json -> ModelConfig; options bert_jax does not implement raise, naming them."""
  layers = hf["num_hidden_layers"]
  every = int(hf.get("global_attn_every_n_layers", 3))
  types = hf.get("layer_types")
  if types is not None:
    every = next((i for i, t in enumerate(types) if i and t == "full_attention"), len(types)) if len(types) > 1 else 1
    expected = ["full_attention" if i % every == 0 else "sliding_attention" for i in range(layers)]
    if list(types) != expected:
      raise ValueError(f"{source}: layer_types={list(types)} is not supported: bert_jax needs a global layer every "
                       "n layers starting with the first (global_attn_every_n_layers)")
  if not hf.get("tie_word_embeddings", True):
    raise ValueError(f"{source}: tie_word_embeddings=false is not supported (the MLM decoder is the word embeddings)")
  if hf.get("classifier_pooling", "cls") not in ("cls", "mean"):
    raise ValueError(f"{source}: classifier_pooling={hf.get('classifier_pooling')!r}: expected 'cls' or 'mean'")
  for key in ("hidden_activation", "classifier_activation"):
    if not isinstance(hf.get(key, "gelu"), str):
      raise ValueError(f"{source}: {key} must be a string, got {hf.get(key)!r}")
  return ModelConfig(
      family="modernbert", vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=layers,
      num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
      hidden_act=hf.get("hidden_activation", "gelu"), max_position_embeddings=hf.get("max_position_embeddings", 8192),
      type_vocab_size=0, position_ids="none", layer_norm_eps=hf.get("norm_eps", 1e-5),
      pad_token_id=hf.get("pad_token_id") if hf.get("pad_token_id") is not None else 0,
      dropout_rate=float(hf.get("mlp_dropout", 0.0)), attention_dropout_rate=float(hf.get("attention_dropout", 0.0)),
      norm_position="pre", norm_bias=bool(hf.get("norm_bias", False)), attention_bias=bool(hf.get("attention_bias", False)),
      mlp_bias=bool(hf.get("mlp_bias", False)), mlp_type="glu",
      rotary_base=_rope_theta(hf, "full_attention", "global_rope_theta", 160_000.0, source),
      local_rotary_base=_rope_theta(hf, "sliding_attention", "local_rope_theta", 10_000.0, source),
      local_attention=int(hf.get("local_attention", 128)), global_attn_every_n_layers=every, pooler="none",
      mlm_act=hf.get("classifier_activation", "gelu"), mlm_dense_bias=bool(hf.get("classifier_bias", False)),
      mlm_decoder_bias=bool(hf.get("decoder_bias", True)), classifier_pooling=hf.get("classifier_pooling", "cls"))


def modernbert_hf_config(cfg: ModelConfig) -> dict[str, Any]:
  """The config.json fields of a ModernBERT model (transformers 5 names)."""
  return dict(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size, hidden_activation=cfg.hidden_act,
      max_position_embeddings=cfg.max_position_embeddings, norm_eps=cfg.layer_norm_eps, norm_bias=cfg.norm_bias,
      pad_token_id=cfg.pad_token_id, attention_bias=cfg.attention_bias, attention_dropout=cfg.attention_dropout_rate,
      mlp_bias=cfg.mlp_bias, mlp_dropout=cfg.dropout_rate, embedding_dropout=cfg.dropout_rate,
      local_attention=cfg.local_attention,
      layer_types=["sliding_attention" if cfg.is_local_layer(i) else "full_attention" for i in range(cfg.num_layers)],
      rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": cfg.rotary_base},
                       "sliding_attention": {"rope_type": "default",
                                             "rope_theta": cfg.local_rotary_base or cfg.rotary_base}},
      decoder_bias=cfg.mlm_decoder_bias, classifier_bias=cfg.mlm_dense_bias, classifier_activation=cfg.mlm_act or "gelu",
      classifier_pooling=cfg.classifier_pooling if cfg.classifier_pooling in ("cls", "mean") else "cls",
      initializer_range=0.02, tie_word_embeddings=True)


ARCHITECTURES = {
    ("bert", None): "BertModel", ("bert", "mlm"): "BertForMaskedLM", ("bert", "pretraining"): "BertForPreTraining",
    ("roberta", None): "RobertaModel", ("roberta", "mlm"): "RobertaForMaskedLM",
    ("albert", None): "AlbertModel", ("albert", "mlm"): "AlbertForMaskedLM", ("albert", "pretraining"): "AlbertForPreTraining",
    ("deberta", None): "DebertaModel", ("deberta", "mlm"): "DebertaForMaskedLM",
    ("deberta-v2", None): "DebertaV2Model", ("deberta-v2", "mlm"): "DebertaV2ForMaskedLM",
    ("modernbert", None): "ModernBertModel", ("modernbert", "mlm"): "ModernBertForMaskedLM",
}


def hf_config_from_model(cfg: ModelConfig, head: str | None = None, *, legacy: bool = True) -> dict[str, Any]:
  """The config.json a Hugging Face model of the same architecture would have.

  legacy: DeBERTa's MLM head layout, `cls.predictions` (True) or `lm_predictions.lm_head`.
  """
  family = cfg.family
  if family not in MODEL_TYPES:
    raise ValueError(f"family {family!r} has no Hugging Face counterpart; expected one of {MODEL_TYPES}")
  if (family, head) not in ARCHITECTURES:
    raise ValueError(f"exporting head={head!r} for {family} is not supported")
  if family == "modernbert":
    return dict(model_type=family, architectures=[ARCHITECTURES[(family, head)]], **modernbert_hf_config(cfg))
  out: dict[str, Any] = dict(
      model_type=family,
      architectures=[ARCHITECTURES[(family, head)]],
      vocab_size=cfg.vocab_size,
      hidden_size=cfg.hidden_size,
      num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads,
      intermediate_size=cfg.intermediate_size,
      hidden_act=cfg.hidden_act,
      max_position_embeddings=cfg.max_position_embeddings,
      type_vocab_size=cfg.type_vocab_size,
      layer_norm_eps=cfg.layer_norm_eps,
      pad_token_id=cfg.pad_token_id,
      hidden_dropout_prob=cfg.dropout_rate,
      attention_probs_dropout_prob=cfg.attention_dropout_rate,
      initializer_range=0.02,
      tie_word_embeddings=True,
  )
  if family == "roberta":
    out.update(bos_token_id=0, eos_token_id=2)
  if family == "albert":
    out.update(embedding_size=cfg.embed_dim, num_hidden_groups=cfg.num_hidden_groups,
               inner_group_num=cfg.inner_group_num)
  if family in ("deberta", "deberta-v2"):
    out.update(
        relative_attention=cfg.relative_attention,
        pos_att_type=list(cfg.pos_att_type),
        max_relative_positions=cfg.max_relative_positions,
        position_biased_input=cfg.position_ids != "none",
        legacy=legacy,
    )
    if cfg.factorized:
      out["embedding_size"] = cfg.embed_dim
    if family == "deberta":
      out["talking_head"] = cfg.talking_head
    else:
      out.update(position_buckets=cfg.position_buckets, share_att_key=cfg.share_att_key,
                 norm_rel_ebd="layer_norm" if cfg.norm_rel_embeddings else "none",
                 conv_kernel_size=cfg.conv_kernel_size, conv_groups=cfg.conv_groups, conv_act=cfg.conv_act)
  return out
