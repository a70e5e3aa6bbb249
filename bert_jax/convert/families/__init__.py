"""One module per Hugging Face model family: its config.json fields, its parameter names, its classes.

Each module gives MODEL_TYPES (the config.json model_types it reads), PREFIX (the base model's
attribute in `*For*` models), ARCHITECTURES ((model_type, head) -> class name),
`config_from_hf(hf, source, legacy)`, `hf_config(cfg, legacy)` and
`key_table(cfg, head, with_pooler, legacy)` (the Entry table hf_params walks both ways).
"""

from __future__ import annotations

from types import ModuleType

from bert_jax.convert.families import albert, bert, deberta, modernbert, roberta

BY_MODEL_TYPE: dict[str, ModuleType] = {t: m for m in (bert, roberta, albert, deberta, modernbert) for t in m.MODEL_TYPES}
MODEL_TYPES = tuple(BY_MODEL_TYPE)


def family(model_type: str, source: str = "config.json") -> ModuleType:
  """The module of a model_type (the same string as ModelConfig.family); an unknown one raises listing the known."""
  if model_type not in BY_MODEL_TYPE:
    raise ValueError(f"{source}: model_type={model_type!r} is not supported; expected one of {MODEL_TYPES}")
  return BY_MODEL_TYPE[model_type]
