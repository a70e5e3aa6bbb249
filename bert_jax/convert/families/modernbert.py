"""ModernBERT (`modernbert`): pre-LN GeGLU layers, fused Wqkv, rotary global and local layers, `head` + `decoder`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bert_jax.convert.families import bert
from bert_jax.convert.keys import Entry, dense, embed, norm
from bert_jax.models.config import ModelConfig

MODEL_TYPES = ("modernbert",)
PREFIX = "model"
ARCHITECTURES = {("modernbert", None): "ModernBertModel", ("modernbert", "mlm"): "ModernBertForMaskedLM",
                 **bert.task_architectures("modernbert", "ModernBert")}


def _rope_theta(hf: Mapping[str, Any], layer_type: str, legacy_key: str, default: float, source: str) -> float:
  """The rotary base of one layer type, from rope_parameters (transformers 5) or the older flat keys."""
  params = (hf.get("rope_parameters") or {}).get(layer_type) or {}
  rope_type = params.get("rope_type", "default")
  if rope_type != "default":
    raise ValueError(f"{source}: rope_parameters.{layer_type}.rope_type={rope_type!r} is not supported "
                     "(only 'default' rotary positions)")
  return float(params.get("rope_theta", hf.get(legacy_key, default)))


def config_from_hf(hf: Mapping[str, Any], source: str, legacy: bool | None = None) -> ModelConfig:
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
      mlm_decoder_bias=bool(hf.get("decoder_bias", True)), classifier_pooling=hf.get("classifier_pooling", "cls"),
      **bert.label_config(hf))


def hf_config(cfg: ModelConfig, legacy: bool = True) -> dict[str, Any]:
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
      initializer_range=0.02, tie_word_embeddings=True, **bert.label_hf_config(cfg))


def key_table(cfg: ModelConfig, head: str | None, with_pooler: bool, legacy: bool = True) -> list[Entry]:
  """ModernBERT: fused Wqkv, pre-LN norms (none before layer 0's attention), GLU Wi, final norm, head + decoder."""
  nb, ab, mb = cfg.norm_bias, cfg.attention_bias, cfg.mlp_bias
  out = embed(("embeddings", "word_embeddings"), "embeddings.tok_embeddings")
  out += norm(("embeddings", "norm"), "embeddings.norm", bias=nb)
  for i in range(cfg.num_layers):
    ours, hf = ("encoder", f"layer_{i}"), f"layers.{i}"
    a = (*ours, "attention")
    if i > 0:
      out += norm((*a, "norm"), f"{hf}.attn_norm", bias=nb)
    for part, name in enumerate(("query", "key", "value")):
      out.append(Entry((*a, "self", name, "kernel"), f"{hf}.attn.Wqkv.weight", f"qkv:{part}"))
      if ab:
        out.append(Entry((*a, "self", name, "bias"), f"{hf}.attn.Wqkv.bias", f"qkv_bias:{part}"))
    out += dense((*a, "output"), f"{hf}.attn.Wo", "heads_out", bias=ab)
    out += norm((*ours, "mlp", "norm"), f"{hf}.mlp_norm", bias=nb)
    out += dense((*ours, "mlp", "wi"), f"{hf}.mlp.Wi", bias=mb)
    out += dense((*ours, "mlp", "wo"), f"{hf}.mlp.Wo", bias=mb)
  out += norm(("encoder", "final_norm"), "final_norm", bias=nb)
  if head == "mlm":
    out += dense(("mlm", "dense"), "head.dense", bias=cfg.mlm_dense_bias, backbone=False)
    out += norm(("mlm", "norm"), "head.norm", backbone=False, bias=nb)
    if cfg.mlm_decoder_bias:
      out.append(Entry(("mlm", "bias"), "decoder.bias", "copy", backbone=False))
  elif head in bert.TASK_HEADS:
    out += bert.task_head_entries(cfg, head)
  elif head is not None:
    raise ValueError(f"Hugging Face conversion of head={head!r} is not supported for modernbert")
  return out
