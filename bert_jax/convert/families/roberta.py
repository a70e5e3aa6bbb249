"""RoBERTa (`roberta`) and XLM-RoBERTa (`xlm-roberta`): BERT layers, fairseq position ids, the `lm_head` MLM head.

XLM-RoBERTa is RoBERTa's architecture with a 250,002-token SentencePiece vocabulary: same fields, same keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bert_jax.convert.families import bert
from bert_jax.convert.keys import Entry
from bert_jax.models.config import ModelConfig

MODEL_TYPES = ("roberta", "xlm-roberta")
PREFIX = "roberta"
ARCHITECTURES = {("roberta", None): "RobertaModel", ("roberta", "mlm"): "RobertaForMaskedLM",
                 ("xlm-roberta", None): "XLMRobertaModel", ("xlm-roberta", "mlm"): "XLMRobertaForMaskedLM",
                 **bert.task_architectures("roberta", "Roberta"), **bert.task_architectures("xlm-roberta", "XLMRoberta")}


def config_from_hf(hf: Mapping[str, Any], source: str, legacy: bool | None = None) -> ModelConfig:
  # RoBERTa's LM head always uses exact GELU, whatever hidden_act says.
  return ModelConfig(**bert.common_config(hf, source), position_ids="roberta", mlm_act="gelu")


def hf_config(cfg: ModelConfig, legacy: bool = True) -> dict[str, Any]:
  return {**bert.common_hf_config(cfg), "bos_token_id": 0, "eos_token_id": 2}


def key_table(cfg: ModelConfig, head: str | None, with_pooler: bool, legacy: bool = True) -> list[Entry]:
  out = bert.embedding_entries(cfg)
  for i in range(cfg.num_layers):
    out += bert.layer_entries(cfg, ("encoder", f"layer_{i}"), f"encoder.layer.{i}")
  mlm = bert.mlm_entries("lm_head.dense", "lm_head.layer_norm", "lm_head.bias")
  return out + bert.head_entries(cfg, head, with_pooler, mlm, pair_key="")
