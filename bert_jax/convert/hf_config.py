"""Hugging Face `config.json` <-> `ModelConfig`: the family modules (convert/families) hold the fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bert_jax.convert import families
from bert_jax.models.config import ModelConfig

MODEL_TYPES = families.MODEL_TYPES


def model_config_from_hf(hf: Mapping[str, Any], source: str = "config.json",
                         legacy: bool | None = None) -> ModelConfig:
  """Maps a Hugging Face config dict onto ModelConfig; unsupported options raise, naming them.

  legacy: DeBERTa's MLM head layout when known from the checkpoint's keys (see families/deberta.py).
  """
  return families.family(hf.get("model_type"), source).config_from_hf(hf, source, legacy)


def hf_config_from_model(cfg: ModelConfig, head: str | None = None, *, legacy: bool = True) -> dict[str, Any]:
  """The config.json a Hugging Face model of the same architecture would have.

  legacy: DeBERTa's MLM head layout, `cls.predictions` (True) or `lm_predictions.lm_head`.
  """
  module = families.family(cfg.family, f"family {cfg.family!r}")
  if (cfg.family, head) not in module.ARCHITECTURES:
    raise ValueError(f"exporting head={head!r} for {cfg.family} is not supported")
  return {"model_type": cfg.family, "architectures": [module.ARCHITECTURES[(cfg.family, head)]],
          **module.hf_config(cfg, legacy)}
