"""ALBERT (`albert`): factorised embeddings, groups of shared layers, the SOP classifier."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bert_jax.convert.families import bert
from bert_jax.convert.keys import Entry, dense, norm
from bert_jax.models.config import ModelConfig

MODEL_TYPES = ("albert",)
PREFIX = "albert"
ARCHITECTURES = {("albert", None): "AlbertModel", ("albert", "mlm"): "AlbertForMaskedLM",
                 ("albert", "pretraining"): "AlbertForPreTraining", **bert.task_architectures("albert", "Albert")}


def config_from_hf(hf: Mapping[str, Any], source: str, legacy: bool | None = None) -> ModelConfig:
  return ModelConfig(**bert.common_config(hf, source), embedding_size=hf.get("embedding_size", 128),
                     share_layers="all", num_hidden_groups=hf.get("num_hidden_groups", 1),
                     inner_group_num=hf.get("inner_group_num", 1))


def hf_config(cfg: ModelConfig, legacy: bool = True) -> dict[str, Any]:
  return {**bert.common_hf_config(cfg), "embedding_size": cfg.embed_dim, "num_hidden_groups": cfg.num_hidden_groups,
          "inner_group_num": cfg.inner_group_num}


def layer_entries(ours: tuple[str, ...], hf: str) -> list[Entry]:
  a = (*ours, "attention")
  out = []
  for name in ("query", "key", "value"):
    out += dense((*a, "self", name), f"{hf}.attention.{name}", "heads_in")
  out += dense((*a, "output"), f"{hf}.attention.dense", "heads_out")
  out += norm((*a, "norm"), f"{hf}.attention.LayerNorm")
  out += dense((*ours, "mlp", "wi"), f"{hf}.ffn")
  out += dense((*ours, "mlp", "wo"), f"{hf}.ffn_output")
  out += norm((*ours, "mlp", "norm"), f"{hf}.full_layer_layer_norm")
  return out


def key_table(cfg: ModelConfig, head: str | None, with_pooler: bool, legacy: bool = True) -> list[Entry]:
  out = bert.embedding_entries(cfg)
  out += dense(("embeddings", "projection"), "encoder.embedding_hidden_mapping_in")
  for g in range(cfg.num_hidden_groups):
    for k in range(cfg.inner_group_num):
      out += layer_entries(("encoder", f"group_{g}_layer_{k}"), f"encoder.albert_layer_groups.{g}.albert_layers.{k}")
  mlm = bert.mlm_entries("predictions.dense", "predictions.LayerNorm", "predictions.bias")
  return out + bert.head_entries(cfg, head, with_pooler, mlm, "sop_classifier.classifier", pooler_key="pooler")
