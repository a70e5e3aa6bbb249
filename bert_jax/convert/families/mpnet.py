"""MPNet (`mpnet`): BERT-style layers under `attention.attn.{q,k,v,o}`, one relative position bias table, `lm_head`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bert_jax.convert.families import bert
from bert_jax.convert.keys import Entry, dense, embed, norm
from bert_jax.models.config import ModelConfig

MODEL_TYPES = ("mpnet",)
PREFIX = "mpnet"
ARCHITECTURES = {("mpnet", None): "MPNetModel", ("mpnet", "mlm"): "MPNetForMaskedLM",
                 **bert.task_architectures("mpnet", "MPNet")}

# What the reference hard-codes, whatever config.json says: MPNetEncoder.compute_position_bias buckets
# with its defaults (32 buckets, max_distance 128) and MPNetEmbeddings counts positions from padding_idx 1.
BUCKETS, MAX_DISTANCE, PADDING_IDX = 32, 128, 1


def config_from_hf(hf: Mapping[str, Any], source: str, legacy: bool | None = None) -> ModelConfig:
  """MPNet's config.json -> ModelConfig; options bert_jax does not implement raise, naming them."""
  pad = hf.get("pad_token_id", PADDING_IDX)
  if pad not in (None, PADDING_IDX):
    raise ValueError(f"{source}: pad_token_id={pad} is not supported: the reference derives position ids from "
                     f"padding_idx {PADDING_IDX} whatever pad_token_id says")
  rows = hf.get("relative_attention_num_buckets", BUCKETS)
  if not isinstance(rows, int) or rows < BUCKETS:
    raise ValueError(f"{source}: relative_attention_num_buckets={rows!r} is not supported: the reference sorts "
                     f"distances into {BUCKETS} buckets whatever the table's size, so a table of fewer rows is "
                     "read out of range")
  if not hf.get("tie_word_embeddings", True):
    raise ValueError(f"{source}: tie_word_embeddings=false is not supported (the MLM decoder is the word embeddings)")
  common = {**bert.common_config(hf, source), "type_vocab_size": 0, "pad_token_id": PADDING_IDX}
  return ModelConfig(**common, position_ids="roberta", relative_attention_num_buckets=rows,
                     relative_attention_bucketing=BUCKETS, relative_attention_max_distance=MAX_DISTANCE,
                     mlm_act="gelu")  # the LM head's gelu is fixed in the reference


def hf_config(cfg: ModelConfig, legacy: bool = True) -> dict[str, Any]:
  """The config.json fields of an MPNet model; settings the reference cannot express raise."""
  fixed = {"relative_attention_bucketing": BUCKETS, "relative_attention_max_distance": MAX_DISTANCE,
           "pad_token_id": PADDING_IDX, "position_ids": "roberta", "type_vocab_size": 0, "mlm_act": "gelu"}
  for name, value in fixed.items():
    if getattr(cfg, name) != value:
      raise ValueError(f"model.{name}={getattr(cfg, name)!r} cannot be exported as mpnet: the reference "
                       f"fixes it at {value!r}")
  if cfg.relative_attention_num_buckets < BUCKETS:
    raise ValueError(f"model.relative_attention_num_buckets={cfg.relative_attention_num_buckets} cannot be exported "
                     f"as mpnet: the reference reads {BUCKETS} rows")
  out = bert.common_hf_config(cfg)
  del out["type_vocab_size"]
  return {**out, "relative_attention_num_buckets": cfg.relative_attention_num_buckets, "bos_token_id": 0,
          "eos_token_id": 2}


def layer_entries(cfg: ModelConfig, ours: tuple[str, ...], hf: str) -> list[Entry]:
  """One layer `encoder.layer.{i}`: q / k / v / o under `attention.attn`, the attention norm beside them."""
  a = (*ours, "attention")
  out = []
  for name, key in (("query", "q"), ("key", "k"), ("value", "v")):
    out += dense((*a, "self", name), f"{hf}.attention.attn.{key}", "heads_in")
  out += dense((*a, "output"), f"{hf}.attention.attn.o", "heads_out")
  out += norm((*a, "norm"), f"{hf}.attention.LayerNorm")
  out += dense((*ours, "mlp", "wi"), f"{hf}.intermediate.dense")
  out += dense((*ours, "mlp", "wo"), f"{hf}.output.dense")
  out += norm((*ours, "mlp", "norm"), f"{hf}.output.LayerNorm")
  return out


def key_table(cfg: ModelConfig, head: str | None, with_pooler: bool, legacy: bool = True) -> list[Entry]:
  if head == "pretraining":
    raise ValueError("Hugging Face conversion of head='pretraining' is not supported for mpnet (the reference has "
                     "no sentence-pair head)")
  out = bert.embedding_entries(cfg)
  for i in range(cfg.num_layers):
    out += layer_entries(cfg, ("encoder", f"layer_{i}"), f"encoder.layer.{i}")
  out += embed(("encoder", "relative_attention_bias"), "encoder.relative_attention_bias")
  mlm = bert.mlm_entries("lm_head.dense", "lm_head.layer_norm", "lm_head.bias")
  return out + bert.head_entries(cfg, head, with_pooler, mlm, pair_key="")
