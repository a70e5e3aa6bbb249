"""Small building blocks shared by every family: dense, embed, LayerNorm, activations.

Every parameter is created with logical axis names (`nn.with_logical_partitioning`)
so that `bert_jax.sharding` can turn them into mesh shardings; params are float32
and computation runs in the module's `dtype`, except LayerNorm, which normalises
in float32 whatever the compute dtype. The weight products are matmul.py's.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models import matmul

Axes = tuple[str | None, ...]

default_kernel_init = nn.initializers.normal(stddev=0.02)


def activation(name: str):
  """Activation by its Hugging Face name (`gelu` is the exact erf form)."""
  table = {
      "gelu": functools.partial(jax.nn.gelu, approximate=False),
      "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
      "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
      "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
      "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
      "gelu_python": functools.partial(jax.nn.gelu, approximate=False),
      "gelu_accurate": functools.partial(jax.nn.gelu, approximate=True),
      "relu": jax.nn.relu,
      "relu6": jax.nn.relu6,
      "leaky_relu": jax.nn.leaky_relu,
      "silu": jax.nn.silu,
      "swish": jax.nn.silu,
      "mish": jax.nn.mish,
      "tanh": jnp.tanh,
      "sigmoid": jax.nn.sigmoid,
      "linear": lambda x: x,
  }
  if name not in table:
    raise ValueError(f"unknown activation {name!r}; expected one of {sorted(table)}")
  return table[name]


def param_with_axes(module: nn.Module, name: str, init, shape: Sequence[int], axes: Axes):
  """A float32 parameter annotated with logical axis names."""
  return module.param(name, nn.with_logical_partitioning(init, axes), tuple(shape), jnp.float32)


class Dense(nn.Module):
  """`x @ kernel + bias` over the last `len(in_axes)` dims of x.

  kernel: [*in_shape, *features] with logical names `kernel_axes`;
  bias: [*features] with names `kernel_axes[len(in_shape):]`.
  """

  features: tuple[int, ...]
  kernel_axes: Axes
  use_bias: bool = True
  in_dims: int = 1
  dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_shape = x.shape[-self.in_dims:]
    kernel = param_with_axes(self, "kernel", self.kernel_init, (*in_shape, *self.features), self.kernel_axes)
    y = matmul.dense(x, kernel, self.in_dims, self.dtype)
    if self.use_bias:
      bias = param_with_axes(self, "bias", nn.initializers.zeros, self.features, self.kernel_axes[self.in_dims:])
      y = y + bias.astype(self.dtype)
    return y


class Embed(nn.Module):
  """A lookup table [num_embeddings, features] with logical names `axes`."""

  num_embeddings: int
  features: int
  axes: Axes
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.embedding = param_with_axes(
        self, "embedding", default_kernel_init, (self.num_embeddings, self.features), self.axes)

  def __call__(self, ids: jax.Array) -> jax.Array:
    """ids [...] int -> [..., features]. Callers check ids are in range (JAX clamps)."""
    return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

  def attend(self, x: jax.Array) -> jax.Array:
    """x [..., features] -> logits [..., num_embeddings] (tied output projection)."""
    return matmul.attend(x, self.embedding, self.dtype)


class LayerNorm(nn.Module):
  """LayerNorm computed in float32 whatever the input dtype; output in `dtype`."""

  epsilon: float = 1e-12
  dtype: jnp.dtype = jnp.float32
  axis_name: str = "norm"
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    scale = param_with_axes(self, "scale", nn.initializers.ones, (features,), (self.axis_name,))
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale
    if self.use_bias:
      y = y + param_with_axes(self, "bias", nn.initializers.zeros, (features,), (self.axis_name,))
    return y.astype(self.dtype)


def constrain(x: jax.Array, axes: Axes) -> jax.Array:
  """Logical sharding constraint on an activation (a no-op outside a mesh + rules context)."""
  return nn.with_logical_constraint(x, axes)
