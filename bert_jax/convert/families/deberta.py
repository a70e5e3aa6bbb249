"""DeBERTa (`deberta`, v1) and DeBERTa-v2/v3 (`deberta-v2`): disentangled attention, relative table, conv."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bert_jax.convert.families import bert
from bert_jax.convert.keys import Entry, dense, embed, norm
from bert_jax.models.config import ModelConfig

MODEL_TYPES = ("deberta", "deberta-v2")
PREFIX = "deberta"
ARCHITECTURES = {("deberta", None): "DebertaModel", ("deberta", "mlm"): "DebertaForMaskedLM",
                 ("deberta-v2", None): "DebertaV2Model", ("deberta-v2", "mlm"): "DebertaV2ForMaskedLM",
                 **bert.task_architectures("deberta", "Deberta"), **bert.task_architectures("deberta-v2", "DebertaV2")}


def _pos_att_type(value) -> tuple[str, ...]:
  if value is None:
    return ()
  if isinstance(value, str):
    value = value.split("|")
  return tuple(v.strip().lower() for v in value if v.strip())


def config_from_hf(hf: Mapping[str, Any], source: str, legacy: bool | None = None) -> ModelConfig:
  """legacy: the MLM head layout when known from the checkpoint's keys (released DeBERTa checkpoints
  store `lm_predictions.*` without saying `legacy: false`); None reads the config's `legacy` (default True)."""
  v2 = hf["model_type"] == "deberta-v2"
  embedding_size = hf.get("embedding_size") or hf["hidden_size"]
  legacy = hf.get("legacy", True) if legacy is None else legacy
  if not legacy and embedding_size != hf["hidden_size"]:
    raise ValueError(f"{source}: legacy=False needs embedding_size == hidden_size")
  norm_rel = [x.strip() for x in str(hf.get("norm_rel_ebd", "none")).lower().split("|")]
  if hf.get("pooler_hidden_size") not in (None, hf["hidden_size"]):
    raise ValueError(f"{source}: pooler_hidden_size={hf['pooler_hidden_size']} != hidden_size is not supported")
  if hf.get("attention_head_size") not in (None, hf["hidden_size"] // hf["num_attention_heads"]):
    raise ValueError(f"{source}: attention_head_size != hidden_size / num_attention_heads is not supported")
  return ModelConfig(
      **bert.common_config(hf, source),
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
      classifier_act=hf.get("pooler_hidden_act", "gelu"),
  )


def hf_config(cfg: ModelConfig, legacy: bool = True) -> dict[str, Any]:
  out = {**bert.common_hf_config(cfg), "relative_attention": cfg.relative_attention,
         "pos_att_type": list(cfg.pos_att_type), "max_relative_positions": cfg.max_relative_positions,
         "position_biased_input": cfg.position_ids != "none", "legacy": legacy,
         "pooler_hidden_size": cfg.hidden_size, "pooler_hidden_act": cfg.classifier_act or "gelu"}
  if cfg.factorized:
    out["embedding_size"] = cfg.embed_dim
  if cfg.family == "deberta":
    out["talking_head"] = cfg.talking_head
  else:
    out.update(position_buckets=cfg.position_buckets, share_att_key=cfg.share_att_key,
               norm_rel_ebd="layer_norm" if cfg.norm_rel_embeddings else "none",
               conv_kernel_size=cfg.conv_kernel_size, conv_groups=cfg.conv_groups, conv_act=cfg.conv_act)
  return out


def attention_entries(cfg: ModelConfig, a: tuple[str, ...], hf: str) -> list[Entry]:
  """v1 fuses q / k / v per head in `in_proj`; v2 has `{query,key,value}_proj`; both add the positional projections."""
  out = []
  if cfg.family == "deberta":
    out += [Entry((*a, "self", "query", "kernel"), f"{hf}.attention.self.in_proj.weight", "in_proj:0"),
            Entry((*a, "self", "key", "kernel"), f"{hf}.attention.self.in_proj.weight", "in_proj:1"),
            Entry((*a, "self", "value", "kernel"), f"{hf}.attention.self.in_proj.weight", "in_proj:2"),
            Entry((*a, "self", "query", "bias"), f"{hf}.attention.self.q_bias", "heads_bias"),
            Entry((*a, "self", "value", "bias"), f"{hf}.attention.self.v_bias", "heads_bias")]
    if cfg.relative_attention and "c2p" in cfg.pos_att_type:
      out += dense((*a, "self", "pos_key"), f"{hf}.attention.self.pos_proj", "heads_in", bias=False)
    if cfg.relative_attention and "p2c" in cfg.pos_att_type:
      out += dense((*a, "self", "pos_query"), f"{hf}.attention.self.pos_q_proj", "heads_in")
    if cfg.talking_head:
      out += [Entry((*a, "self", "head_logits_proj"), f"{hf}.attention.self.head_logits_proj.weight", "dense"),
              Entry((*a, "self", "head_weights_proj"), f"{hf}.attention.self.head_weights_proj.weight", "dense")]
    return out
  for name in ("query", "key", "value"):
    out += dense((*a, "self", name), f"{hf}.attention.self.{name}_proj", "heads_in")
  if cfg.relative_attention and not cfg.share_att_key:
    if "c2p" in cfg.pos_att_type:
      out += dense((*a, "self", "pos_key"), f"{hf}.attention.self.pos_key_proj", "heads_in")
    if "p2c" in cfg.pos_att_type:
      out += dense((*a, "self", "pos_query"), f"{hf}.attention.self.pos_query_proj", "heads_in")
  return out


def key_table(cfg: ModelConfig, head: str | None, with_pooler: bool, legacy: bool = True) -> list[Entry]:
  out = bert.embedding_entries(cfg)
  if cfg.factorized:
    out += dense(("embeddings", "projection"), "embeddings.embed_proj", bias=False)
  for i in range(cfg.num_layers):
    out += bert.layer_entries(cfg, ("encoder", f"layer_{i}"), f"encoder.layer.{i}", attention_entries)
  if cfg.relative_attention:
    out += embed(("encoder", "rel_embeddings"), "encoder.rel_embeddings")
    if cfg.norm_rel_embeddings:
      out += norm(("encoder", "rel_norm"), "encoder.LayerNorm")
  if cfg.conv_kernel_size:
    out += [Entry(("encoder", "conv", "conv", "kernel"), "encoder.conv.conv.weight", "conv"),
            Entry(("encoder", "conv", "conv", "bias"), "encoder.conv.conv.bias", "copy")]
    out += norm(("encoder", "conv", "norm"), "encoder.conv.LayerNorm")
  if legacy:
    mlm = bert.mlm_entries("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                           "cls.predictions.bias")
  else:
    mlm = bert.mlm_entries("lm_predictions.lm_head.dense", "lm_predictions.lm_head.LayerNorm",
                           "lm_predictions.lm_head.bias")
  return out + bert.head_entries(cfg, head, with_pooler, mlm, pair_key="")
