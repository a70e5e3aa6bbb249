"""The transformer stack: post- or pre-LN layers, cross-layer sharing, scan/remat, DeBERTa's conv, MPNet's bias.

A layer is two blocks, each `LayerNorm(x + dropout(f(x)))` (post-LN, BERT) or
`x + f(LayerNorm(x))` (pre-LN with a final norm, ModernBERT):
  AttentionBlock: f = output projection of self-attention (standard or disentangled; rotary
                  positions and a sliding window on local layers)
  FeedForward:    f = wo(act(wi(x))), or wo(act(x Wi_in) * x Wi_gate) (GLU)
ALBERT's sharing modes reuse one block instance across layers, so shared
parameters exist once in the tree.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from bert_jax.models import local_attention, remat, rotary, splash
from bert_jax.models.attention import SelfAttention, relative_position_bias
from bert_jax.models.config import ModelConfig
from bert_jax.models.dropout import Dropout
from bert_jax.models.layers import Dense, Embed, LayerNorm, activation, constrain
from bert_jax.models.relative import DisentangledSelfAttention

ATTENTION_CLASSES = {"standard": SelfAttention, "disentangled": DisentangledSelfAttention}

class AttentionBlock(nn.Module):
  """x [b, l, H] -> LayerNorm(x + dropout(W_o . attention(x))), or x + dropout(W_o . attention(LayerNorm(x))).

  The pre-norm form (ModernBERT) skips the norm in the first layer, whose input is the
  embeddings' norm already. `local` layers attend within the sliding window and take the
  local rotary tables. shared: what every layer reads (see `Encoder._shared_inputs`).
  """

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32
  deterministic: bool = True
  first: bool = False
  local: bool = False

  @nn.compact
  def __call__(self, x, mask, shared=None, query=None):
    cfg = self.config
    pre = cfg.norm_position == "pre"
    norm = lambda: LayerNorm(cfg.layer_norm_eps, self.dtype, name="norm", use_bias=cfg.norm_bias)
    h = norm()(x) if pre and not self.first else x
    kind = "local" if self.local else "global"
    extra = {}
    if shared and f"rotary_{kind}" in shared:
      extra["rotary_tables"] = shared[f"rotary_{kind}"]
    if shared and "position_bias" in shared:
      extra["bias"] = shared["position_bias"]
    if shared and "segments" in shared:
      extra["segments"] = shared["segments"]
    if self.local and cfg.attention_type == "standard":
      extra["window"] = cfg.local_attention // 2  # SelfAttention computes the band in blocks
    elif self.local:
      mask = local_attention.window_mask(mask, mask.shape[-1], cfg.local_attention // 2)
    context = ATTENTION_CLASSES[cfg.attention_type](cfg, self.dtype, name="self")(
        h, mask, deterministic=self.deterministic, relative=shared, query=query, **extra)
    out = Dense((cfg.hidden_size,), ("heads", "kv", "embed"), in_dims=2, use_bias=cfg.attention_bias,
                dtype=self.dtype, name="output")(context)
    out = checkpoint_name(out, "attention_out")
    out = Dropout(cfg.dropout_rate, cfg.dropout_impl)(out, deterministic=self.deterministic)
    if pre:
      return x + out
    return norm()((x if query is None else query) + out)


class FeedForward(nn.Module):
  """x [b, l, H] -> LayerNorm(x + dropout(wo(act(wi(x))))), or x + wo(dropout(act(wi(LayerNorm(x))))).

  With mlp_type="glu", wi is twice as wide and act(first half) * second half goes into wo (GeGLU).
  """

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32
  deterministic: bool = True

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    pre = cfg.norm_position == "pre"
    norm = lambda: LayerNorm(cfg.layer_norm_eps, self.dtype, name="norm", use_bias=cfg.norm_bias)
    glu = cfg.mlp_type == "glu"
    width = cfg.intermediate_size * (2 if glu else 1)
    h = Dense((width,), ("embed", "mlp"), use_bias=cfg.mlp_bias, dtype=self.dtype, name="wi")(norm()(x) if pre else x)
    if glu:
      h, gate = jnp.split(h, 2, axis=-1)
      h = activation(cfg.hidden_act)(h) * gate
    else:
      h = activation(cfg.hidden_act)(h)
    h = constrain(h, ("batch", "length", "act_mlp"))
    dropout = Dropout(cfg.dropout_rate, cfg.dropout_impl)
    if pre:  # ModernBERT drops out inside the block, before wo
      h = dropout(h, deterministic=self.deterministic)
    h = Dense((cfg.hidden_size,), ("mlp", "embed"), use_bias=cfg.mlp_bias, dtype=self.dtype, name="wo")(h)
    if pre:
      return x + h
    h = dropout(h, deterministic=self.deterministic)
    return norm()(x + h)


class Layer(nn.Module):
  """One encoder layer; `attention` / `mlp` may be shared instances owned by the encoder."""

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32
  deterministic: bool = True
  attention: nn.Module | None = None
  mlp: nn.Module | None = None
  index: int = -1               # position in the stack (-1: any; scanned and shared layers)

  @nn.compact
  def __call__(self, x, mask, shared=None, query=None):
    cfg = self.config
    attention = self.attention or AttentionBlock(cfg, self.dtype, self.deterministic, first=self.index == 0,
                                                 local=self.index >= 0 and cfg.is_local_layer(self.index),
                                                 name="attention")
    mlp = self.mlp or FeedForward(cfg, self.dtype, self.deterministic, name="mlp")
    x = mlp(attention(x, mask, shared, query))
    return constrain(x, ("batch", "length", "act_embed"))


class ScanLayer(Layer):
  """`Layer` with the (carry, out) signature nn.scan wants; emits the hidden state if asked."""

  emit_states: bool = False

  @nn.compact
  def __call__(self, x, mask, shared=None):
    x = super().__call__(x, mask, shared)
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
  def __call__(self, layer_input, layer_output, input_mask, segment_ids=None):
    """layer_input / layer_output [b, l, H]; input_mask [b, l]; segment_ids [b, l] of packed rows or None."""
    cfg = self.config
    conv = nn.Conv(cfg.hidden_size, (cfg.conv_kernel_size,), padding=[((cfg.conv_kernel_size - 1) // 2,) * 2],
                   feature_group_count=cfg.conv_groups, dtype=self.dtype, param_dtype=jnp.float32,
                   kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                            ("conv_window", "embed_in", "embed")),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name="conv")
    out = conv(layer_input)
    if segment_ids is not None:
      out = segment_conv(conv, layer_input, segment_ids, cfg.conv_groups)
    mask = input_mask[..., None].astype(out.dtype)
    out = activation(cfg.conv_act)(Dropout(cfg.dropout_rate, cfg.dropout_impl)(out * mask, deterministic=self.deterministic))
    return LayerNorm(cfg.layer_norm_eps, self.dtype, name="norm")(layer_output + out) * mask


def segment_conv(conv: nn.Conv, x: jax.Array, segment_ids: jax.Array, groups: int) -> jax.Array:
  """The same convolution (conv's own kernel [k, H / groups, H] and bias) on packed rows x [b, l, H]:
  a tap reads a neighbour only within the token's segment, as if each example were a row of its own
  (where the row's edge pads with zeros). -> [b, l, H]."""
  kernel, bias = conv.variables["params"]["kernel"], conv.variables["params"]["bias"]
  kernel, bias = (nn.unbox(kernel), nn.unbox(bias))
  size, length = kernel.shape[0], x.shape[1]
  half = (size - 1) // 2
  x = x.astype(conv.dtype)
  out = jnp.zeros(x.shape[:2] + (kernel.shape[-1],), jnp.float32)
  for tap in range(size):
    shift = tap - half  # output t reads input t + shift
    index = jnp.clip(jnp.arange(length) + shift, 0, length - 1)
    inside = (jnp.arange(length) + shift >= 0) & (jnp.arange(length) + shift < length)
    same = inside[None] & (jnp.take(segment_ids, index, axis=1) == segment_ids)
    neighbour = jnp.where(same[..., None], jnp.take(x, index, axis=1), 0)
    w = kernel[tap].astype(conv.dtype)  # [H / groups, H]
    if groups == 1:
      out = out + jnp.einsum("blc,co->blo", neighbour, w, preferred_element_type=jnp.float32)
    else:
      b, l, c = neighbour.shape
      grouped = w.reshape(c // groups, groups, -1)  # output channels come in `groups` blocks
      out = out + jnp.einsum("blgc,cgo->blgo", neighbour.reshape(b, l, groups, c // groups), grouped,
                             preferred_element_type=jnp.float32).reshape(b, l, -1)
  return (out + bias.astype(jnp.float32)).astype(conv.dtype)


class Encoder(nn.Module):
  """hidden [b, l, H] -> (hidden [b, l, H], all hidden states [num_layers + 1, b, l, H] or None)."""

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, mask, input_mask, *, output_hidden_states: bool = False,
               emd_positions: jax.Array | None = None, positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None):
    """-> (hidden [b, l, H], all states [layers + 1, b, l, H] or None, decoder output [b, l, H] or None).

    mask [b, 1, 1 | l, l] bool; emd_positions [1 | b, l, H]: also run the enhanced mask decoder
    (DeBERTa pretraining); positions [b | 1, l] int: the rotary positions (models with rotary_base);
    segment_ids [b, l] of packed rows (DeBERTa's convolution stays within each example).
    With pre-LN layers the hidden output, and the last state, is the final norm of the last layer's output.
    """
    cfg = self.config
    shared = self._shared_inputs(mask, positions, input_mask, segment_ids)

    layer_cls = Layer
    if cfg.remat_policy != "none":
      layer_cls = nn.remat(Layer, policy=remat.POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
    make = lambda name, **kw: layer_cls(cfg, self.dtype, self.deterministic, name=name, **kw)

    states, decoded = [x], None
    if cfg.share_layers == "all":
      x, states = self._albert_groups(x, mask, shared, make, states)
    elif cfg.scan_layers:
      if cfg.conv_kernel_size:
        raise ValueError("scan_layers does not support conv_kernel_size > 0 (the conv follows layer 0 only)")
      x, states = self._scanned(x, mask, shared, states, output_hidden_states)
    else:
      blocks = {}
      if cfg.share_layers == "attention":
        blocks["attention"] = AttentionBlock(cfg, self.dtype, self.deterministic, name="shared_attention")
      elif cfg.share_layers == "ffn":
        blocks["mlp"] = FeedForward(cfg, self.dtype, self.deterministic, name="shared_mlp")
      conv = ConvLayer(cfg, self.dtype, self.deterministic, name="conv") if cfg.conv_kernel_size else None
      for i in range(cfg.num_layers):
        layer = make(f"layer_{i}", index=i, **blocks)
        y = layer(x, mask, shared)
        if i == 0 and conv is not None:
          y = conv(x, y, input_mask, segment_ids)
        x = y
        states.append(x)
      if emd_positions is not None:
        decoded = self._enhanced_mask_decoder(layer, states[-2], emd_positions, mask, shared)
    if cfg.norm_position == "pre":
      x = LayerNorm(cfg.layer_norm_eps, self.dtype, name="final_norm", use_bias=cfg.norm_bias)(x)
      states[-1] = x  # the reference reports the normed output as the last hidden state
    return x, (jnp.stack(states) if output_hidden_states else None), decoded

  def _shared_inputs(self, mask: jax.Array, positions: jax.Array | None, input_mask: jax.Array | None = None,
                     segment_ids: jax.Array | None = None) -> dict | None:
    """What every layer reads besides its input and the mask, computed once per forward:

    "embeddings": DeBERTa's relative-position table [2 span, H] (normed when configured);
    "rotary_global" / "rotary_local": (cos, sin) [b | 1, l, head_dim] of the positions;
    "segments": segment labels [b, l] int, 0 on padding (attention_impl="splash" only): the packed rows'
                segment_ids where given (the [l, l] mask is then never read, nor built), else the mask's
                (splash.segment_labels);
    "position_bias": MPNet's relative position bias [1, heads, l, l], from the one table of every layer.
    """
    cfg = self.config
    shared = {}
    if cfg.attention_type == "disentangled" and cfg.relative_attention:
      table = Embed(2 * cfg.relative_span, cfg.hidden_size, ("relpos", "embed"), name="rel_embeddings").embedding
      if cfg.norm_rel_embeddings:
        table = LayerNorm(cfg.layer_norm_eps, jnp.float32, name="rel_norm")(table)
      shared["embeddings"] = table
    if cfg.rotary_base > 0:
      shared["rotary_global"] = rotary.rotary_tables(positions, cfg.dim_per_head, cfg.rotary_base)
      shared["rotary_local"] = rotary.rotary_tables(positions, cfg.dim_per_head,
                                                    cfg.local_rotary_base or cfg.rotary_base)
    if cfg.attention_impl == "splash":
      if segment_ids is not None and input_mask is not None:
        shared["segments"] = jnp.where(input_mask.astype(bool), segment_ids, 0).astype(jnp.int32)
      else:
        shared["segments"] = splash.segment_labels(mask)
    if cfg.relative_attention_num_buckets > 0:
      table = Embed(cfg.relative_attention_num_buckets, cfg.num_heads, ("relpos", "heads"),
                    name="relative_attention_bias").embedding
      shared["position_bias"] = relative_position_bias(table, mask.shape[-1], cfg.relative_attention_bucketing,
                                                       cfg.relative_attention_max_distance)
    return shared or None

  def _enhanced_mask_decoder(self, last_layer, hidden, positions, mask, shared):
    """DeBERTa's EMD: the last layer again, `emd_layers` times, keys/values from the layer below it and
    queries that start from absolute position embeddings plus those hidden states."""
    query = positions + hidden
    for _ in range(self.config.emd_layers):
      query = last_layer(hidden, mask, shared, query)
    return query

  def _albert_groups(self, x, mask, shared, make, states):
    """ALBERT: step i runs group int(i / (num_layers / groups)), each group `inner_group_num` layers."""
    cfg = self.config
    groups = [[make(f"group_{g}_layer_{k}") for k in range(cfg.inner_group_num)]
              for g in range(cfg.num_hidden_groups)]
    for i in range(cfg.num_layers):
      # The reference's float division: 5 layers in 2 groups run groups 0,0,0,1,1.
      for layer in groups[int(i / (cfg.num_layers / cfg.num_hidden_groups))]:
        x = layer(x, mask, shared)
        states.append(x)  # one state per applied layer, as the reference reports them
    return x, states

  def _scanned(self, x, mask, shared, states, emit_states):
    cfg = self.config
    body = ScanLayer
    if cfg.remat_policy != "none":
      body = nn.remat(ScanLayer, policy=remat.POLICIES[cfg.remat_policy], prevent_cse=False)
    # "intermediates" (attention maps, sown only when that collection is mutable) stack along axis 0 too.
    scanned = nn.scan(body, variable_axes={"params": 0, "intermediates": 0},
                      split_rngs={"params": True, "dropout": True},
                      in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
    x, ys = scanned(cfg, self.dtype, self.deterministic, emit_states=emit_states, name="layers")(x, mask, shared)
    return x, (states + list(ys) if emit_states else states)
