"""Input embeddings: words (+ positions) (+ token types), LayerNorm, optional E -> H projection."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models import rotary
from bert_jax.models.config import ModelConfig
from bert_jax.models.dropout import Dropout
from bert_jax.models.layers import Dense, Embed, LayerNorm, constrain


def roberta_position_ids(input_ids: jax.Array, pad_token_id: int) -> jax.Array:
  """fairseq positions: pad tokens get pad_token_id, the others pad_token_id + 1, +2, ...

  input_ids [b, l] -> [b, l]. Derived from the ids (not the attention mask), as the reference does.
  """
  not_pad = (input_ids != pad_token_id).astype(jnp.int32)
  return jnp.cumsum(not_pad, axis=1) * not_pad + pad_token_id


def segment_position_ids(segment_ids: jax.Array, kind: str, pad_token_id: int) -> jax.Array:
  """Position ids of packed rows [b, l]: each segment numbered as if it were a row of its own.

  kind "absolute": 0, 1, ... from each segment's first token; "roberta": pad_token_id + 1, + 2, ...
  (padding, segment 0, gets pad_token_id). So a packed example embeds exactly as it does alone.
  """
  local = rotary.segment_positions(segment_ids)
  if kind == "roberta":
    return jnp.where(segment_ids > 0, local + pad_token_id + 1, pad_token_id)
  return local


class Embeddings(nn.Module):
  """ids [b, l] -> hidden [b, l, H]."""

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    cfg = self.config
    e = cfg.embed_dim
    self.word_embeddings = Embed(cfg.vocab_size, e, ("vocab", "embed"), dtype=self.dtype)
    if cfg.position_ids != "none":
      self.position_embeddings = Embed(cfg.max_position_embeddings, e, ("position", "embed"), dtype=self.dtype)
    if cfg.type_vocab_size > 0:
      self.token_type_embeddings = Embed(cfg.type_vocab_size, e, ("token_type", "embed"), dtype=self.dtype)
    project_first = cfg.embedding_projection == "project_then_norm"
    if cfg.factorized:
      # ALBERT projects after the norm, with a bias; DeBERTa before it, without.
      self.projection = Dense((cfg.hidden_size,), ("embed_factor", "embed"), use_bias=not project_first,
                              dtype=self.dtype)
    self.norm = LayerNorm(cfg.layer_norm_eps, self.dtype, use_bias=cfg.norm_bias)
    self.dropout = Dropout(cfg.dropout_rate, cfg.dropout_impl)

  def __call__(self, input_ids, token_type_ids=None, position_ids=None, input_mask=None, *,
               deterministic: bool = True) -> jax.Array:
    cfg = self.config
    length = input_ids.shape[1]
    if cfg.max_length >= 0 and length > cfg.max_length:
      raise ValueError(
          f"sequence length {length} is longer than the position table allows ({cfg.max_length} tokens: "
          f"max_position_embeddings={cfg.max_position_embeddings}, position_ids={cfg.position_ids!r}); "
          "truncate or chunk the input")
    x = self.word_embeddings(input_ids)
    if cfg.position_ids != "none":
      if position_ids is None:
        if cfg.position_ids == "roberta":
          position_ids = roberta_position_ids(input_ids, cfg.pad_token_id)
        else:
          position_ids = jnp.arange(length, dtype=jnp.int32)[None, :]
      x = x + self.position_embeddings(position_ids)
    if cfg.type_vocab_size > 0:
      if token_type_ids is None:
        token_type_ids = jnp.zeros_like(input_ids)
      x = x + self.token_type_embeddings(token_type_ids)
    project_after_norm = cfg.factorized and cfg.embedding_projection == "norm_then_project"
    if cfg.factorized and not project_after_norm:
      x = self.projection(x)
    x = self.norm(x)
    if cfg.mask_embeddings and input_mask is not None:
      x = x * input_mask[..., None].astype(x.dtype)
    x = self.dropout(x, deterministic=deterministic)
    if project_after_norm:
      x = self.projection(x)
    return constrain(x, ("batch", "length", "act_embed"))

  def attend(self, x: jax.Array) -> jax.Array:
    """Tied output projection: x [..., E] -> [..., vocab]."""
    return self.word_embeddings.attend(x)
