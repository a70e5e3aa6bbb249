"""What one embedding run is asked for: `Settings`, resolved from a model folder's defaults and flags.

`resolve_settings` merges the sentence-transformers folder defaults
(`folder_settings`: `bert_jax.convert.sentence_transformers.folder_defaults` and
the folder's Dense modules) with the flags that were given and checks the result
against the model; `EmbedError` is the error of the whole application (bad
input, bad settings).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bert_jax.convert.sentence_transformers import (DEFAULT_MAX_LENGTH, POOLINGS, DenseModule, dense_modules,
                                                    folder_defaults)

LONG_INPUTS = ("truncate", "chunk")


class EmbedError(ValueError):
  """Bad input: the message names the file, line or setting at fault."""


@dataclasses.dataclass(frozen=True)
class Settings:
  pooling: str = "mean"           # mean | cls | max
  normalize: bool = False         # L2-normalize each output row
  max_length: int = DEFAULT_MAX_LENGTH  # tokens per sequence, special tokens included
  long_inputs: str = "truncate"   # truncate | chunk
  dense: tuple[DenseModule, ...] = ()  # the folder's Dense modules, applied after pooling, before normalizing


def folder_settings(path: str | None, model_max_length: int) -> dict[str, Any]:
  """What a model folder asks for: its sentence-transformers defaults and its Dense modules."""
  return {**folder_defaults(path, model_max_length, dense=True), "dense": dense_modules(path)}


def resolve_settings(defaults: dict[str, Any], model_max_length: int, hidden_size: int | None = None,
                     **flags: Any) -> Settings:
  """Folder defaults overridden by the flags that are not None; checked against the model (its position
  table, and its hidden size where the first Dense module reads it)."""
  values = {**defaults, **{k: v for k, v in flags.items() if v is not None}}
  settings = Settings(**values)
  if settings.dense and hidden_size is not None and settings.dense[0].in_features != hidden_size:
    raise EmbedError(f"{settings.dense[0].folder}: the Dense module reads in_features={settings.dense[0].in_features}, "
                     f"but the model's hidden size is {hidden_size}")
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
