"""`EncoderModel`: embeddings -> encoder -> pooler -> optional head, for every family.

    model = EncoderModel(config, head="mlm")
    out = model.apply({"params": params}, input_ids, attention_mask=mask, token_type_ids=types)
    out.last_hidden_state  # [batch, length, hidden] float32
    out.logits             # [batch, length, vocab] (or [batch, masked, vocab] with masked_positions)

Attention maps (MiniLM-style distillation) come out of the "intermediates" collection, at
no cost unless asked for:

    out, state = model.apply({"params": params}, input_ids, mask, mutable=["intermediates"])
    probs = collect_attention(state["intermediates"], model.config)  # [layers, batch, heads, length, length]
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models.config import ModelConfig
from bert_jax.models.embeddings import Embeddings
from bert_jax.models.encoder import Encoder
from bert_jax.models.heads import Classifier, MLMHead, Pooler, ReplacedTokenHead, gather_positions, mean_pool
from bert_jax.models.layers import Embed

HEADS = (None, "mlm", "pretraining", "classification", "token_classification", "qa", "rtd")


@flax.struct.dataclass
class EncoderOutput:
  last_hidden_state: jax.Array                 # [b, l, H] float32
  pooler_output: jax.Array | None = None       # [b, H]
  hidden_states: jax.Array | None = None       # [num_layers + 1, b, l, H]
  logits: jax.Array | None = None              # mlm [b, l|m, V]; classification [b, C]; tagging [b, l, C];
                                               # rtd [b, l] (replaced-token logits)
  pair_logits: jax.Array | None = None         # NSP / SOP [b, 2]
  start_logits: jax.Array | None = None        # span QA [b, l]
  end_logits: jax.Array | None = None          # span QA [b, l]


def collect_attention(intermediates, cfg: ModelConfig, name: str = "attention_probs") -> jax.Array:
  """The sown attention maps of every applied encoder layer, in the order they ran.

  intermediates: the "intermediates" collection of `model.apply(..., mutable=["intermediates"])`.
  name: "attention_probs" -> [layers, b, heads, l, l] float32 (post-mask softmax, before dropout;
  talking heads: after the mixing), or "attention_values" -> [layers, b, l, heads, head_dim].
  Scanned layers arrive stacked; shared ALBERT blocks hold one entry per call, replayed here in
  the encoder's schedule (num_layers * inner_group_num maps, like hidden_states). DeBERTa's
  enhanced mask decoder re-runs the last layer: only the encoder's own pass is returned.
  """
  encoder = intermediates["encoder"]
  leaf = lambda module: module["attention"]["self"][name]
  if cfg.share_layers == "all":
    calls = {key: list(leaf(value)) for key, value in encoder.items() if key.startswith("group_")}
    maps = []
    for i in range(cfg.num_layers):
      group = int(i / (cfg.num_layers / cfg.num_hidden_groups))  # the encoder's float division
      maps += [calls[f"group_{group}_layer_{k}"].pop(0) for k in range(cfg.inner_group_num)]
    return jnp.stack(maps)
  if "layers" in encoder:  # nn.scan: one entry, stacked over layers
    return leaf(encoder["layers"])[0]
  if cfg.share_layers == "attention":
    return jnp.stack(encoder["shared_attention"]["self"][name][:cfg.num_layers])
  return jnp.stack([leaf(encoder[f"layer_{i}"])[0] for i in range(cfg.num_layers)])


def attention_mask_4d(attention_mask: jax.Array, segment_ids: jax.Array | None = None,
                      mask_queries: bool = False) -> jax.Array:
  """Boolean [b, 1, 1 | l, l]: keys a query may attend to.

  With segment_ids [b, l] (packed rows, 0 = padding) a token sees only its own
  segment; mask_queries also blanks the rows of padded queries (DeBERTa's
  convention, which only changes the outputs at padded positions).
  """
  keys = attention_mask.astype(bool)
  if segment_ids is None and not mask_queries:
    return keys[:, None, None, :]
  pairs = keys[:, None, :] & (keys[:, :, None] if mask_queries else True)
  if segment_ids is not None:
    pairs = pairs & (segment_ids[:, :, None] == segment_ids[:, None, :])
  return pairs[:, None]


class EncoderModel(nn.Module):
  """A BERT-family encoder with one optional head (see HEADS)."""

  config: ModelConfig
  head: str | None = None
  with_pooler: bool | None = None   # None: the family's default (config.pooler == "tanh")
  deterministic: bool = True        # False enables dropout (needs a "dropout" rng)

  def setup(self):
    cfg = self.config
    if self.head not in HEADS:
      raise ValueError(f"unknown head {self.head!r}; expected one of {HEADS}")
    dtype = jnp.dtype(cfg.dtype)
    self.embeddings = Embeddings(cfg, dtype)
    self.encoder = Encoder(cfg, dtype, self.deterministic)
    if self.uses_pooler:
      self.pooler = Pooler(cfg, dtype)
    if self.head in ("mlm", "pretraining"):
      self.mlm = MLMHead(cfg, dtype)
      if cfg.emd_layers:
        self.emd_position_embeddings = Embed(cfg.max_position_embeddings, cfg.hidden_size, ("position", "embed"),
                                             dtype=dtype)
    if self.head == "pretraining":
      self.pair_classifier = Classifier(2, cfg.dropout_rate, dtype, cfg.dropout_impl)
    elif self.head in ("classification", "token_classification"):
      self.classifier = Classifier(cfg.num_labels, cfg.dropout_rate, dtype, cfg.dropout_impl)
    elif self.head == "qa":
      self.qa_outputs = Classifier(2, 0.0, dtype)
    elif self.head == "rtd":
      self.rtd_head = ReplacedTokenHead(cfg, dtype)

  @property
  def uses_pooler(self) -> bool:
    if self.with_pooler is not None:
      return self.with_pooler
    if self.head == "classification" and self.config.classifier_pooling != "pooler":
      return False
    return self.config.pooler == "tanh" and self.head in (None, "pretraining", "classification")

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
               token_type_ids: jax.Array | None = None, position_ids: jax.Array | None = None, *,
               segment_ids: jax.Array | None = None, masked_positions: jax.Array | None = None,
               output_hidden_states: bool = False) -> EncoderOutput:
    """input_ids [b, l] int; attention_mask [b, l] (1 = token); masked_positions [b, m] limits MLM logits."""
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if segment_ids is not None:
      attention_mask = attention_mask * (segment_ids > 0)
    mask = attention_mask_4d(attention_mask, segment_ids, self.config.mask_padded_queries)
    x = self.embeddings(input_ids, token_type_ids, position_ids, attention_mask, deterministic=self.deterministic)
    emd = None
    if self.head in ("mlm", "pretraining") and self.config.emd_layers:
      length = input_ids.shape[1]
      if length > self.config.max_position_embeddings:
        raise ValueError(f"sequence length {length} exceeds the decoder's position table "
                         f"({self.config.max_position_embeddings})")
      emd = self.emd_position_embeddings(jnp.arange(length)[None])
    x, states, decoded = self.encoder(x, mask, attention_mask, output_hidden_states=output_hidden_states,
                                      emd_positions=emd)
    out: dict[str, Any] = {"last_hidden_state": x.astype(jnp.float32)}
    if states is not None:
      out["hidden_states"] = states.astype(jnp.float32)
    pooled = self.pooler(x) if self.uses_pooler else None
    if pooled is not None:
      out["pooler_output"] = pooled.astype(jnp.float32)
    if self.head in ("mlm", "pretraining"):
      mlm_input = x if decoded is None else decoded
      tokens = mlm_input if masked_positions is None else gather_positions(mlm_input, masked_positions)
      out["logits"] = self.mlm(tokens, self.embeddings)
    if self.head == "pretraining":
      out["pair_logits"] = self.pair_classifier(pooled, deterministic=self.deterministic)
    elif self.head == "classification":
      if self.config.classifier_pooling == "mean":
        features = mean_pool(x, attention_mask)
      else:
        features = pooled if pooled is not None else x[:, 0]
      out["logits"] = self.classifier(features, deterministic=self.deterministic)
    elif self.head == "token_classification":
      out["logits"] = self.classifier(x, deterministic=self.deterministic)
    elif self.head == "rtd":
      out["logits"] = self.rtd_head(x)
    elif self.head == "qa":
      span = self.qa_outputs(x)
      out["start_logits"], out["end_logits"] = span[..., 0], span[..., 1]
    return EncoderOutput(**out)
