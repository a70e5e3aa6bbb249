"""The model's own configuration: a frozen dataclass built at the boundary.

Layers read only this object (never the experiment config). Every field has a
one-line meaning; the family builders in `bert.py`, `roberta.py`, `albert.py`
and `deberta.py` fill them in, and `bert_jax.convert.hf_config` maps Hugging
Face `config.json` files onto them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from bert_jax.models import remat

# The layouts of the task heads (see models/head_table.py); "" resolves to the family's own.
CLASSIFIER_HEADS = ("", "pooler", "dense", "context_pooler", "pre_classifier", "transform")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python", "gelu_accurate", "quick_gelu",
               "relu", "relu6", "leaky_relu", "silu", "swish", "mish", "tanh", "sigmoid", "linear")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of one bidirectional encoder (BERT, RoBERTa, ALBERT, DeBERTa, ModernBERT, MPNet)."""

  family: str = "bert"                      # bert | roberta | albert | deberta | deberta-v2 | modernbert | mpnet (HF model_type)
  vocab_size: int = 30522                   # rows of the word-embedding table
  hidden_size: int = 768                    # width of the residual stream H
  num_layers: int = 12                      # transformer layers applied
  num_heads: int = 12                       # attention heads
  head_dim: int | None = None               # per-head width; None = hidden_size // num_heads
  intermediate_size: int = 3072             # feed-forward width
  hidden_act: str = "gelu"                  # activation of the feed-forward block (HF names)
  max_position_embeddings: int = 512        # rows of the absolute position table
  type_vocab_size: int = 2                  # token types (segments); 0 = no table
  layer_norm_eps: float = 1e-12             # LayerNorm epsilon
  pad_token_id: int = 0                     # padding id (RoBERTa positions derive from it)
  dropout_rate: float = 0.1                 # hidden dropout
  attention_dropout_rate: float = 0.1       # dropout on attention probabilities
  dropout_impl: Literal["hash", "threefry"] = "hash"  # keep-mask from a keyed position hash, or flax's threefry draw

  # Embeddings.
  embedding_size: int | None = None         # E < H factorises embeddings (ALBERT; DeBERTa embed_proj)
  position_ids: Literal["absolute", "roberta", "none"] = "absolute"  # how position ids are made
  embedding_projection: Literal["norm_then_project", "project_then_norm"] = "norm_then_project"  # ALBERT vs DeBERTa order
  mask_embeddings: bool = False             # DeBERTa multiplies embeddings by the padding mask
  mask_padded_queries: bool = False         # DeBERTa masks query rows too (padded rows then attend uniformly)

  # Layer structure.
  norm_position: Literal["post", "pre"] = "post"  # post: LN(x + f(x)) (BERT); pre: x + f(LN(x)) with a final
                                            # norm, the first layer's attention norm being the embeddings' (ModernBERT)
  norm_bias: bool = True                    # LayerNorm biases (ModernBERT: off)
  attention_bias: bool = True               # biases of the q / k / v and output projections (ModernBERT: off)
  mlp_bias: bool = True                     # biases of the feed-forward projections (ModernBERT: off)
  mlp_type: Literal["standard", "glu"] = "standard"  # glu: wo(act(x Wi_in) * (x Wi_gate)), Wi twice as wide (GeGLU)

  # Rotary positions and local attention (ModernBERT).
  rotary_base: float = 0.0                  # > 0: rotary q / k on global layers with this base (no position table)
  local_rotary_base: float = 0.0            # rotary base of the local layers (0: rotary_base)
  local_attention: int = 0                  # > 0: local layers attend within |i - j| <= local_attention // 2
  global_attn_every_n_layers: int = 1       # layer i is global when i % n == 0, local otherwise

  # Layer sharing (ALBERT).
  share_layers: Literal["none", "all", "attention", "ffn"] = "none"  # cross-layer parameter sharing
  num_hidden_groups: int = 1                # ALBERT groups of shared layers (share_layers == "all")
  inner_group_num: int = 1                  # layers inside one ALBERT group

  # Attention.
  attention_type: Literal["standard", "disentangled"] = "standard"  # BERT vs DeBERTa attention class
  attention_key_bias: bool = True           # DeBERTa v1 has no key bias
  attention_impl: Literal["xla", "cudnn", "splash"] = "xla"  # einsum+softmax, jax.nn.dot_product_attention(cudnn)
                                            # on GPU, or the Pallas splash kernel on TPU (models/splash.py)

  # DeBERTa disentangled attention.
  relative_attention: bool = True           # add the c2p / p2c terms (the scale counts pos_att_type regardless)
  pos_att_type: tuple[str, ...] = ()        # subset of ("c2p", "p2c")
  max_relative_positions: int = -1          # < 1 means max_position_embeddings
  position_buckets: int = -1                # > 0: log-bucketed relative positions (v2/v3)
  share_att_key: bool = False               # project relative embeddings with the content q/k projections
  pos_key_bias: bool = True                 # bias on the separate positional key projection (v1: False)
  norm_rel_embeddings: bool = False         # LayerNorm on the relative embedding table (norm_rel_ebd)
  talking_head: bool = False                # DeBERTa v1 talking-heads projections
  conv_kernel_size: int = 0                 # > 0: DeBERTa-v2 convolution after the first layer
  conv_groups: int = 1                      # groups of that convolution
  conv_act: str = "tanh"                    # activation of that convolution
  emd_layers: int = 0                       # DeBERTa enhanced mask decoder: re-apply the last layer n times
                                            # with absolute positions in the query (MLM heads only; 0 = off)

  # Relative position bias (MPNet): one table [rows, heads] shared by every layer, T5's bidirectional
  # buckets of key minus query position, added to every layer's scaled attention scores.
  relative_attention_num_buckets: int = 0   # > 0: rows of that table (0 = no bias)
  relative_attention_bucketing: int = 32    # buckets the distances fall into (MPNet's reference: always 32, whatever
                                            # the table's rows; rows past them stay unused)
  relative_attention_max_distance: int = 128  # distances from here on share the last bucket of their direction

  # Heads.
  pooler: Literal["tanh", "none"] = "tanh"  # BERT/RoBERTa/ALBERT pooler on the first token
  mlm_act: str | None = None                # MLM transform activation; None = hidden_act
  mlm_transform_size: int | None = None     # MLM transform width; None = embedding_size or hidden_size
  mlm_dense_bias: bool = True               # bias of the MLM transform's dense layer (ModernBERT: classifier_bias)
  mlm_decoder_bias: bool = True             # the tied decoder's output bias (ModernBERT: decoder_bias)
  num_labels: int = 2                       # classes of the classification / tagging heads
  classifier_pooling: str = "pooler"        # sequence classification input: pooler (the tanh pooler where the
                                            # model has one, else the first token, as the reference heads) |
                                            # cls (first token, no pooler) | mean (mask-aware mean of tokens)
  classifier_head: str = ""                 # the task heads' layout: "" = the family's reference one, or pooler |
                                            # dense | context_pooler | pre_classifier | transform (head_table.py)
  classifier_act: str = ""                  # activation inside dense / context_pooler heads ("" = the layout's)
  label_names: tuple[str, ...] = ()         # the classes' names, in id order (config.json id2label)
  problem_type: str = ""                    # single_label_classification | multi_label_classification | regression

  # Compute.
  dtype: str = "float32"                    # compute dtype; params stay float32
  scan_layers: bool = False                 # nn.scan over layers (one compiled body)
  remat_policy: str = "none"                # see bert_jax.models.remat: none | full | dots | ...
  attention_mask_value: float | None = None  # None = finfo(float32).min (the reference's value)

  def __post_init__(self):
    if self.hidden_size % self.num_heads and self.head_dim is None:
      raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
    for name, act in (("hidden_act", self.hidden_act), ("conv_act", self.conv_act), ("mlm_act", self.mlm_act)):
      if act is not None and act not in ACTIVATIONS:
        raise ValueError(f"model.{name}={act!r}: expected one of {ACTIVATIONS}")
    for t in self.pos_att_type:
      if t not in ("c2p", "p2c"):
        raise ValueError(f"model.pos_att_type has {t!r}: expected 'c2p' and/or 'p2c'")
    if self.share_layers != "all" and (self.num_hidden_groups != 1 or self.inner_group_num != 1):
      raise ValueError("num_hidden_groups / inner_group_num need share_layers='all'")
    if self.num_hidden_groups < 1 or self.num_hidden_groups > self.num_layers:
      raise ValueError(f"num_hidden_groups {self.num_hidden_groups} must be in [1, num_layers={self.num_layers}]")
    if self.emd_layers and (self.scan_layers or self.position_ids != "none" or self.share_layers != "none"):
      raise ValueError("emd_layers needs scan_layers=False, position_ids='none' (the decoder adds the absolute "
                       "positions the encoder never saw) and share_layers='none'")
    if self.classifier_head not in CLASSIFIER_HEADS:
      raise ValueError(f"model.classifier_head={self.classifier_head!r}: expected one of {CLASSIFIER_HEADS}")
    if self.classifier_act and self.classifier_act not in ACTIVATIONS:
      raise ValueError(f"model.classifier_act={self.classifier_act!r}: expected one of {ACTIVATIONS}")
    if self.label_names and len(self.label_names) != self.num_labels:
      raise ValueError(f"model.label_names has {len(self.label_names)} names for num_labels={self.num_labels}")
    if self.classifier_pooling not in ("pooler", "cls", "mean"):
      raise ValueError(f"model.classifier_pooling={self.classifier_pooling!r}: expected pooler, cls or mean")
    if self.norm_position == "pre" and (self.share_layers != "none" or self.attention_type != "standard"
                                        or self.emd_layers or self.conv_kernel_size):
      raise ValueError("norm_position='pre' supports standard attention without layer sharing, emd_layers or "
                       "conv_kernel_size")
    if self.norm_position == "pre" and self.scan_layers:
      raise ValueError("model.scan_layers is not supported with norm_position='pre' (the first layer has no "
                       "attention norm, so the layers differ); set model.scan_layers=False")
    if self.local_attention < 0 or self.global_attn_every_n_layers < 1:
      raise ValueError(f"model.local_attention={self.local_attention} must be >= 0 and "
                       f"model.global_attn_every_n_layers={self.global_attn_every_n_layers} >= 1")
    if self.rotary_base < 0 or self.local_rotary_base < 0:
      raise ValueError("model.rotary_base and model.local_rotary_base must be >= 0")
    if self.rotary_base and self.attention_type != "standard":
      raise ValueError(f"model.rotary_base={self.rotary_base} needs attention_type='standard'; the "
                       f"{self.attention_type} attention of {self.family} has its own relative positions")
    if self.local_rotary_base and not self.rotary_base:
      raise ValueError(f"model.local_rotary_base={self.local_rotary_base} rotates the sliding-window layers of a "
                       "rotary model: set model.rotary_base too (or local_rotary_base=0)")
    if self.rotary_base and self.dim_per_head % 2:
      raise ValueError(f"rotary positions need an even head width; got {self.dim_per_head}")
    if self.relative_attention_num_buckets:
      self._check_relative_bias()
    if self.scan_layers and self.local_attention > 0 and self.global_attn_every_n_layers > 1:
      raise ValueError("model.scan_layers needs identical layers; local_attention > 0 makes every "
                       f"{self.global_attn_every_n_layers}th layer global and the rest local")
    if self.attention_impl not in ("xla", "cudnn", "splash"):
      raise ValueError(f"model.attention_impl={self.attention_impl!r}: expected xla, cudnn or splash")
    if self.attention_impl == "splash":
      self._check_splash()
    if self.remat_policy not in remat.NAMES:
      raise ValueError(f"model.remat_policy={self.remat_policy!r}: expected one of {remat.NAMES}")

  def _check_relative_bias(self):
    rows, buckets, distance = (self.relative_attention_num_buckets, self.relative_attention_bucketing,
                               self.relative_attention_max_distance)
    if rows < 0 or buckets < 4 or distance <= buckets // 4:
      raise ValueError(f"model.relative_attention_num_buckets={rows} must be >= 0, relative_attention_bucketing="
                       f"{buckets} >= 4 and relative_attention_max_distance={distance} > bucketing // 4 (the exact "
                       "buckets of one direction)")
    if rows < buckets:
      raise ValueError(f"model.relative_attention_num_buckets={rows} rows cannot hold the relative_attention_bucketing="
                       f"{buckets} buckets the distances fall into")
    if self.attention_type != "standard":
      raise ValueError("model.relative_attention_num_buckets > 0 needs attention_type='standard'")

  def _check_splash(self):
    """What the splash kernel cannot take (models/splash.py), named rather than silently run on XLA."""
    if self.attention_type != "standard" or self.relative_attention_num_buckets:
      raise ValueError("model.attention_impl='splash' takes no additive score bias: DeBERTa's c2p / p2c terms and "
                       "MPNet's relative bias need attention_impl='xla' (or 'cudnn')")
    if self.attention_dropout_rate > 0:
      raise ValueError("model.attention_impl='splash' has no dropout on the attention probabilities; set "
                       "model.attention_dropout_rate=0")

  # Derived sizes -------------------------------------------------------------
  @property
  def dim_per_head(self) -> int:
    return self.head_dim or self.hidden_size // self.num_heads

  @property
  def embed_dim(self) -> int:
    """Width E of the embedding tables."""
    return self.embedding_size or self.hidden_size

  @property
  def factorized(self) -> bool:
    """Whether embeddings go through an E -> H projection (ALBERT always has one, even with E == H)."""
    if self.embedding_size is None:
      return False
    return self.embedding_projection == "norm_then_project" or self.embed_dim != self.hidden_size

  @property
  def relative_span(self) -> int:
    """Half the number of rows of the relative-embedding table."""
    if self.position_buckets > 0:
      return self.position_buckets
    return self.max_relative_positions if self.max_relative_positions >= 1 else self.max_position_embeddings

  def is_local_layer(self, index: int) -> bool:
    """Whether layer `index` attends within the sliding window (ModernBERT's local layers)."""
    return self.local_attention > 0 and index % self.global_attn_every_n_layers != 0

  @property
  def max_length(self) -> int:
    """Longest sequence the model takes: its position table, or max_position_embeddings with rotary (no limit: -1)."""
    if self.rotary_base > 0:
      return self.max_position_embeddings
    if self.position_ids == "absolute":
      return self.max_position_embeddings
    if self.position_ids == "roberta":
      return self.max_position_embeddings - self.pad_token_id - 1
    return -1

  def replace(self, **changes: Any) -> ModelConfig:
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
    """Builds from a mapping, naming any key that is not a field."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
      raise KeyError(f"unknown model config keys {unknown}; expected a subset of {sorted(fields)}")
    values = dict(values)
    for key in ("pos_att_type", "label_names"):
      if key in values:
        values[key] = tuple(values[key])
    return cls(**values)

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["pos_att_type"] = list(self.pos_att_type)
    out["label_names"] = list(self.label_names)
    return out

