"""What one embedding run is asked for: `Settings`, resolved from a model folder's defaults and flags.

`resolve_settings` merges the sentence-transformers folder defaults
(`bert_jax.convert.sentence_transformers.folder_defaults`) with the flags
that were given and checks the result against the model; `EmbedError` is the
error of the whole application (bad input, bad settings).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bert_jax.convert.sentence_transformers import DEFAULT_MAX_LENGTH, POOLINGS

LONG_INPUTS = ("truncate", "chunk")


class EmbedError(ValueError):
  """Bad input: the message names the file, line or setting at fault."""


@dataclasses.dataclass(frozen=True)
class Settings:
  pooling: str = "mean"           # mean | cls | max
  normalize: bool = False         # L2-normalize each output row
  max_length: int = DEFAULT_MAX_LENGTH  # tokens per sequence, special tokens included
  long_inputs: str = "truncate"   # truncate | chunk


def resolve_settings(defaults: dict[str, Any], model_max_length: int, **flags: Any) -> Settings:
  """Folder defaults overridden by the flags that are not None; checked against the model."""
  values = {**defaults, **{k: v for k, v in flags.items() if v is not None}}
  settings = Settings(**values)
  if settings.pooling not in POOLINGS:
    raise EmbedError(f"pooling={settings.pooling!r}: expected one of {POOLINGS}")
  if settings.long_inputs not in LONG_INPUTS:
    raise EmbedError(f"long_inputs={settings.long_inputs!r}: expected one of {LONG_INPUTS}")
  if settings.max_length < 3:
    raise EmbedError(f"max_length={settings.max_length}: need room for the special tokens and some text")
  if 0 <= model_max_length < settings.max_length:
    raise EmbedError(f"max_length={settings.max_length} is longer than the model's position table "
                     f"({model_max_length} tokens)")
  return settings
