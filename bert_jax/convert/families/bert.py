"""BERT (`bert`): the config fields and layer names the other post-LN families build on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bert_jax.convert.keys import Entry, dense, embed, norm
from bert_jax.models.config import ModelConfig
from bert_jax.models.head_table import classifier_layout

MODEL_TYPES = ("bert",)
PREFIX = "bert"
ARCHITECTURES = {("bert", None): "BertModel", ("bert", "mlm"): "BertForMaskedLM",
                 ("bert", "pretraining"): "BertForPreTraining"}


def label_config(hf: Mapping[str, Any]) -> dict[str, Any]:
  """num_labels, label_names and problem_type from config.json's id2label / num_labels / problem_type.

  The reference's placeholder names (LABEL_0, LABEL_1, ...) are no names: they are dropped.
  """
  id2label = hf.get("id2label") or {}
  names = [str(id2label[k]) for k in sorted(id2label, key=int)]
  count = len(names) if names else int(hf.get("num_labels", 2))
  if names == [f"LABEL_{i}" for i in range(count)]:
    names = []
  return dict(num_labels=count, label_names=tuple(names), problem_type=hf.get("problem_type") or "")


def label_hf_config(cfg: ModelConfig) -> dict[str, Any]:
  """id2label / label2id (placeholders when the model has no names) and problem_type, as transformers writes
  them: nothing for its default of two unnamed classes."""
  out: dict[str, Any] = {}
  if cfg.label_names or cfg.num_labels != 2:
    names = list(cfg.label_names) or [f"LABEL_{i}" for i in range(cfg.num_labels)]
    out.update(id2label={str(i): name for i, name in enumerate(names)}, label2id={name: i for i, name in enumerate(names)})
  if cfg.problem_type:
    out["problem_type"] = cfg.problem_type
  return out


def common_config(hf: Mapping[str, Any], source: str) -> dict[str, Any]:
  """The ModelConfig fields every BERT-style config.json names the same way."""
  position_type = hf.get("position_embedding_type", "absolute")
  if position_type not in (None, "absolute"):
    raise ValueError(f"{source}: position_embedding_type={position_type!r} is not supported (only 'absolute')")
  common = dict(
      family=hf["model_type"],
      vocab_size=hf["vocab_size"],
      hidden_size=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"],
      num_heads=hf["num_attention_heads"],
      intermediate_size=hf["intermediate_size"],
      hidden_act=hf.get("hidden_act", "gelu"),
      max_position_embeddings=hf.get("max_position_embeddings", 512),
      type_vocab_size=hf.get("type_vocab_size", 2),
      layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
      pad_token_id=hf.get("pad_token_id") if hf.get("pad_token_id") is not None else 0,
      dropout_rate=hf.get("hidden_dropout_prob", 0.1),
      attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.1),
      **label_config(hf),
  )
  if not isinstance(common["hidden_act"], str):
    raise ValueError(f"{source}: hidden_act must be a string, got {common['hidden_act']!r}")
  return common


def common_hf_config(cfg: ModelConfig) -> dict[str, Any]:
  """The config.json fields of a BERT-style model."""
  return dict(
      vocab_size=cfg.vocab_size,
      hidden_size=cfg.hidden_size,
      num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads,
      intermediate_size=cfg.intermediate_size,
      hidden_act=cfg.hidden_act,
      max_position_embeddings=cfg.max_position_embeddings,
      type_vocab_size=cfg.type_vocab_size,
      layer_norm_eps=cfg.layer_norm_eps,
      pad_token_id=cfg.pad_token_id,
      hidden_dropout_prob=cfg.dropout_rate,
      attention_probs_dropout_prob=cfg.attention_dropout_rate,
      initializer_range=0.02,
      tie_word_embeddings=True,
      **label_hf_config(cfg),
  )


def config_from_hf(hf: Mapping[str, Any], source: str, legacy: bool | None = None) -> ModelConfig:
  return ModelConfig(**common_config(hf, source))


def hf_config(cfg: ModelConfig, legacy: bool = True) -> dict[str, Any]:
  return common_hf_config(cfg)


def embedding_entries(cfg: ModelConfig) -> list[Entry]:
  out = embed(("embeddings", "word_embeddings"), "embeddings.word_embeddings")
  if cfg.position_ids != "none":
    out += embed(("embeddings", "position_embeddings"), "embeddings.position_embeddings")
  if cfg.type_vocab_size > 0:
    out += embed(("embeddings", "token_type_embeddings"), "embeddings.token_type_embeddings")
  return out + norm(("embeddings", "norm"), "embeddings.LayerNorm")


def attention_entries(cfg: ModelConfig, a: tuple[str, ...], hf: str) -> list[Entry]:
  """BERT's q / k / v projections (`attention.self.{query,key,value}`)."""
  out = []
  for name in ("query", "key", "value"):
    out += dense((*a, "self", name), f"{hf}.attention.self.{name}", "heads_in")
  return out


def layer_entries(cfg: ModelConfig, ours: tuple[str, ...], hf: str, attention=attention_entries) -> list[Entry]:
  """One post-LN layer `encoder.layer.{i}`; `attention` gives the self-attention's own entries."""
  a = (*ours, "attention")
  out = attention(cfg, a, hf)
  out += dense((*a, "output"), f"{hf}.attention.output.dense", "heads_out")
  out += norm((*a, "norm"), f"{hf}.attention.output.LayerNorm")
  out += dense((*ours, "mlp", "wi"), f"{hf}.intermediate.dense")
  out += dense((*ours, "mlp", "wo"), f"{hf}.output.dense")
  out += norm((*ours, "mlp", "norm"), f"{hf}.output.LayerNorm")
  return out


def mlm_entries(dense_key: str, norm_key: str, bias_key: str) -> list[Entry]:
  """The MLM transform and decoder bias (the decoder weight is the word embeddings)."""
  return (dense(("mlm", "dense"), dense_key, backbone=False) + norm(("mlm", "norm"), norm_key, backbone=False)
          + [Entry(("mlm", "bias"), bias_key, "copy", backbone=False)])


TASK_HEADS = ("classification", "token_classification", "qa")


def task_head_entries(cfg: ModelConfig, head: str) -> list[Entry]:
  """The *ForSequenceClassification / *ForTokenClassification / *ForQuestionAnswering heads.

  Every family names them the same way for the same layout (models/head_table.py):
  `classifier`, `classifier.{dense,out_proj}`, DeBERTa's top-level `pooler.dense`, DistilBERT's
  `pre_classifier`, ModernBERT's `head.{dense,norm}` (before every task head) and `qa_outputs`
  (ModernBERT: `classifier`).
  """
  layout = classifier_layout(cfg)
  out = []
  if layout == "transform":
    out += dense(("head", "dense"), "head.dense", bias=cfg.mlm_dense_bias, backbone=False)
    out += norm(("head", "norm"), "head.norm", backbone=False, bias=cfg.norm_bias)
  if head == "qa":
    return out + dense(("qa_outputs", "dense"), "classifier" if layout == "transform" else "qa_outputs",
                       backbone=False)
  if head == "classification" and layout == "dense":
    return (out + dense(("classifier", "dense"), "classifier.dense", backbone=False)
            + dense(("classifier", "out_proj"), "classifier.out_proj", backbone=False))
  if head == "classification" and layout == "context_pooler":
    out += dense(("pooler", "dense"), "pooler.dense", backbone=False)
  if head == "classification" and layout == "pre_classifier":
    out += dense(("pre_classifier",), "pre_classifier", backbone=False)
  return out + dense(("classifier", "dense"), "classifier", backbone=False)


def head_entries(cfg: ModelConfig, head: str | None, with_pooler: bool, mlm: list[Entry], pair_key: str,
                 pooler_key: str = "pooler.dense") -> list[Entry]:
  """Pooler, MLM head, the NSP / SOP classifier and the task heads, as the heads ask."""
  out = dense(("pooler", "dense"), pooler_key) if with_pooler else []
  if head in ("mlm", "pretraining"):
    out += mlm
  if head == "pretraining" and pair_key:
    out += dense(("pair_classifier", "dense"), pair_key, backbone=False)
  elif head in TASK_HEADS:
    out += task_head_entries(cfg, head)
  elif head not in (None, "mlm"):
    raise ValueError(f"Hugging Face conversion of head={head!r} is not supported for {cfg.family}")
  return out


def task_architectures(model_type: str, class_prefix: str) -> dict[tuple[str, str | None], str]:
  """(model_type, task head) -> the reference class names, e.g. BertForSequenceClassification."""
  return {(model_type, "classification"): f"{class_prefix}ForSequenceClassification",
          (model_type, "token_classification"): f"{class_prefix}ForTokenClassification",
          (model_type, "qa"): f"{class_prefix}ForQuestionAnswering"}


def key_table(cfg: ModelConfig, head: str | None, with_pooler: bool, legacy: bool = True) -> list[Entry]:
  out = embedding_entries(cfg)
  for i in range(cfg.num_layers):
    out += layer_entries(cfg, ("encoder", f"layer_{i}"), f"encoder.layer.{i}")
  mlm = mlm_entries("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias")
  return out + head_entries(cfg, head, with_pooler, mlm, "cls.seq_relationship")


ARCHITECTURES.update(task_architectures("bert", "Bert"))
