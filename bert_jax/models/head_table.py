"""Task heads as parts of the model, and the one table that names them.

A head is a flax module that `EncoderModel` runs after the encoder. It shares the
model's scope (`nn.share_scope`), so its parts sit at the top of the parameter tree
(`mlm`, `pair_classifier`, `classifier`, `qa_outputs`, `rtd_head`) exactly where
the reference layouts and saved checkpoints have them, and a new head is one class
here plus one row of `HEADS`: no model code changes.

    model = EncoderModel(cfg, head="classification")      # by name, from HEADS
    model = EncoderModel(cfg, head=MyHead(cfg, "float32"))  # or any Head module

Every head receives the same `HeadInputs` and returns a dict of named outputs
(`logits`, `pair_logits`, `start_logits`, ...), which `EncoderOutput` exposes as
attributes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models.config import ModelConfig
from bert_jax.models.heads import (Classifier, ContextPooler, DenseClassifier, MLMHead, ReplacedTokenHead, Transform,
                                   gather_positions, mean_pool)
from bert_jax.models.layers import Dense, Embed, activation


@dataclasses.dataclass(frozen=True)
class HeadInputs:
  """What the encoder hands a head.

  hidden: [b, l, H] the last layer's output (compute dtype).
  pooled: [b, H] the tanh pooler's output, or None when the model has no pooler.
  attention_mask: [b, l] int (1 = token).
  embeddings: the model's `Embeddings` module (tied output projections).
  masked_positions: [b, m] int or None: MLM logits only at these positions.
  decoded: [b, l, H] DeBERTa's enhanced-mask-decoder output, or None.
  """

  hidden: jax.Array
  pooled: jax.Array | None
  attention_mask: jax.Array
  embeddings: Any
  masked_positions: jax.Array | None = None
  decoded: jax.Array | None = None


class Head(nn.Module):
  """Base of every head: subclasses set the class attributes and implement `__call__`.

  name_in_table: the head's name in HEADS (saved in checkpoint folders as "head").
  parts: the top-level parameter groups the head creates (`param_groups` adds config-dependent ones).
  outputs: the names of the arrays `__call__` returns.
  masked_lm: whether the head predicts tokens with the tied MLM decoder (MLM / pretraining).
  """

  config: ModelConfig
  dtype: Any = jnp.float32

  name_in_table: ClassVar[str] = ""
  parts: ClassVar[tuple[str, ...]] = ()
  outputs: ClassVar[tuple[str, ...]] = ()
  masked_lm: ClassVar[bool] = False

  @classmethod
  def param_groups(cls, cfg: ModelConfig) -> tuple[str, ...]:
    """The top-level parameter groups this head creates for `cfg`."""
    return cls.parts

  @classmethod
  def keeps_pooler(cls, cfg: ModelConfig) -> bool:
    """Whether the family's tanh pooler runs with this head (the reference models' convention)."""
    return False

  def decoder_positions(self, length: int, positions: jax.Array | None = None) -> jax.Array | None:
    """[1 | b, l, H] absolute position embeddings for DeBERTa's enhanced mask decoder, or None (no decoder).

    positions [b, l]: each token's position in its own segment (packed rows); default 0 .. l - 1.
    """
    return None

  def __call__(self, inputs: HeadInputs, *, deterministic: bool = True) -> dict[str, jax.Array]:
    raise NotImplementedError


class MaskedLM(Head):
  """Token logits [b, l | m, vocab] from the MLM transform and the tied word embeddings."""

  name_in_table = "mlm"
  parts = ("mlm",)
  outputs = ("logits",)
  masked_lm = True

  @classmethod
  def param_groups(cls, cfg):
    return cls.parts + (("emd_position_embeddings",) if cfg.emd_layers else ())

  def setup(self):
    self.mlm = MLMHead(self.config, self.dtype)
    if self.config.emd_layers:
      self.emd_position_embeddings = Embed(self.config.max_position_embeddings, self.config.hidden_size,
                                           ("position", "embed"), dtype=self.dtype)

  def decoder_positions(self, length, positions=None):
    if not self.config.emd_layers:
      return None
    if length > self.config.max_position_embeddings:
      raise ValueError(f"sequence length {length} exceeds the decoder's position table "
                       f"({self.config.max_position_embeddings})")
    return self.emd_position_embeddings(jnp.arange(length)[None] if positions is None else positions)

  def token_logits(self, inputs: HeadInputs) -> jax.Array:
    tokens = inputs.hidden if inputs.decoded is None else inputs.decoded
    if inputs.masked_positions is not None:
      tokens = gather_positions(tokens, inputs.masked_positions)
    return self.mlm(tokens, inputs.embeddings)

  def __call__(self, inputs, *, deterministic=True):
    return {"logits": self.token_logits(inputs)}


class Pretraining(MaskedLM):
  """MLM logits plus a sentence-pair classifier on the pooled first token (BERT's NSP, ALBERT's SOP)."""

  name_in_table = "pretraining"
  parts = ("mlm", "pair_classifier")
  outputs = ("logits", "pair_logits")

  @classmethod
  def keeps_pooler(cls, cfg):
    return cfg.pooler == "tanh"

  def setup(self):
    super().setup()
    self.pair_classifier = Classifier(2, self.config.dropout_rate, self.dtype, self.config.dropout_impl)

  def __call__(self, inputs, *, deterministic=True):
    return {"logits": self.token_logits(inputs),
            "pair_logits": self.pair_classifier(inputs.pooled, deterministic=deterministic)}


# The task-head layout of each family's reference classes (ModelConfig.classifier_head "" picks it):
#   pooler          the backbone's tanh pooler (or the first token) -> dropout -> classifier (BERT, ALBERT)
#   dense           first token -> classifier.dense -> act -> classifier.out_proj (RoBERTa, XLM-R, ELECTRA, MPNet)
#   context_pooler  pooler.dense -> act on the first token -> classifier (DeBERTa)
#   pre_classifier  first token -> pre_classifier -> ReLU -> classifier (DistilBERT)
#   transform       cls / mean pooling -> head (dense, act, norm) -> classifier; token and span heads
#                   go through `head` too (ModernBERT)
REFERENCE_CLASSIFIER_HEADS = {
    "bert": "pooler", "albert": "pooler", "roberta": "dense", "xlm-roberta": "dense", "electra": "dense",
    "mpnet": "dense", "deberta": "context_pooler", "deberta-v2": "context_pooler", "distilbert": "pre_classifier",
    "modernbert": "transform",
}
# Activation inside the layout, when ModelConfig.classifier_act is "" (ELECTRA's config gives gelu).
DEFAULT_CLASSIFIER_ACTS = {"dense": "tanh", "context_pooler": "gelu", "pre_classifier": "relu"}


def classifier_layout(cfg: ModelConfig) -> str:
  """The task heads' layout of cfg: its classifier_head, or its family's reference one."""
  return cfg.classifier_head or REFERENCE_CLASSIFIER_HEADS.get(cfg.family, "pooler")


def classifier_activation(cfg: ModelConfig) -> str:
  layout = classifier_layout(cfg)
  return cfg.classifier_act or DEFAULT_CLASSIFIER_ACTS.get(layout, "linear")


def _classifier(cfg: ModelConfig, dtype, outputs: int | None = None, dropout: float | None = None) -> Classifier:
  rate = cfg.dropout_rate if dropout is None else dropout
  return Classifier(cfg.num_labels if outputs is None else outputs, rate, dtype, cfg.dropout_impl)


class SequenceClassification(Head):
  """[b, num_labels] logits, in the layout of the family's reference classes (REFERENCE_CLASSIFIER_HEADS)."""

  name_in_table = "classification"
  parts = ("classifier",)
  outputs = ("logits",)
  EXTRA_PARTS = {"context_pooler": ("pooler",), "pre_classifier": ("pre_classifier",), "transform": ("head",)}

  @classmethod
  def param_groups(cls, cfg):
    return cls.EXTRA_PARTS.get(classifier_layout(cfg), ()) + cls.parts

  @classmethod
  def keeps_pooler(cls, cfg):
    return (classifier_layout(cfg) == "pooler" and cfg.pooler == "tanh" and cfg.classifier_pooling == "pooler")

  def setup(self):
    cfg = self.config
    layout = classifier_layout(cfg)
    if layout == "dense":
      self.classifier = DenseClassifier(cfg.num_labels, classifier_activation(cfg), cfg.dropout_rate, self.dtype,
                                        cfg.dropout_impl)
    else:
      self.classifier = _classifier(cfg, self.dtype)
    if layout == "context_pooler":
      self.pooler = ContextPooler(classifier_activation(cfg), cfg.dropout_rate, self.dtype, cfg.dropout_impl)
    elif layout == "pre_classifier":
      self.pre_classifier = Dense((cfg.hidden_size,), ("embed", "embed_out"), dtype=self.dtype)
    elif layout == "transform":
      self.head = Transform(cfg, self.dtype)

  def __call__(self, inputs, *, deterministic=True):
    cfg = self.config
    layout = classifier_layout(cfg)
    if layout == "context_pooler":
      features = self.pooler(inputs.hidden, deterministic=deterministic)
    elif cfg.classifier_pooling == "mean":
      features = mean_pool(inputs.hidden, inputs.attention_mask)
    else:
      features = inputs.pooled if inputs.pooled is not None else inputs.hidden[:, 0]
    if layout == "pre_classifier":
      features = activation(classifier_activation(cfg))(self.pre_classifier(features))
    elif layout == "transform":
      features = self.head(features)
    return {"logits": self.classifier(features, deterministic=deterministic)}


class TokenClassification(Head):
  """[b, l, num_labels] logits at every token (tagging); ModernBERT's layout goes through its `head` first."""

  name_in_table = "token_classification"
  parts = ("classifier",)
  outputs = ("logits",)

  @classmethod
  def param_groups(cls, cfg):
    return (("head",) if classifier_layout(cfg) == "transform" else ()) + cls.parts

  def setup(self):
    self.classifier = _classifier(self.config, self.dtype)
    if classifier_layout(self.config) == "transform":
      self.head = Transform(self.config, self.dtype)

  def __call__(self, inputs, *, deterministic=True):
    hidden = self.head(inputs.hidden) if classifier_layout(self.config) == "transform" else inputs.hidden
    return {"logits": self.classifier(hidden, deterministic=deterministic)}


class SpanExtraction(Head):
  """Start and end logits [b, l] of an answer span (extractive QA); ModernBERT's layout through `head`."""

  name_in_table = "qa"
  parts = ("qa_outputs",)
  outputs = ("start_logits", "end_logits")

  @classmethod
  def param_groups(cls, cfg):
    return (("head",) if classifier_layout(cfg) == "transform" else ()) + cls.parts

  def setup(self):
    self.qa_outputs = _classifier(self.config, self.dtype, outputs=2, dropout=0.0)
    if classifier_layout(self.config) == "transform":
      self.head = Transform(self.config, self.dtype)

  def __call__(self, inputs, *, deterministic=True):
    hidden = self.head(inputs.hidden) if classifier_layout(self.config) == "transform" else inputs.hidden
    span = self.qa_outputs(hidden)
    return {"start_logits": span[..., 0], "end_logits": span[..., 1]}


class ReplacedTokenDetection(Head):
  """ELECTRA's discriminator: a replaced-or-original logit [b, l] per token."""

  name_in_table = "rtd"
  parts = ("rtd_head",)
  outputs = ("logits",)

  def setup(self):
    self.rtd_head = ReplacedTokenHead(self.config, self.dtype)

  def __call__(self, inputs, *, deterministic=True):
    return {"logits": self.rtd_head(inputs.hidden)}


# The one head table: name -> Head class. None is the bare encoder (with the family's pooler).
HEADS: dict[str, type[Head]] = {cls.name_in_table: cls for cls in (
    MaskedLM, Pretraining, SequenceClassification, TokenClassification, SpanExtraction, ReplacedTokenDetection)}

# Every output name some head gives: absent ones read as None on EncoderOutput.
OUTPUT_NAMES = frozenset(name for cls in HEADS.values() for name in cls.outputs)


def head_class(name: str | None) -> type[Head] | None:
  """HEADS[name] (None for the bare encoder); an unknown name raises listing the known ones."""
  if name is None:
    return None
  if name not in HEADS:
    raise ValueError(f"unknown head {name!r}; expected None or one of {sorted(HEADS)}")
  return HEADS[name]


def head_param_groups(name: str | None, cfg: ModelConfig) -> tuple[str, ...]:
  """The top-level parameter groups head `name` creates for `cfg` (() for the bare encoder)."""
  head = head_class(name)
  return () if head is None else head.param_groups(cfg)
