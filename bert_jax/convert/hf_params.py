"""Hugging Face state dicts <-> bert_jax parameter trees.

One table, built per model from its ModelConfig, lists every parameter as
(bert_jax path, Hugging Face key, transform). Import and export both walk that
table, so a name or shape that does not fit raises with the parameter named,
and nothing is ever left at its random initialisation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from bert_jax.convert import families
from bert_jax.convert.keys import Entry
from bert_jax.models.config import ModelConfig

# Keys the reference models carry that hold no parameter of ours.
IGNORED = re.compile(r"(^|\.)position_ids$|(^|\.)predictions\.decoder\.(weight|bias)$|^lm_head\.decoder\.(weight|bias)$"
                     r"|^lm_predictions\.lm_head\.decoder\.(weight|bias)$|^decoder\.weight$"
                     r"|^vocab_projector\.weight$|^generator_lm_head\.weight$")
# Top-level parameter groups of the encoder itself (a head's are named by the head table).
BACKBONE_GROUPS = ("embeddings", "encoder", "pooler")


def key_table(cfg: ModelConfig, *, head: str | None, with_pooler: bool, legacy: bool = True) -> list[Entry]:
  """Every parameter of EncoderModel(cfg, head, with_pooler) with its Hugging Face key (unscanned layout)."""
  if cfg.scan_layers:
    raise ValueError("key_table describes the unscanned layout; unstack scanned params first")
  return families.family(cfg.family, f"family {cfg.family!r}").key_table(cfg, head, with_pooler, legacy)


def prefix(family: str) -> str:
  """The base model's attribute in the family's `*For*` models (`bert`, `roberta`, `model`, ...)."""
  return families.family(family).PREFIX


# Transforms ---------------------------------------------------------------------------------

def to_flax(kind: str, w: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  h, d = cfg.num_heads, cfg.dim_per_head
  if kind == "copy":
    return w
  if kind == "dense":                       # [out, in] -> [in, out]
    return w.T
  if kind == "heads_in":                    # [h*d, in] -> [in, h, d]
    return w.T.reshape(w.shape[1], h, d)
  if kind == "heads_bias":                  # [h*d] -> [h, d]
    return w.reshape(h, d)
  if kind == "heads_out":                   # [out, h*d] -> [h, d, out]
    return w.T.reshape(h, d, w.shape[0])
  if kind == "conv":                        # torch [out, in/g, k] -> flax [k, in/g, out]
    return w.transpose(2, 1, 0)
  if kind.startswith("qkv:"):               # ModernBERT's Wqkv: rows [(q|k|v), h, d]
    part = int(kind.split(":")[1])
    return w.reshape(3, h * d, w.shape[1])[part].T.reshape(w.shape[1], h, d)
  if kind.startswith("qkv_bias:"):
    return w.reshape(3, h, d)[int(kind.split(":")[1])]
  if kind.startswith("in_proj:"):           # DeBERTa v1 fuses q, k, v per head: rows [h, (q|k|v), d]
    part = int(kind.split(":")[1])
    return w.reshape(h, 3, d, w.shape[1])[:, part].transpose(2, 0, 1)
  raise ValueError(kind)


def _to_hf(kind: str, x: np.ndarray) -> np.ndarray:
  if kind == "copy":
    return x
  if kind == "dense":
    return x.T
  if kind == "heads_in":
    return x.reshape(x.shape[0], -1).T
  if kind == "heads_bias":
    return x.reshape(-1)
  if kind == "heads_out":
    return x.reshape(-1, x.shape[-1]).T
  if kind == "conv":
    return x.transpose(2, 1, 0)
  raise ValueError(kind)


def strip_prefix(state: Mapping[str, np.ndarray], family: str) -> tuple[dict[str, np.ndarray], bool]:
  """Removes the base-model prefix (`bert.` ...); old `gamma`/`beta` LayerNorm names become weight/bias."""
  prefix = families.family(family).PREFIX + "."
  has_prefix = any(k.startswith(prefix) for k in state)
  out = {}
  for key, value in state.items():
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
    key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
    if has_prefix and key.startswith(prefix):
      key = "@" + key[len(prefix):]   # backbone keys get a marker so head keys cannot collide
    out[key] = value
  return out, has_prefix


def _lookup(state, entry: Entry, has_prefix: bool):
  key = ("@" + entry.key) if (entry.backbone and has_prefix) else entry.key
  return key, state.get(key)


def flax_from_hf(state: Mapping[str, np.ndarray], cfg: ModelConfig, *, head: str | None, with_pooler: bool,
                 legacy: bool = True, source: str = "checkpoint") -> dict:
  """A nested params dict for EncoderModel(cfg, head, with_pooler) from a HF state dict.

  Raises KeyError naming every missing key, ValueError naming a key whose shape
  does not fit or an unexpected backbone key. Head keys of other heads are
  ignored (a ForMaskedLM folder loads as a bare encoder).
  """
  state, has_prefix = strip_prefix(state, cfg.family)
  table = key_table(cfg, head=head, with_pooler=with_pooler, legacy=legacy)
  params: dict = {}
  missing, used = [], set()
  for entry in table:
    key, value = _lookup(state, entry, has_prefix)
    if value is None:
      missing.append(key.lstrip("@"))
      continue
    used.add(key)
    _set(params, entry.path, np.asarray(to_flax(entry.kind, np.asarray(value, np.float32), cfg)))
  if missing:
    raise KeyError(f"{source}: missing {len(missing)} parameter(s) for {cfg.family} head={head}: {missing[:8]}"
                   + (" ..." if len(missing) > 8 else ""))
  backbone_marker = "@" if has_prefix else ""
  unexpected = [k for k in state if k not in used and not IGNORED.search(k.lstrip("@"))
                and (k.startswith("@") or not has_prefix) and not _is_head_key(k, cfg)]
  if unexpected:
    raise ValueError(f"{source}: parameters with no place in the {cfg.family} model: "
                     f"{[k.lstrip(backbone_marker) for k in unexpected[:8]]}")
  _check_tied(state, params, has_prefix, source)
  return params


def _is_head_key(key: str, cfg: ModelConfig) -> bool:
  heads = ("cls.", "lm_head.", "predictions.", "lm_predictions.", "sop_classifier.", "pooler", "classifier", "qa_outputs",
           "head.", "decoder.", "vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "pre_classifier.",
           "generator_predictions.", "generator_lm_head.", "discriminator_predictions.")
  return key.lstrip("@").startswith(heads)


def _check_tied(state, params, has_prefix, source):
  """An untied MLM decoder would be silently replaced by the word embeddings: refuse it."""
  words = params["embeddings"]["word_embeddings"]["embedding"]
  for key in ("cls.predictions.decoder.weight", "lm_head.decoder.weight", "predictions.decoder.weight", "decoder.weight",
              "vocab_projector.weight", "generator_lm_head.weight"):
    value = state.get(key)
    if value is not None and "mlm" in params and not np.array_equal(np.asarray(value, np.float32), words):
      raise ValueError(f"{source}: {key} differs from the word embeddings; untied MLM decoders are not supported")


def hf_from_flax(params: Mapping, cfg: ModelConfig, *, head: str | None, with_pooler: bool,
                 legacy: bool = True, prefixed: bool | None = None) -> dict[str, np.ndarray]:
  """The Hugging Face state dict of a bert_jax params tree (tied decoder keys omitted, as HF saves them).

  A backbone parameter the family's layout has no key for raises, naming it (a BERT with factorised
  embeddings has no BERT layout); parameters of heads that are not exported are left out.
  """
  table = key_table(cfg, head=head, with_pooler=with_pooler, legacy=legacy)
  covered = {entry.path for entry in table}
  left_out = ["/".join(path) for path in _leaf_paths(params)
              if path[0] in BACKBONE_GROUPS and path not in covered]
  if left_out:
    raise ValueError(f"{cfg.family} (head={head}) has no Hugging Face key for {left_out[:8]}"
                     + (" ..." if len(left_out) > 8 else "") + "; this model has no layout in that family")
  if prefixed is None:
    prefixed = head is not None
  prefix = families.family(cfg.family).PREFIX + "." if prefixed else ""
  out: dict[str, np.ndarray] = {}
  fused: dict[str, list] = {}
  for entry in table:
    x = np.asarray(_get(params, entry.path), np.float32)
    key = (prefix if entry.backbone else "") + entry.key
    kind, _, part = entry.kind.partition(":")
    if kind in ("in_proj", "qkv", "qkv_bias"):
      fused.setdefault((key, kind), [None] * 3)[int(part)] = x
      continue
    out[key] = np.ascontiguousarray(_to_hf(entry.kind, x))
  for (key, kind), (q, k, v) in fused.items():
    if kind == "in_proj":
      # [in, h, d] x3 -> [h, 3, d, in] -> [3*h*d, in]
      stacked = np.stack([q, k, v], axis=0).transpose(2, 0, 3, 1)
      out[key] = np.ascontiguousarray(stacked.reshape(-1, stacked.shape[-1]))
    elif kind == "qkv":  # [in, h, d] x3 -> [(q|k|v) h d, in]
      out[key] = np.ascontiguousarray(np.concatenate([x.reshape(x.shape[0], -1).T for x in (q, k, v)]))
    else:
      out[key] = np.concatenate([x.reshape(-1) for x in (q, k, v)])
  return out


def _leaf_paths(tree: Mapping, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
  out = []
  for name, value in tree.items():
    out += _leaf_paths(value, (*prefix, name)) if isinstance(value, Mapping) else [(*prefix, name)]
  return out


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]):
  for name in path:
    if name not in tree:
      raise KeyError(f"parameter {'/'.join(path)} is missing from the bert_jax params")
    tree = tree[name]
  return tree
