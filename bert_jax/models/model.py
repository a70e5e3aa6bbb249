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

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models import rotary
from bert_jax.models.config import ModelConfig
from bert_jax.models.embeddings import Embeddings, segment_position_ids
from bert_jax.models.encoder import Encoder
from bert_jax.models.head_table import OUTPUT_NAMES, Head, HeadInputs, head_class
from bert_jax.models.heads import Pooler

class EncoderOutput(flax.struct.PyTreeNode):
  """The encoder's outputs and its head's, by name.

  last_hidden_state [b, l, H] float32; pooler_output [b, H] (models with a pooler);
  hidden_states [num_layers + 1, b, l, H] (output_hidden_states=True); head_outputs: the
  head's arrays, also readable as attributes: `out.logits` (MLM [b, l | m, V], classification
  [b, C], tagging [b, l, C], RTD [b, l]), `out.pair_logits` [b, 2] (NSP / SOP),
  `out.start_logits` / `out.end_logits` [b, l] (span QA). An output no head of the table
  gives raises AttributeError; one that this model's head does not give reads as None.
  """

  last_hidden_state: jax.Array
  pooler_output: jax.Array | None = None
  hidden_states: jax.Array | None = None
  head_outputs: dict[str, jax.Array] = flax.struct.field(default_factory=dict)

  def __getattr__(self, name: str):
    outputs = self.__dict__.get("head_outputs")
    if outputs is not None and name in outputs:
      return outputs[name]
    if name in OUTPUT_NAMES:
      return None
    raise AttributeError(f"EncoderOutput has no {name!r}")


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


def unpack_rows(x: jax.Array, unpack: jax.Array) -> jax.Array:
  """x [b, l, H] packed rows -> [m, u, H] examples: x.reshape(b * l, H)[unpack], zero where unpack < 0."""
  flat = x.reshape((-1,) + x.shape[2:])
  rows = jnp.take(flat, jnp.maximum(unpack, 0), axis=0)
  return jnp.where((unpack >= 0)[..., None], rows, jnp.zeros((), rows.dtype))


class EncoderModel(nn.Module):
  """A BERT-family encoder with one optional head: a name of the head table (HEADS) or a Head module."""

  config: ModelConfig
  head: str | Head | None = None
  with_pooler: bool | None = None   # None: what the head keeps (see Head.keeps_pooler)
  deterministic: bool = True        # False enables dropout (needs a "dropout" rng)

  def setup(self):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    self.embeddings = Embeddings(cfg, dtype)
    self.encoder = Encoder(cfg, dtype, self.deterministic)
    if self.uses_pooler:
      self.pooler = Pooler(cfg, dtype)
    if isinstance(self.head, str):
      self.head_module = head_class(self.head)(cfg, dtype)
    else:
      self.head_module = self.head
    if self.head_module is not None:
      nn.share_scope(self, self.head_module)  # the head's parts sit at the top of the tree

  @property
  def head_type(self) -> type[Head] | None:
    return type(self.head) if isinstance(self.head, Head) else head_class(self.head)

  @property
  def head_name(self) -> str | None:
    """The head's name in the head table (what checkpoint folders record)."""
    head_type = self.head_type
    return None if head_type is None else head_type.name_in_table

  @property
  def uses_pooler(self) -> bool:
    if self.with_pooler is not None:
      return self.with_pooler
    head_type = self.head_type
    return self.config.pooler == "tanh" if head_type is None else head_type.keeps_pooler(self.config)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
               token_type_ids: jax.Array | None = None, position_ids: jax.Array | None = None, *,
               segment_ids: jax.Array | None = None, masked_positions: jax.Array | None = None,
               unpack: jax.Array | None = None, output_hidden_states: bool = False) -> EncoderOutput:
    """input_ids [b, l] int; attention_mask [b, l] (1 = token); masked_positions [b, m] limits MLM logits.

    Packed rows: segment_ids [b, l] (1, 2, ... per example, 0 = padding) keep attention within each
    example and restart its positions. unpack [m, u] int (`bert_jax.data.packing`): example i's token t
    is token unpack[i, t] of the flattened [b * l] rows (-1: past its end); the head, the pooler and
    every output then see the examples as padded rows [m, u], exactly as without packing.
    """
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if segment_ids is not None:
      attention_mask = attention_mask * (segment_ids > 0)
      if position_ids is None and self.config.position_ids != "none":
        position_ids = segment_position_ids(segment_ids, self.config.position_ids, self.config.pad_token_id)
    mask = attention_mask_4d(attention_mask, segment_ids, self.config.mask_padded_queries)
    x = self.embeddings(input_ids, token_type_ids, position_ids, attention_mask, deterministic=self.deterministic)
    emd = None
    if self.head_module is not None:  # packed rows: each document's decoder positions start at 0
      emd = self.head_module.decoder_positions(
          input_ids.shape[1], None if segment_ids is None else rotary.segment_positions(segment_ids))
    rotary_positions = None
    if self.config.rotary_base > 0:
      # Packed rows restart their positions per segment (the padding-free layout ModernBERT trains with).
      if position_ids is not None:
        rotary_positions = position_ids
      elif segment_ids is not None:
        rotary_positions = rotary.segment_positions(segment_ids)
      else:
        rotary_positions = jnp.arange(input_ids.shape[1], dtype=jnp.int32)[None]
    x, states, decoded = self.encoder(x, mask, attention_mask, output_hidden_states=output_hidden_states,
                                      emd_positions=emd, positions=rotary_positions, segment_ids=segment_ids)
    if unpack is not None:
      if masked_positions is not None or emd is not None:
        raise ValueError("unpack (packed examples) does not combine with masked_positions or the enhanced mask "
                         "decoder: those are pretraining outputs of the rows themselves")
      x, attention_mask = unpack_rows(x, unpack), (unpack >= 0).astype(attention_mask.dtype)
      if states is not None:
        states = jax.vmap(lambda s: unpack_rows(s, unpack))(states)
    pooled = self.pooler(x) if self.uses_pooler else None
    head_outputs = {}
    if self.head_module is not None:
      inputs = HeadInputs(x, pooled, attention_mask, self.embeddings, masked_positions, decoded)
      head_outputs = self.head_module(inputs, deterministic=self.deterministic)
    return EncoderOutput(last_hidden_state=x.astype(jnp.float32),
                         pooler_output=None if pooled is None else pooled.astype(jnp.float32),
                         hidden_states=None if states is None else states.astype(jnp.float32),
                         head_outputs=head_outputs)
