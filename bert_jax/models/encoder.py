"""The transformer stack: post-LN layers, cross-layer sharing, scan/remat, DeBERTa's conv.

A layer is two blocks, each `LayerNorm(x + dropout(f(x)))`:
  AttentionBlock: f = output projection of self-attention (standard or disentangled)
  FeedForward:    f = wo(act(wi(x)))
ALBERT's sharing modes reuse one block instance across layers, so shared
parameters exist once in the tree.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from bert_jax.models import remat
from bert_jax.models.attention import SelfAttention
from bert_jax.models.config import ModelConfig
from bert_jax.models.dropout import Dropout
from bert_jax.models.layers import Dense, Embed, LayerNorm, activation, constrain
from bert_jax.models.relative import DisentangledSelfAttention

ATTENTION_CLASSES = {"standard": SelfAttention, "disentangled": DisentangledSelfAttention}

class AttentionBlock(nn.Module):
  """x [b, l, H] -> LayerNorm(x + dropout(W_o . attention(x)))."""

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, mask, relative=None, query=None):
    cfg = self.config
    context = ATTENTION_CLASSES[cfg.attention_type](cfg, self.dtype, name="self")(
        x, mask, deterministic=self.deterministic, relative=relative, query=query)
    out = Dense((cfg.hidden_size,), ("heads", "kv", "embed"), in_dims=2, dtype=self.dtype, name="output")(context)
    out = checkpoint_name(out, "attention_out")
    out = Dropout(cfg.dropout_rate, cfg.dropout_impl)(out, deterministic=self.deterministic)
    return LayerNorm(cfg.layer_norm_eps, self.dtype, name="norm")((x if query is None else query) + out)


class FeedForward(nn.Module):
  """x [b, l, H] -> LayerNorm(x + dropout(wo(act(wi(x)))))."""

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32
  deterministic: bool = True

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    h = Dense((cfg.intermediate_size,), ("embed", "mlp"), dtype=self.dtype, name="wi")(x)
    h = constrain(activation(cfg.hidden_act)(h), ("batch", "length", "act_mlp"))
    h = Dense((cfg.hidden_size,), ("mlp", "embed"), dtype=self.dtype, name="wo")(h)
    h = Dropout(cfg.dropout_rate, cfg.dropout_impl)(h, deterministic=self.deterministic)
    return LayerNorm(cfg.layer_norm_eps, self.dtype, name="norm")(x + h)


class Layer(nn.Module):
  """One encoder layer; `attention` / `mlp` may be shared instances owned by the encoder."""

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32
  deterministic: bool = True
  attention: nn.Module | None = None
  mlp: nn.Module | None = None

  @nn.compact
  def __call__(self, x, mask, relative=None, query=None):
    attention = self.attention or AttentionBlock(self.config, self.dtype, self.deterministic, name="attention")
    mlp = self.mlp or FeedForward(self.config, self.dtype, self.deterministic, name="mlp")
    x = mlp(attention(x, mask, relative, query))
    return constrain(x, ("batch", "length", "act_embed"))


class ScanLayer(Layer):
  """`Layer` with the (carry, out) signature nn.scan wants; emits the hidden state if asked."""

  emit_states: bool = False

  @nn.compact
  def __call__(self, x, mask, relative=None):
    x = super().__call__(x, mask, relative)
    return x, (x if self.emit_states else None)


class ConvLayer(nn.Module):
  """DeBERTa-v2's convolution branch, added after the first layer.

  conv over the layer's *input* (the embeddings), masked, activated, added to
  the layer's output, LayerNorm, masked again.
  """

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32
  deterministic: bool = True

  @nn.compact
  def __call__(self, layer_input, layer_output, input_mask):
    cfg = self.config
    out = nn.Conv(cfg.hidden_size, (cfg.conv_kernel_size,), padding=[((cfg.conv_kernel_size - 1) // 2,) * 2],
                  feature_group_count=cfg.conv_groups, dtype=self.dtype, param_dtype=jnp.float32,
                  kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                           ("conv_window", "embed_in", "embed")),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name="conv")(layer_input)
    mask = input_mask[..., None].astype(out.dtype)
    out = activation(cfg.conv_act)(Dropout(cfg.dropout_rate, cfg.dropout_impl)(out * mask, deterministic=self.deterministic))
    return LayerNorm(cfg.layer_norm_eps, self.dtype, name="norm")(layer_output + out) * mask


class Encoder(nn.Module):
  """hidden [b, l, H] -> (hidden [b, l, H], all hidden states [num_layers + 1, b, l, H] or None)."""

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, mask, input_mask, *, output_hidden_states: bool = False,
               emd_positions: jax.Array | None = None):
    """-> (hidden [b, l, H], all states [layers + 1, b, l, H] or None, decoder output [b, l, H] or None).

    emd_positions [1 | b, l, H]: also run the enhanced mask decoder (DeBERTa pretraining).
    """
    cfg = self.config
    relative = None
    if cfg.attention_type == "disentangled" and cfg.relative_attention:
      table = Embed(2 * cfg.relative_span, cfg.hidden_size, ("relpos", "embed"), name="rel_embeddings").embedding
      if cfg.norm_rel_embeddings:
        table = LayerNorm(cfg.layer_norm_eps, jnp.float32, name="rel_norm")(table)
      relative = {"embeddings": table}

    layer_cls = Layer
    if cfg.remat_policy != "none":
      layer_cls = nn.remat(Layer, policy=remat.POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
    make = lambda name, **kw: layer_cls(cfg, self.dtype, self.deterministic, name=name, **kw)

    states, decoded = [x], None
    if cfg.share_layers == "all":
      x, states = self._albert_groups(x, mask, relative, make, states)
    elif cfg.scan_layers:
      if cfg.conv_kernel_size:
        raise ValueError("scan_layers does not support conv_kernel_size > 0 (the conv follows layer 0 only)")
      x, states = self._scanned(x, mask, relative, states, output_hidden_states)
    else:
      shared = {}
      if cfg.share_layers == "attention":
        shared["attention"] = AttentionBlock(cfg, self.dtype, self.deterministic, name="shared_attention")
      elif cfg.share_layers == "ffn":
        shared["mlp"] = FeedForward(cfg, self.dtype, self.deterministic, name="shared_mlp")
      conv = ConvLayer(cfg, self.dtype, self.deterministic, name="conv") if cfg.conv_kernel_size else None
      for i in range(cfg.num_layers):
        layer = make(f"layer_{i}", **shared)
        y = layer(x, mask, relative)
        if i == 0 and conv is not None:
          y = conv(x, y, input_mask)
        x = y
        states.append(x)
      if emd_positions is not None:
        decoded = self._enhanced_mask_decoder(layer, states[-2], emd_positions, mask, relative)
    return x, (jnp.stack(states) if output_hidden_states else None), decoded

  def _enhanced_mask_decoder(self, last_layer, hidden, positions, mask, relative):
    """DeBERTa's EMD: the last layer again, `emd_layers` times, keys/values from the layer below it and
    queries that start from absolute position embeddings plus those hidden states."""
    query = positions + hidden
    for _ in range(self.config.emd_layers):
      query = last_layer(hidden, mask, relative, query)
    return query

  def _albert_groups(self, x, mask, relative, make, states):
    """ALBERT: step i runs group int(i / (num_layers / groups)), each group `inner_group_num` layers."""
    cfg = self.config
    groups = [[make(f"group_{g}_layer_{k}") for k in range(cfg.inner_group_num)]
              for g in range(cfg.num_hidden_groups)]
    for i in range(cfg.num_layers):
      # The reference's float division: 5 layers in 2 groups run groups 0,0,0,1,1.
      for layer in groups[int(i / (cfg.num_layers / cfg.num_hidden_groups))]:
        x = layer(x, mask, relative)
        states.append(x)  # one state per applied layer, as the reference reports them
    return x, states

  def _scanned(self, x, mask, relative, states, emit_states):
    cfg = self.config
    body = ScanLayer
    if cfg.remat_policy != "none":
      body = nn.remat(ScanLayer, policy=remat.POLICIES[cfg.remat_policy], prevent_cse=False)
    # "intermediates" (attention maps, sown only when that collection is mutable) stack along axis 0 too.
    scanned = nn.scan(body, variable_axes={"params": 0, "intermediates": 0},
                      split_rngs={"params": True, "dropout": True},
                      in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
    x, ys = scanned(cfg, self.dtype, self.deterministic, emit_states=emit_states, name="layers")(x, mask, relative)
    return x, (states + list(ys) if emit_states else states)
