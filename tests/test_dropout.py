"""The keyed-hash dropout: its statistics, determinism, sharding invariance and the threefry fallback;
the one-hot cross entropy against optax's gather-based one."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from bert_jax.models.dropout import Dropout, hash_bits, keep_mask, mix32
from bert_jax.tasks.base import cross_entropy


def test_mix32_is_the_published_lowbias32():
  # Reference: the C definition, evaluated with Python integers modulo 2**32.
  def lowbias32(x):
    x ^= x >> 16
    x = (x * 0x7FEB352D) % 2 ** 32
    x ^= x >> 15
    x = (x * 0x846CA68B) % 2 ** 32
    return x ^ (x >> 16)
  xs = np.array([0, 1, 2, 12345, 2 ** 31, 2 ** 32 - 1], np.uint32)
  np.testing.assert_array_equal(np.asarray(mix32(jnp.asarray(xs))), [lowbias32(int(x)) for x in xs])


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_drop_fraction_matches_rate(rate):
  mask = np.asarray(keep_mask(jax.random.key(3), rate, (64, 8, 128, 128)))
  n = mask.size
  # Binomial standard error is sqrt(r(1-r)/n) ~ 3e-4 here; allow 5 sigma.
  assert abs((1 - mask.mean()) - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
  # No structure along rows or columns: every column and every row drops about `rate`.
  flat = mask.reshape(-1, 128)
  assert np.abs((1 - flat.mean(0)) - rate).max() < 6 * np.sqrt(rate * (1 - rate) / flat.shape[0])


def test_bits_are_uniform_and_decorrelated():
  bits = np.asarray(hash_bits(jax.random.key(0), (512, 512))).astype(np.float64) / 2 ** 32
  # Uniform: each of 16 bins holds 1/16 of the values (chi-square with 15 d.o.f., 99.9% bound 37.7).
  counts = np.histogram(bits, bins=16, range=(0, 1))[0]
  expected = bits.size / 16
  assert ((counts - expected) ** 2 / expected).sum() < 37.7
  # Neighbours (next column, next row) are uncorrelated: |r| < 5 / sqrt(n).
  bound = 5 / np.sqrt(bits.size)
  for a, b in [(bits[:, 1:], bits[:, :-1]), (bits[1:], bits[:-1]), (bits, bits.T)]:
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < bound


def test_same_key_same_mask_other_key_independent():
  shape = (4, 256, 256)
  a = np.asarray(keep_mask(jax.random.key(1), 0.5, shape))
  np.testing.assert_array_equal(a, np.asarray(keep_mask(jax.random.key(1), 0.5, shape)))
  b = np.asarray(keep_mask(jax.random.key(2), 0.5, shape))
  agree = (a == b).mean()  # independent fair coins agree half the time
  assert abs(agree - 0.5) < 5 * 0.5 / np.sqrt(a.size)


def test_module_scales_kept_values_and_is_identity_when_deterministic():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 16, 32)), jnp.float32)
  layer = Dropout(0.25)
  y = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)}))
  kept = y != 0
  np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / 0.75, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(layer.apply({}, x, deterministic=True)), np.asarray(x))
  np.testing.assert_array_equal(np.asarray(Dropout(0.0).apply({}, x, deterministic=False)), np.asarray(x))
  np.testing.assert_array_equal(
      np.asarray(Dropout(1.0).apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})), 0)
  # Expectation is preserved: the mean of many draws approaches x.
  draws = jax.vmap(lambda k: layer.apply({}, x, deterministic=False, rngs={"dropout": k}))(
      jax.random.split(jax.random.key(1), 400))
  assert np.abs(np.asarray(draws.mean(0)) - np.asarray(x)).mean() < 0.05


def test_threefry_impl_is_flax_dropout():
  x = jnp.ones((4, 64), jnp.float32)
  rngs = {"dropout": jax.random.key(7)}
  ours = Dropout(0.3, "threefry").apply({}, x, deterministic=False, rngs=rngs)
  # nn.Dropout as a child named "threefry" draws from the same folded rng stream.
  class Wrapped(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dropout(0.3, name="threefry")(x, deterministic=False)
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(Wrapped().apply({}, x, rngs=rngs)))
  with pytest.raises(ValueError, match="dropout_impl"):
    Dropout(0.3, "nope").apply({}, x, deterministic=False, rngs=rngs)


def test_sharded_mask_equals_unsharded():
  mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
  shape = (8, 4, 64, 64)
  key = jax.random.key(5)
  whole = np.asarray(jax.jit(lambda k: keep_mask(k, 0.1, shape))(key))
  sharding = NamedSharding(mesh, P("data", "model"))
  sharded = jax.jit(lambda k: keep_mask(k, 0.1, shape), out_shardings=sharding)(key)
  assert len(sharded.addressable_shards) == 8
  np.testing.assert_array_equal(np.asarray(sharded), whole)


def test_cross_entropy_matches_optax_and_its_gradient():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(3, 5, 11)) * 4, jnp.float32)
  labels = jnp.asarray(rng.integers(0, 11, (3, 5)), jnp.int32)
  reference = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  np.testing.assert_allclose(np.asarray(cross_entropy(logits, labels)), np.asarray(reference), rtol=1e-6, atol=1e-6)
  ours = jax.grad(lambda z: cross_entropy(z, labels).sum())(logits)
  theirs = jax.grad(lambda z: optax.softmax_cross_entropy_with_integer_labels(z, labels).sum())(logits)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6, atol=1e-7)
  # bfloat16 logits are promoted: the loss is float32.
  assert cross_entropy(logits.astype(jnp.bfloat16), labels).dtype == jnp.float32
