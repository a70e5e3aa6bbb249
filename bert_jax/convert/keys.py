"""The parameter-name table entries every family's conversion is written in.

An `Entry` pairs one bert_jax parameter path with its Hugging Face key and the transform
between their layouts (`hf_params`); the helpers build the entries of the usual modules.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Entry:
  path: tuple[str, ...]   # bert_jax parameter path
  key: str                # Hugging Face key (without the base-model prefix for backbone entries)
  kind: str               # transform, see hf_params.to_flax
  backbone: bool = True   # lives under the base-model prefix (bert./roberta./...) in *For* models


def dense(path, key, kind="dense", bias=True, backbone=True) -> list[Entry]:
  """A linear layer: `key.weight` (+ `key.bias`) <-> path/kernel (+ path/bias)."""
  out = [Entry((*path, "kernel"), f"{key}.weight", kind, backbone)]
  if bias:
    out.append(Entry((*path, "bias"), f"{key}.bias", "heads_bias" if kind == "heads_in" else "copy", backbone))
  return out


def norm(path, key, backbone=True, bias=True) -> list[Entry]:
  """A LayerNorm: `key.weight` (+ `key.bias`) <-> path/scale (+ path/bias)."""
  out = [Entry((*path, "scale"), f"{key}.weight", "copy", backbone)]
  if bias:
    out.append(Entry((*path, "bias"), f"{key}.bias", "copy", backbone))
  return out


def embed(path, key) -> list[Entry]:
  """An embedding table: `key.weight` <-> path/embedding."""
  return [Entry((*path, "embedding"), f"{key}.weight", "copy")]
