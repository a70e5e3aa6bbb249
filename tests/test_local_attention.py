"""Blockwise sliding-window attention (models/local_attention.py) against the masked full product."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.models import build, flops, local_attention
from bert_jax.models import chunked_attention
from bert_jax.models.attention import attend
from bert_jax.models.dropout import Dropout
from bert_jax.models.model import EncoderModel, attention_mask_4d

ATOL = 1e-5


def _qkv(rng, batch, length, heads=3, dim=8):
  return tuple(jnp.asarray(rng.normal(size=(batch, length, heads, dim)), jnp.float32) for _ in range(3))


def _masks(batch, length):
  """No mask, key padding, and packed rows (three documents, then padding) as the model builds them."""
  valid = np.ones((batch, length), np.int32)
  valid[-1, length - 7:] = 0
  segments = np.ones((batch, length), np.int32)
  segments[0, length // 3:] = 2
  segments[0, 2 * length // 3:] = 3
  segments[-1, length - 7:] = 0
  return {"none": None, "padding": attention_mask_4d(jnp.asarray(valid)),
          "packed": attention_mask_4d(jnp.asarray(valid * (segments > 0)), jnp.asarray(segments))}


def _reference(q, k, v, mask, half):
  return attend(q, k, v, local_attention.window_mask(mask, q.shape[1], half), scale=q.shape[-1] ** -0.5)


@pytest.mark.parametrize("length,half,block", [(37, 5, None), (37, 5, 3), (53, 7, 16), (41, 4, 4), (29, 13, 8)])
@pytest.mark.parametrize("kind", ["none", "padding", "packed"])
def test_band_equals_the_masked_full_softmax(length, half, block, kind):
  """Every position, padding included (rows that see nothing average all values, as the full path does)."""
  q, k, v = _qkv(np.random.default_rng(length + half), 2, length)
  mask = _masks(2, length)[kind]
  ours = local_attention.band_attention(q, k, v, mask, half=half, scale=8 ** -0.5, block=block)
  np.testing.assert_allclose(ours, _reference(q, k, v, mask, half), atol=ATOL)


def test_band_gradients_equal_the_full_path():
  q, k, v = _qkv(np.random.default_rng(0), 2, 45)
  mask = _masks(2, 45)["packed"]
  cotangent = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)
  loss = lambda f: lambda q, k, v: jnp.sum(f(q, k, v) * cotangent)
  band = jax.jit(jax.grad(loss(lambda q, k, v: local_attention.band_attention(
      q, k, v, mask, half=6, scale=8 ** -0.5, block=4)), argnums=(0, 1, 2)))(q, k, v)
  full = jax.grad(loss(lambda q, k, v: _reference(q, k, v, mask, 6)), argnums=(0, 1, 2))(q, k, v)
  for ours, ref in zip(band, full):
    np.testing.assert_allclose(ours, ref, atol=ATOL)


def test_attend_takes_blocks_only_where_they_pay():
  assert not local_attention.pays(128, 64) and local_attention.pays(512, 64) and local_attention.pays(8192, 64)
  block, blocks, reach, span = local_attention.geometry(8192, 64)
  assert (block, blocks, reach, span) == (64, 128, 1, 192)  # ModernBERT's 128-token window
  q, k, v = _qkv(np.random.default_rng(2), 2, 70)
  mask = _masks(2, 70)["padding"]
  assert local_attention.pays(70, 3)
  np.testing.assert_allclose(attend(q, k, v, mask, scale=8 ** -0.5, window=3), _reference(q, k, v, mask, 3),
                             atol=ATOL)


@pytest.mark.parametrize("blocks", [(12, 16), (10, 20)])  # blocks that divide the length, and padded ones
@pytest.mark.parametrize("kind", ["none", "padding", "packed"])
def test_blockwise_global_attention_equals_one_product_values_and_gradients(kind, blocks):
  """Every position, padding included, and the gradients of q, k and v."""
  q, k, v = _qkv(np.random.default_rng(3), 2, 48)
  mask = _masks(2, 48)[kind]
  cotangent = jnp.asarray(np.random.default_rng(4).normal(size=q.shape), jnp.float32)
  loss = lambda f: lambda q, k, v: jnp.sum(f(q, k, v) * cotangent)
  one = lambda q, k, v: attend(q, k, v, mask, scale=8 ** -0.5)
  flash = lambda q, k, v: chunked_attention.flash_attention(q, k, v, mask, scale=8 ** -0.5, q_block=blocks[0],
                                                            k_block=blocks[1])
  np.testing.assert_allclose(flash(q, k, v), one(q, k, v), atol=ATOL)
  for ours, ref in zip(jax.jit(jax.grad(loss(flash), argnums=(0, 1, 2)))(q, k, v),
                       jax.grad(loss(one), argnums=(0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(ours, ref, atol=ATOL)


def test_blockwise_attention_under_vmap_equals_each_seed():
  """Several seeds under vmap (the fine-tuning loop's seed axis): values and gradients per seed."""
  q, k, v = (jnp.stack([x, 2 * x]) for x in _qkv(np.random.default_rng(6), 2, 40))
  mask = _masks(2, 40)["packed"]
  flash = lambda q, k, v: jnp.sum(chunked_attention.flash_attention(q, k, v, mask, scale=0.3, q_block=16,
                                                                    k_block=8) ** 2)
  seeds = jax.jit(jax.vmap(jax.value_and_grad(flash, argnums=(0, 1, 2))))(q, k, v)
  for s in range(2):
    one = jax.value_and_grad(lambda q, k, v: jnp.sum(attend(q, k, v, mask, scale=0.3) ** 2), argnums=(0, 1, 2))(
        q[s], k[s], v[s])
    for ours, ref in zip(jax.tree.leaves(seeds), jax.tree.leaves(one)):
      np.testing.assert_allclose(ours[s], ref, atol=1e-4, rtol=1e-5)


def test_attend_takes_blocks_only_for_long_global_rows():
  q, k, v = _qkv(np.random.default_rng(5), 1, 4096, heads=1, dim=4)
  jaxpr = str(jax.make_jaxpr(lambda q, k, v: attend(q, k, v, None, scale=0.5))(q, k, v))
  assert "custom_vjp" in jaxpr and "4096,4096" not in jaxpr.replace(" ", "")  # blocks, never the whole product
  short = str(jax.make_jaxpr(lambda q, k, v: attend(q, k, v, None, scale=0.5))(*(x[:, :512] for x in (q, k, v))))
  assert "scan" not in short


def test_dropout_acts_on_the_band_probabilities():
  q, k, v = _qkv(np.random.default_rng(3), 2, 64)
  dropout = Dropout(0.5)

  def run(q, rng, deterministic):
    return dropout.apply({}, q, rngs={"dropout": rng}, method=lambda m, q: local_attention.band_attention(
        q, k, v, None, half=4, scale=8 ** -0.5, dropout=m, deterministic=deterministic))

  plain = run(q, jax.random.key(0), True)
  dropped = jax.jit(run, static_argnums=2)(q, jax.random.key(0), False)
  again = jax.jit(run, static_argnums=2)(q, jax.random.key(1), False)
  assert np.isfinite(dropped).all() and not np.allclose(dropped, plain) and not np.allclose(dropped, again)
  grad = jax.grad(lambda q: run(q, jax.random.key(0), False).sum())(q)
  assert np.isfinite(grad).all() and np.abs(grad).max() > 0


# A ModernBERT with a window small enough that 64 tokens take the blocks: layers 1 and 3 local.
CFG = build("modernbert", "tiny", vocab_size=97, hidden_size=32, num_heads=2, intermediate_size=40, num_layers=4,
            local_attention=6, global_attn_every_n_layers=2, max_position_embeddings=128)


def _packed_batch(length=64):
  rng = np.random.default_rng(4)
  ids = rng.integers(5, CFG.vocab_size, (2, length)).astype(np.int32)
  segments = np.ones((2, length), np.int32)
  segments[0, 20:] = 2
  segments[0, 41:] = 3
  segments[1, length - 9:] = 0
  return ids, segments


def _hidden_and_grads(cfg, monkeypatch, blocks: bool):
  monkeypatch.setattr(local_attention, "pays", lambda *a, **k: blocks)
  ids, segments = _packed_batch()
  model = EncoderModel(cfg)
  params = nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])

  # A fixed random projection of the output: sum(h ** 2) of a layer-normed output is nearly constant,
  # so its gradients would be rounding residue (cancellation) rather than a signal to compare.
  projection = np.random.default_rng(7).standard_normal((2, ids.shape[1], cfg.hidden_size)).astype(np.float32)

  def loss(params):
    out = model.apply({"params": params}, ids, np.ones_like(ids), segment_ids=segments, output_hidden_states=True)
    return jnp.sum(out.last_hidden_state * projection), out.hidden_states

  (_, states), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return states, grads


@pytest.mark.parametrize("remat", ["none", "full"])
def test_modernbert_hidden_states_and_gradients_match_both_ways(monkeypatch, remat):
  cfg = CFG.replace(remat_policy=remat)
  assert cfg.is_local_layer(1) and not cfg.is_local_layer(2)
  band_states, band_grads = _hidden_and_grads(cfg, monkeypatch, True)
  full_states, full_grads = _hidden_and_grads(cfg, monkeypatch, False)
  np.testing.assert_allclose(band_states, full_states, atol=ATOL)
  for (path, ours), ref in zip(jax.tree_util.tree_leaves_with_path(band_grads), jax.tree.leaves(full_grads)):
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=1e-4, err_msg=jax.tree_util.keystr(path))


def test_attention_maps_for_distillation_take_the_full_path():
  """return_probs needs the [l, l] probabilities: local layers record them with the window applied."""
  from bert_jax.models.model import collect_attention
  ids, segments = _packed_batch()
  model = EncoderModel(CFG)
  params = nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  out, state = model.apply({"params": params}, ids, segment_ids=segments, mutable=["intermediates"])
  probs = collect_attention(state["intermediates"], CFG)
  assert probs.shape == (4, 2, 2, 64, 64)
  far = np.abs(np.arange(64)[:, None] - np.arange(64)[None]) > CFG.local_attention // 2
  # Row 0 has no padding (padded queries see nothing and average every key, on both paths).
  assert np.all(np.asarray(probs[1, 0])[..., far] == 0) and np.any(np.asarray(probs[0, 0])[..., far] > 0)
  plain = model.apply({"params": params}, ids, segment_ids=segments)
  np.testing.assert_allclose(out.last_hidden_state, plain.last_hidden_state, atol=ATOL)


def test_scanning_mixed_local_and_global_layers_is_refused():
  with pytest.raises(ValueError, match="scan_layers"):
    build("bert", "tiny", local_attention=8, global_attn_every_n_layers=2, scan_layers=True)


def test_flops_count_the_band_of_local_layers():
  cfg = build("modernbert", "base")
  h, i = cfg.hidden_size, cfg.intermediate_size
  dense = 8 * h * h + 6 * h * i
  local = sum(cfg.is_local_layer(n) for n in range(cfg.num_layers))
  per_token = {n: cfg.num_layers * dense + 4 * h * ((cfg.num_layers - local) * n + local * min(n, 129))
               for n in (512, 8192)}
  head = 2 * h * h + 2 * h * cfg.vocab_size
  for length in (512, 8192):
    assert flops.train_flops(cfg, 1, length, 0) == pytest.approx(3 * length * per_token[length])
    assert flops.train_flops(cfg, 1, length, 10) == pytest.approx(3 * (length * per_token[length] + 10 * head))
