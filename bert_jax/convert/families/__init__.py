"""One module per Hugging Face model family: its config.json fields, its parameter names, its classes.

Each module gives MODEL_TYPES (the config.json model_types it reads), PREFIX (the base model's
attribute in `*For*` models), ARCHITECTURES ((model_type, head) -> class name),
`config_from_hf(hf, source, legacy)`, `hf_config(cfg, legacy)` and
`key_table(cfg, head, with_pooler, legacy)` (the Entry table hf_params walks both ways). A module may
also give `adopts(cfg, head)`, whether a bert_jax model of another family exports as its model_type,
and `adopt(cfg)`, its config under it (a BERT with the RTD head exports as an ELECTRA discriminator).
"""

from __future__ import annotations

from types import ModuleType

from bert_jax.convert.families import albert, bert, deberta, distilbert, electra, modernbert, mpnet, roberta
from bert_jax.models.config import ModelConfig

MODULES: tuple[ModuleType, ...] = (bert, roberta, albert, deberta, modernbert, distilbert, electra, mpnet)
BY_MODEL_TYPE: dict[str, ModuleType] = {t: m for m in MODULES for t in m.MODEL_TYPES}
MODEL_TYPES = tuple(BY_MODEL_TYPE)


def family(model_type: str, source: str = "config.json") -> ModuleType:
  """The module of a model_type (the same string as ModelConfig.family); an unknown one raises listing the known."""
  if model_type not in BY_MODEL_TYPE:
    raise ValueError(f"{source}: model_type={model_type!r} is not supported; expected one of {MODEL_TYPES}")
  return BY_MODEL_TYPE[model_type]


def export_config(cfg: ModelConfig, head: str | None) -> ModelConfig:
  """The config a model of `cfg` with `head` exports under: its own, or that of a family that adopts it
  (a module's `adopts(cfg, head)`, e.g. ELECTRA for a replaced-token-detection run's models)."""
  for module in MODULES:
    if hasattr(module, "adopts") and module.adopts(cfg, head):
      return module.adopt(cfg)
  return cfg


def check_architectures(hf: dict, source: str = "config.json") -> None:
  """Raises naming any class of config.json's `architectures` that bert_jax has no head for (say
  BertForMultipleChoice), with the ones it reads for that model_type: its weights would be dropped."""
  module = family(str(hf.get("model_type", "")), source)
  known = sorted(set(module.ARCHITECTURES.values()))
  unknown = [name for name in hf.get("architectures") or () if name not in known]
  if unknown:
    raise ValueError(f"{source}: architectures={unknown} is not supported (its head would be lost); expected one "
                     f"of {known}, or load the encoder alone with head=None")

