"""Weight products of the dense layers and the tied output projection, in every compute dtype.

float32 (and every dtype but bfloat16) is XLA's `dot_general` as written. bfloat16 on CPU is
where XLA needs help: XLA:CPU hands a bfloat16 product to YNNPACK's AMX / AVX512-BF16 kernels
(about 6x its float32 rate on a Sapphire Rapids core) only when the product is canonical: the
left operand [M, K] and the right [K, N], both row-major, accumulated in float32. Anything else
(a bfloat16 result, or the transposed operands of the backward pass, dx = g . W^T and
dW = x^T . g) is converted to float32 before the compiler picks a kernel, so a bfloat16 step
ran slower than a float32 one. `bf16_matmul` writes the three products of a dense layer in the
canonical form: a custom VJP whose transposes go through a reshape (`row_major_transpose`) so that they
are materialised as row-major copies instead of being folded into the product's dimension
numbers, and float32 accumulation throughout (the kernel's gradient stays float32, where
autodiff of a bfloat16 product rounds it to bfloat16 first).

`jax.lax.platform_dependent` keeps that form to CPU lowerings: a TPU or GPU program (also one
compiled ahead of time from a CPU host, launch/aot_compile.py) gets XLA's own product, whose
layouts those compilers choose themselves.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp


def row_major_transpose(a: jax.Array) -> jax.Array:
  """a [R, C] -> a^T [C, R] as a row-major copy (a plain transpose would fold into the product).

  The split of R into [R / g, g] keeps XLA from reading the transpose as a relabelling of the
  operand's dimensions before it decides the product's types; any g dividing R does.
  """
  rows, cols = a.shape
  group = next(g for g in (64, 32, 16, 8, 4, 2, 1) if rows % g == 0)
  return a.reshape(rows // group, group, cols).transpose(2, 0, 1).reshape(cols, rows)


def _product(a: jax.Array, b: jax.Array) -> jax.Array:
  """[M, K] . [K, N] of bfloat16 operands, accumulated and returned in float32."""
  return jax.lax.dot_general(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), (((1,), (0,)), ((), ())),
                             preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x16: jax.Array, w: jax.Array, w_transposed: bool) -> jax.Array:
  return _forward(x16, w, w_transposed)[0]


def _forward(x16, w, w_transposed):
  # The residuals: the bfloat16 input, as autodiff of a bfloat16 product keeps, and the kernel as
  # given (a parameter, alive anyway; cast again in the backward pass).
  w16 = w.astype(jnp.bfloat16)
  y = _product(x16, row_major_transpose(w16) if w_transposed else w16)
  return y.astype(jnp.bfloat16), (x16, w)


def _backward(w_transposed, residuals, g):
  x16, w = residuals
  g16, w16 = g.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  if w_transposed:   # w [N, K]
    dx = _product(g16, w16)                               # [M, N] . [N, K]
    dw = _product(row_major_transpose(g16), x16)                  # [N, M] . [M, K]
  else:              # w [K, N]
    dx = _product(g16, row_major_transpose(w16))                  # [M, N] . [N, K]
    dw = _product(row_major_transpose(x16), g16)                  # [K, M] . [M, N]
  return dx.astype(jnp.bfloat16), dw.astype(w.dtype)


_matmul.defvjp(_forward, _backward)


def bf16_matmul(x: jax.Array, w: jax.Array, w_transposed: bool = False) -> jax.Array:
  """x [M, K] . w [K, N] (or w [N, K]^T) -> [M, N] bfloat16, every product canonical, float32 sums.

  The kernel's gradient comes back in the kernel's dtype, never rounded to bfloat16.
  """
  return _matmul(x.astype(jnp.bfloat16), w, w_transposed)


def dense(x: jax.Array, kernel: jax.Array, in_dims: int, dtype) -> jax.Array:
  """x [..., *in] . kernel [*in, *out] -> [..., *out] in `dtype` (in = the last `in_dims` dims of x)."""
  contract = tuple(range(x.ndim - in_dims, x.ndim))
  dims = ((contract, tuple(range(in_dims))), ((), ()))

  def xla(x, kernel):
    return jax.lax.dot_general(x.astype(dtype), kernel.astype(dtype), dims)

  if jnp.dtype(dtype) != jnp.bfloat16:
    return xla(x, kernel)

  def cpu(x, kernel):
    lead, out = x.shape[:x.ndim - in_dims], kernel.shape[in_dims:]
    rows, depth = math.prod(lead), math.prod(x.shape[x.ndim - in_dims:])
    y = bf16_matmul(x.reshape(rows, depth), kernel.reshape(depth, math.prod(out)))
    return y.reshape(*lead, *out)

  return jax.lax.platform_dependent(x, kernel, cpu=cpu, default=xla)


def attend(x: jax.Array, table: jax.Array, dtype) -> jax.Array:
  """x [..., E] . table [V, E]^T -> [..., V] in `dtype` (the tied output projection)."""
  def xla(x, table):
    return jnp.einsum("...e,ve->...v", x.astype(dtype), table.astype(dtype))

  if jnp.dtype(dtype) != jnp.bfloat16:
    return xla(x, table)

  def cpu(x, table):
    lead = x.shape[:-1]
    y = bf16_matmul(x.reshape(math.prod(lead), x.shape[-1]), table, w_transposed=True)
    return y.reshape(*lead, table.shape[0])

  return jax.lax.platform_dependent(x, table, cpu=cpu, default=xla)
