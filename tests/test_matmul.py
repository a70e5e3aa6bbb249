"""The weight products (bert_jax/models/matmul.py) against a float64 NumPy reference.

float32 must be XLA's product bit for bit (the goldens depend on it). bfloat16 rounds its
operands to bfloat16 and accumulates in float32: values and both gradients are checked
against the same computation done in float64 on the rounded operands, and on CPU the
compiled step must hand every product to the bfloat16 kernels (its dots read bfloat16).
"""

import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from bert_jax.models import matmul


def _rounded(a):
  """a as bfloat16 would hold it, in float64."""
  return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def _inputs(rows, depth, width, seed=0):
  kx, kw = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, (rows, depth)), 0.1 * jax.random.normal(kw, (depth, width))


def _close_in_bfloat16(got, want):
  """Equal within one bfloat16 rounding of the result (8 bits of mantissa) plus float32 sums."""
  got = np.asarray(got, np.float64)
  scale = np.abs(want).max()
  np.testing.assert_allclose(got, want, rtol=2**-8, atol=1e-5 * scale)


@pytest.mark.parametrize("in_dims", [1, 2])
def test_float32_is_xlas_product_bit_for_bit(in_dims):
  x = jax.random.normal(jax.random.key(0), (3, 5, 4, 8))
  kernel = jax.random.normal(jax.random.key(1), (8, 2, 6) if in_dims == 1 else (4, 8, 6))
  contract = tuple(range(x.ndim - in_dims, x.ndim))
  want = jax.lax.dot_general(x, kernel, ((contract, tuple(range(in_dims))), ((), ())))
  np.testing.assert_array_equal(jax.jit(matmul.dense, static_argnums=(2, 3))(x, kernel, in_dims, jnp.float32), want)
  table = jax.random.normal(jax.random.key(2), (11, 8))
  np.testing.assert_array_equal(matmul.attend(x, table, jnp.float32), jnp.einsum("...e,ve->...v", x, table))


@pytest.mark.parametrize("rows", [256, 7 * 11])   # 77 rows: row_major_transpose's group falls back to 1
def test_bfloat16_value_and_gradients_match_float64_reference(rows):
  x, w = _inputs(rows, 48, 40)
  g = jax.random.normal(jax.random.key(3), (rows, 40))

  def loss(x, w):   # <y, g> with y in bfloat16, so dL/dy = g
    return (matmul.dense(x, w, 1, jnp.bfloat16).astype(jnp.float32) * g).sum()

  y = jax.jit(matmul.dense, static_argnums=(2, 3))(x, w, 1, jnp.bfloat16)
  dx, dw = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)
  x64, w64, g64 = _rounded(x), _rounded(w), _rounded(g)
  assert y.dtype == jnp.bfloat16 and dx.dtype == jnp.float32 and dw.dtype == jnp.float32
  _close_in_bfloat16(y.astype(jnp.float32), x64 @ w64)
  _close_in_bfloat16(dx, g64 @ w64.T)       # dx is a bfloat16 activation gradient
  # The kernel's gradient is accumulated and kept in float32: far tighter than bfloat16.
  np.testing.assert_allclose(np.asarray(dw, np.float64), x64.T @ g64, rtol=1e-4, atol=1e-5 * np.abs(x64.T @ g64).max())


def test_bfloat16_tied_projection_and_multi_axis_dense():
  x = jax.random.normal(jax.random.key(0), (2, 9, 16))
  table = jax.random.normal(jax.random.key(1), (30, 16))
  _close_in_bfloat16(matmul.attend(x, table, jnp.bfloat16).astype(jnp.float32),
                     np.einsum("ble,ve->blv", _rounded(x), _rounded(table)))
  kernel = jax.random.normal(jax.random.key(2), (4, 4, 12))   # heads folded back: [H, D, E]
  xh = x.reshape(2, 9, 4, 4)
  _close_in_bfloat16(matmul.dense(xh, kernel, 2, jnp.bfloat16).astype(jnp.float32),
                     np.einsum("blhd,hde->ble", _rounded(xh), _rounded(kernel)))
  grad = jax.grad(lambda t: matmul.attend(x, t, jnp.bfloat16).astype(jnp.float32).sum())(table)
  np.testing.assert_allclose(grad, np.broadcast_to(_rounded(x).sum((0, 1)), table.shape), rtol=1e-4)


def test_transposed_is_the_transpose():
  for rows in (128, 96, 77, 1):
    a = jnp.arange(rows * 5, dtype=jnp.float32).reshape(rows, 5)
    np.testing.assert_array_equal(matmul.row_major_transpose(a), a.T)


def test_vmap_over_kernels_equals_one_at_a_time():
  """Several seeds under vmap: the custom VJP batches like the plain product."""
  x, _ = _inputs(32, 16, 8)
  kernels = jnp.stack([_inputs(32, 16, 8, seed=s)[1] for s in range(3)])

  def grads(w):
    return jax.grad(lambda w: (matmul.dense(x, w, 1, jnp.bfloat16).astype(jnp.float32) ** 2).sum())(w)

  batched = jax.jit(jax.vmap(grads))(kernels)
  for s in range(3):
    np.testing.assert_allclose(batched[s], jax.jit(grads)(kernels[s]), rtol=1e-6, atol=1e-6)


def _computations(hlo: str) -> dict[str, str]:
  """Compiled HLO text -> {computation name: its body}."""
  return {m.group(1): m.group(2) for m in re.finditer(r"^%?(\S+) [^\n]*\{\n(.*?)\n\}", hlo, re.S | re.M)}


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the canonical form is CPU's (other backends keep XLA's)")
@pytest.mark.parametrize("product", ["dense", "attend"])
def test_bfloat16_training_products_reach_bfloat16_kernels_on_cpu(product):
  """Forward, dx and dW of a dense layer and of the tied projection: every dot reads bfloat16.

  XLA's own bfloat16 backward products (transposed operands) are converted to float32 first,
  which this guards against coming back.
  """
  x, w = _inputs(256, 64, 96)

  if product == "attend":
    w = w.T   # a table [V, E]

  def loss(x, w):
    y = matmul.dense(x, w, 1, jnp.bfloat16) if product == "dense" else matmul.attend(x, w, jnp.bfloat16)
    return (y.astype(jnp.float32) ** 2).sum()

  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()
  bodies = [body for body in _computations(hlo).values() if " dot(" in body]
  assert len(bodies) == 3, hlo
  for body in bodies:
    operands = re.search(r" dot\(%?([\w.]+), %?([\w.]+)\)", body).groups()
    for name in operands:
      declared = re.search(rf"%?{re.escape(name)} = (\w+)\[", body)
      assert declared and declared.group(1) == "bf16", body
