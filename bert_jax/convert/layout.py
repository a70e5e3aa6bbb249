"""Per-layer (`encoder/layer_{i}`) <-> scanned (`encoder/layers`, stacked on axis 0) parameter layouts."""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax
import numpy as np

_LAYER = re.compile(r"^layer_(\d+)$")


def stack_layers(params: Mapping) -> dict:
  """encoder/layer_0..layer_{L-1} -> encoder/layers with a leading [L] axis."""
  encoder = dict(params["encoder"])
  names = sorted((int(m.group(1)), k) for k in encoder if (m := _LAYER.match(k)))
  if not names:
    return dict(params)
  layers = [encoder.pop(k) for _, k in names]
  encoder["layers"] = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *layers)
  return {**params, "encoder": encoder}


def unstack_layers(params: Mapping) -> dict:
  """encoder/layers [L, ...] -> encoder/layer_0..layer_{L-1}."""
  encoder = dict(params["encoder"])
  if "layers" not in encoder:
    return dict(params)
  stacked = encoder.pop("layers")
  count = jax.tree.leaves(stacked)[0].shape[0]
  for i in range(count):
    encoder[f"layer_{i}"] = jax.tree.map(lambda x, i=i: np.asarray(x[i]), stacked)
  return {**params, "encoder": encoder}
