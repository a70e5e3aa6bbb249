"""Hugging Face state dicts <-> bert_jax parameter trees.

One table, built per model from its ModelConfig, lists every parameter as
(bert_jax path, Hugging Face key, transform). Import and export both walk that
table, so a name or shape that does not fit raises with the parameter named,
and nothing is ever left at its random initialisation.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import numpy as np

from bert_jax.models.config import ModelConfig

PREFIXES = {"bert": "bert", "roberta": "roberta", "albert": "albert", "deberta": "deberta", "deberta-v2": "deberta",
            "modernbert": "model"}

# Keys the reference models carry that hold no parameter of ours.
IGNORED = re.compile(r"(^|\.)position_ids$|(^|\.)predictions\.decoder\.(weight|bias)$|^lm_head\.decoder\.(weight|bias)$"
                     r"|^lm_predictions\.lm_head\.decoder\.(weight|bias)$|^decoder\.weight$")


@dataclasses.dataclass(frozen=True)
class Entry:
  path: tuple[str, ...]   # bert_jax parameter path
  key: str                # Hugging Face key (without the base-model prefix for backbone entries)
  kind: str               # transform, see _to_flax
  backbone: bool = True   # lives under the base-model prefix (bert./roberta./...) in *For* models


def _dense(path, key, kind="dense", bias=True, backbone=True):
  out = [Entry((*path, "kernel"), f"{key}.weight", kind, backbone)]
  if bias:
    out.append(Entry((*path, "bias"), f"{key}.bias", "heads_bias" if kind == "heads_in" else "copy", backbone))
  return out


def _norm(path, key, backbone=True, bias=True):
  out = [Entry((*path, "scale"), f"{key}.weight", "copy", backbone)]
  if bias:
    out.append(Entry((*path, "bias"), f"{key}.bias", "copy", backbone))
  return out


def _embed(path, key):
  return [Entry((*path, "embedding"), f"{key}.weight", "copy")]


def _bert_layer(cfg: ModelConfig, ours: tuple[str, ...], hf: str) -> list[Entry]:
  a = (*ours, "attention")
  out = []
  if cfg.attention_type == "standard":
    for name in ("query", "key", "value"):
      out += _dense((*a, "self", name), f"{hf}.attention.self.{name}", "heads_in")
  elif cfg.family == "deberta":
    out += [Entry((*a, "self", "query", "kernel"), f"{hf}.attention.self.in_proj.weight", "in_proj:0"),
            Entry((*a, "self", "key", "kernel"), f"{hf}.attention.self.in_proj.weight", "in_proj:1"),
            Entry((*a, "self", "value", "kernel"), f"{hf}.attention.self.in_proj.weight", "in_proj:2"),
            Entry((*a, "self", "query", "bias"), f"{hf}.attention.self.q_bias", "heads_bias"),
            Entry((*a, "self", "value", "bias"), f"{hf}.attention.self.v_bias", "heads_bias")]
    if cfg.relative_attention and "c2p" in cfg.pos_att_type:
      out += _dense((*a, "self", "pos_key"), f"{hf}.attention.self.pos_proj", "heads_in", bias=False)
    if cfg.relative_attention and "p2c" in cfg.pos_att_type:
      out += _dense((*a, "self", "pos_query"), f"{hf}.attention.self.pos_q_proj", "heads_in")
    if cfg.talking_head:
      out += [Entry((*a, "self", "head_logits_proj"), f"{hf}.attention.self.head_logits_proj.weight", "dense"),
              Entry((*a, "self", "head_weights_proj"), f"{hf}.attention.self.head_weights_proj.weight", "dense")]
  else:  # deberta-v2
    for name in ("query", "key", "value"):
      out += _dense((*a, "self", name), f"{hf}.attention.self.{name}_proj", "heads_in")
    if cfg.relative_attention and not cfg.share_att_key:
      if "c2p" in cfg.pos_att_type:
        out += _dense((*a, "self", "pos_key"), f"{hf}.attention.self.pos_key_proj", "heads_in")
      if "p2c" in cfg.pos_att_type:
        out += _dense((*a, "self", "pos_query"), f"{hf}.attention.self.pos_query_proj", "heads_in")
  out += _dense((*a, "output"), f"{hf}.attention.output.dense", "heads_out")
  out += _norm((*a, "norm"), f"{hf}.attention.output.LayerNorm")
  out += _dense((*ours, "mlp", "wi"), f"{hf}.intermediate.dense")
  out += _dense((*ours, "mlp", "wo"), f"{hf}.output.dense")
  out += _norm((*ours, "mlp", "norm"), f"{hf}.output.LayerNorm")
  return out


def _albert_layer(ours: tuple[str, ...], hf: str) -> list[Entry]:
  a = (*ours, "attention")
  out = []
  for name in ("query", "key", "value"):
    out += _dense((*a, "self", name), f"{hf}.attention.{name}", "heads_in")
  out += _dense((*a, "output"), f"{hf}.attention.dense", "heads_out")
  out += _norm((*a, "norm"), f"{hf}.attention.LayerNorm")
  out += _dense((*ours, "mlp", "wi"), f"{hf}.ffn")
  out += _dense((*ours, "mlp", "wo"), f"{hf}.ffn_output")
  out += _norm((*ours, "mlp", "norm"), f"{hf}.full_layer_layer_norm")
  return out


def _modernbert_table(cfg: ModelConfig, head: str | None) -> list[Entry]:
  """ModernBERT: fused Wqkv, pre-LN norms (none before layer 0's attention), GLU Wi, final norm, head + decoder."""
  nb, ab, mb = cfg.norm_bias, cfg.attention_bias, cfg.mlp_bias
  out = _embed(("embeddings", "word_embeddings"), "embeddings.tok_embeddings")
  out += _norm(("embeddings", "norm"), "embeddings.norm", bias=nb)
  for i in range(cfg.num_layers):
    ours, hf = ("encoder", f"layer_{i}"), f"layers.{i}"
    a = (*ours, "attention")
    if i > 0:
      out += _norm((*a, "norm"), f"{hf}.attn_norm", bias=nb)
    for part, name in enumerate(("query", "key", "value")):
      out.append(Entry((*a, "self", name, "kernel"), f"{hf}.attn.Wqkv.weight", f"qkv:{part}"))
      if ab:
        out.append(Entry((*a, "self", name, "bias"), f"{hf}.attn.Wqkv.bias", f"qkv_bias:{part}"))
    out += _dense((*a, "output"), f"{hf}.attn.Wo", "heads_out", bias=ab)
    out += _norm((*ours, "mlp", "norm"), f"{hf}.mlp_norm", bias=nb)
    out += _dense((*ours, "mlp", "wi"), f"{hf}.mlp.Wi", bias=mb)
    out += _dense((*ours, "mlp", "wo"), f"{hf}.mlp.Wo", bias=mb)
  out += _norm(("encoder", "final_norm"), "final_norm", bias=nb)
  if head == "mlm":
    out += _dense(("mlm", "dense"), "head.dense", bias=cfg.mlm_dense_bias, backbone=False)
    out += _norm(("mlm", "norm"), "head.norm", backbone=False, bias=nb)
    if cfg.mlm_decoder_bias:
      out.append(Entry(("mlm", "bias"), "decoder.bias", "copy", backbone=False))
  elif head is not None:
    raise ValueError(f"Hugging Face conversion of head={head!r} is not supported for modernbert")
  return out


def _mlm_head(cfg: ModelConfig, legacy: bool) -> list[Entry]:
  if cfg.family == "roberta":
    dense, norm, bias = "lm_head.dense", "lm_head.layer_norm", "lm_head.bias"
  elif cfg.family == "albert":
    dense, norm, bias = "predictions.dense", "predictions.LayerNorm", "predictions.bias"
  elif cfg.family in ("deberta", "deberta-v2") and not legacy:
    dense, norm, bias = "lm_predictions.lm_head.dense", "lm_predictions.lm_head.LayerNorm", "lm_predictions.lm_head.bias"
  else:
    dense, norm, bias = "cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias"
  return (_dense(("mlm", "dense"), dense, backbone=False) + _norm(("mlm", "norm"), norm, backbone=False)
          + [Entry(("mlm", "bias"), bias, "copy", backbone=False)])


def key_table(cfg: ModelConfig, *, head: str | None, with_pooler: bool, legacy: bool = True) -> list[Entry]:
  """Every parameter of EncoderModel(cfg, head, with_pooler) with its Hugging Face key (unscanned layout)."""
  if cfg.scan_layers:
    raise ValueError("key_table describes the unscanned layout; unstack scanned params first")
  if cfg.family == "modernbert":
    return _modernbert_table(cfg, head)
  out = _embed(("embeddings", "word_embeddings"), "embeddings.word_embeddings")
  if cfg.position_ids != "none":
    out += _embed(("embeddings", "position_embeddings"), "embeddings.position_embeddings")
  if cfg.type_vocab_size > 0:
    out += _embed(("embeddings", "token_type_embeddings"), "embeddings.token_type_embeddings")
  out += _norm(("embeddings", "norm"), "embeddings.LayerNorm")
  if cfg.family == "albert":
    out += _dense(("embeddings", "projection"), "encoder.embedding_hidden_mapping_in")
    for g in range(cfg.num_hidden_groups):
      for k in range(cfg.inner_group_num):
        out += _albert_layer(("encoder", f"group_{g}_layer_{k}"), f"encoder.albert_layer_groups.{g}.albert_layers.{k}")
  else:
    if cfg.factorized:
      out += _dense(("embeddings", "projection"), "embeddings.embed_proj", bias=False)
    for i in range(cfg.num_layers):
      out += _bert_layer(cfg, ("encoder", f"layer_{i}"), f"encoder.layer.{i}")
    if cfg.attention_type == "disentangled" and cfg.relative_attention:
      out += _embed(("encoder", "rel_embeddings"), "encoder.rel_embeddings")
      if cfg.norm_rel_embeddings:
        out += _norm(("encoder", "rel_norm"), "encoder.LayerNorm")
    if cfg.conv_kernel_size:
      out += [Entry(("encoder", "conv", "conv", "kernel"), "encoder.conv.conv.weight", "conv"),
              Entry(("encoder", "conv", "conv", "bias"), "encoder.conv.conv.bias", "copy")]
      out += _norm(("encoder", "conv", "norm"), "encoder.conv.LayerNorm")
  if with_pooler:
    out += _dense(("pooler", "dense"), "pooler" if cfg.family == "albert" else "pooler.dense")
  if head in ("mlm", "pretraining"):
    out += _mlm_head(cfg, legacy)
  if head == "pretraining":
    pair = "sop_classifier.classifier" if cfg.family == "albert" else "cls.seq_relationship"
    out += _dense(("pair_classifier", "dense"), pair, backbone=False)
  elif head is not None and head != "mlm":
    raise ValueError(f"Hugging Face conversion of head={head!r} is not supported")
  return out


# Transforms ---------------------------------------------------------------------------------

def _to_flax(kind: str, w: np.ndarray, cfg: ModelConfig) -> np.ndarray:
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
  prefix = PREFIXES[family] + "."
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
    _set(params, entry.path, np.asarray(_to_flax(entry.kind, np.asarray(value, np.float32), cfg)))
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
           "head.", "decoder.")
  return key.lstrip("@").startswith(heads)


def _check_tied(state, params, has_prefix, source):
  """An untied MLM decoder would be silently replaced by the word embeddings: refuse it."""
  words = params["embeddings"]["word_embeddings"]["embedding"]
  for key in ("cls.predictions.decoder.weight", "lm_head.decoder.weight", "predictions.decoder.weight", "decoder.weight"):
    value = state.get(key)
    if value is not None and "mlm" in params and not np.array_equal(np.asarray(value, np.float32), words):
      raise ValueError(f"{source}: {key} differs from the word embeddings; untied MLM decoders are not supported")


def hf_from_flax(params: Mapping, cfg: ModelConfig, *, head: str | None, with_pooler: bool,
                 legacy: bool = True, prefixed: bool | None = None) -> dict[str, np.ndarray]:
  """The Hugging Face state dict of a bert_jax params tree (tied decoder keys omitted, as HF saves them)."""
  table = key_table(cfg, head=head, with_pooler=with_pooler, legacy=legacy)
  if prefixed is None:
    prefixed = head is not None
  prefix = PREFIXES[cfg.family] + "." if prefixed else ""
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
