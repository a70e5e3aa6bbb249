"""Replaced-token detection (ELECTRA; DeBERTa-v3 with gradient-disentangled embedding sharing).

A small generator does MLM on the masked batch; its samples replace the masked
tokens; the discriminator (the model we keep) labels every token as original or
replaced. Loss = L_mlm(generator) + discriminator_weight * L_rtd.

Embedding sharing (config.rtd.embedding_sharing):
  shared: the discriminator uses the generator's word embeddings (ELECTRA); both losses train them.
  gdes:   the discriminator uses stop_gradient(E_generator) + E_delta (DeBERTa-v3): the
          generator's MLM alone trains E_generator, the RTD loss only E_delta (initialised at 0).
  none:   separate tables.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from bert_jax.models.config import ModelConfig
from bert_jax.models.model import EncoderModel
from bert_jax.tasks.base import Objective, Term, example_weights, forward
from bert_jax.tasks.pretrain.mlm import mlm_sums

SHARING = ("gdes", "shared", "none")


def generator_config(cfg: ModelConfig, width_scale: float, depth_scale: float) -> ModelConfig:
  """A narrower / shallower copy whose embedding table has the discriminator's width E."""
  heads = max(1, round(cfg.num_heads * width_scale))
  hidden = heads * cfg.dim_per_head
  return cfg.replace(hidden_size=hidden, num_heads=heads, head_dim=None,
                     intermediate_size=max(1, round(cfg.intermediate_size * width_scale)),
                     num_layers=max(1, round(cfg.num_layers * depth_scale)), embedding_size=cfg.embed_dim,
                     mlm_transform_size=None, emd_layers=0)


def token_weights(batch) -> jax.Array:
  """[B, L] float32: real tokens of real rows."""
  return batch["attention_mask"].astype(jnp.float32) * example_weights(batch)[:, None]


def replace_at(ids: jax.Array, positions: jax.Array, values: jax.Array, weights: jax.Array) -> jax.Array:
  """ids [B, L] with ids[b, positions[b, m]] = values[b, m] where weights[b, m] > 0."""
  def one(row, pos, val, w):
    # Padding slots (weight 0) point past the end and are dropped, so they never overwrite a real slot.
    return row.at[jnp.where(w > 0, pos, row.shape[0])].set(val, mode="drop")
  return jax.vmap(one)(ids, positions, values, weights)


class RTDObjective(Objective):

  @classmethod
  def from_config(cls, cfg, config):
    return cls(cfg, config.rtd)

  def __init__(self, cfg: ModelConfig, rtd: ml_collections.ConfigDict):
    if rtd.embedding_sharing not in SHARING:
      raise ValueError(f"config.rtd.embedding_sharing={rtd.embedding_sharing!r}: expected one of {SHARING}")
    self.sharing = rtd.embedding_sharing
    gen_cfg = generator_config(cfg, float(rtd.generator_scale), float(rtd.get("generator_depth_scale", 1.0)))
    self.generator = {d: EncoderModel(gen_cfg, head="mlm", deterministic=d) for d in (True, False)}
    self.discriminator = {d: EncoderModel(cfg, head="rtd", deterministic=d) for d in (True, False)}
    self.terms = (Term("mlm_loss", "mlm_count"), Term("rtd_loss", "rtd_count", float(rtd.discriminator_weight)))

  def sum_keys(self):
    return ["mlm_loss", "mlm_correct", "mlm_count", "rtd_loss", "rtd_correct", "rtd_count", "replaced"]

  def totals(self, batch):
    return {"mlm_count": jnp.sum(batch["masked_weights"].astype(jnp.float32)),
            "rtd_count": jnp.sum(token_weights(batch))}

  def init(self, rngs, input_ids):
    params = {"generator": self.generator[False].init(rngs, input_ids)["params"],
              "discriminator": self.discriminator[False].init(rngs, input_ids)["params"]}
    if self.sharing != "none":
      words = params["discriminator"]["embeddings"].pop("word_embeddings")
      if self.sharing == "gdes":
        params["embedding_delta"] = jax.tree.map(jnp.zeros_like, words)
    return params

  def export(self, params):
    """WORKDIR/model: the discriminator (the model kept), its embeddings resolved; WORKDIR/generator:
    the generator with its MLM head (as ELECTRA releases both)."""
    return {"model": (self.discriminator[True], self.discriminator_params(params)),
            "generator": (self.generator[True], params["generator"])}

  def discriminator_params(self, params):
    if self.sharing == "none":
      return params["discriminator"]
    words = params["generator"]["embeddings"]["word_embeddings"]["embedding"]
    if self.sharing == "gdes":
      words = jax.lax.stop_gradient(words) + params["embedding_delta"]["embedding"]
    embeddings = {**params["discriminator"]["embeddings"], "word_embeddings": {"embedding": words}}
    return {**params["discriminator"], "embeddings": embeddings}

  def sums(self, params, batch, rng):
    train = rng is not None
    gen_rng, sample_rng, disc_rng = jax.random.split(rng, 3) if train else (None, jax.random.key(0), None)
    gen_out = forward(self.generator[not train], params["generator"], batch, gen_rng,
                      masked_positions=batch["masked_positions"])
    sums = mlm_sums(gen_out.logits, batch)
    sampled = jax.lax.stop_gradient(jax.random.categorical(sample_rng, gen_out.logits.astype(jnp.float32)))
    weights = batch["masked_weights"]
    original = replace_at(batch["input_ids"], batch["masked_positions"], batch["masked_ids"], weights)
    corrupted = replace_at(batch["input_ids"], batch["masked_positions"], sampled, weights)
    disc_batch = {**batch, "input_ids": corrupted}
    logits = forward(self.discriminator[not train], self.discriminator_params(params), disc_batch, disc_rng).logits
    labels = (corrupted != original).astype(jnp.float32)
    mask = token_weights(batch)
    loss = optax.sigmoid_binary_cross_entropy(logits, labels)
    sums["rtd_loss"] = jnp.sum(loss * mask)
    sums["rtd_correct"] = jnp.sum(((logits > 0).astype(jnp.float32) == labels) * mask)
    sums["rtd_count"] = jnp.sum(mask)
    sums["replaced"] = jnp.sum(labels * mask)
    return sums

  def summarize(self, sums):
    out = super().summarize(sums)
    if "replaced" in sums:
      out["replaced_fraction"] = sums["replaced"] / jnp.maximum(sums["rtd_count"], 1.0)
    return out
