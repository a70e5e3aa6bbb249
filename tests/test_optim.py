"""Optimizer pieces against hand computations; gradient accumulation against one big step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax import config_lib, optim, steps
from bert_jax.models import build
from bert_jax.tasks.pretrain.mlm import MLMObjective


def opt_config(**kw):
  c = config_lib.base_config().optimizer
  c.update(kw)
  return c


@pytest.mark.parametrize("schedule,at_60", [("linear", 0.5), ("cosine", 0.5), ("constant", 1.0),
                                            ("polynomial", 0.25)])
def test_schedules_by_hand(schedule, at_60):
  lr = optim.learning_rate_schedule(opt_config(learning_rate=1.0, warmup_steps=20, schedule=schedule,
                                               end_learning_rate=0.0, power=2.0), total_steps=100)
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(float(lr(10)), 0.5, rtol=1e-6)    # halfway through warmup
  np.testing.assert_allclose(float(lr(20)), 1.0, rtol=1e-6)    # peak
  np.testing.assert_allclose(float(lr(60)), at_60, rtol=1e-5)  # halfway through the decay
  assert float(lr(100)) == pytest.approx(0.0 if schedule != "constant" else 1.0, abs=1e-6)


def test_warmup_stable_decay_by_hand():
  """ModernBERT's trapezoid: warmup, the peak until the last decay_ratio of the steps, then 1 - sqrt."""
  lr = optim.learning_rate_schedule(opt_config(learning_rate=2.0, warmup_steps=10, schedule="wsd", decay_ratio=0.2,
                                               end_learning_rate=0.5), total_steps=100)
  np.testing.assert_allclose(float(lr(5)), 1.0, rtol=1e-6)
  for step in (10, 50, 80):
    np.testing.assert_allclose(float(lr(step)), 2.0, rtol=1e-6)
  np.testing.assert_allclose(float(lr(90)), 0.5 + 1.5 * (1 - np.sqrt(0.5)), rtol=1e-6)
  np.testing.assert_allclose(float(lr(100)), 0.5, rtol=1e-6)
  with pytest.raises(ValueError, match="decay_ratio"):
    optim.learning_rate_schedule(opt_config(schedule="wsd", decay_ratio=1.5), total_steps=100)


def test_warmup_ratio_overrides_steps():
  lr = optim.learning_rate_schedule(opt_config(learning_rate=1.0, warmup_steps=1000, warmup_ratio=0.1,
                                               schedule="constant"), total_steps=200)
  np.testing.assert_allclose(float(lr(10)), 0.5, rtol=1e-6)


def test_weight_decay_spares_layernorm_and_biases():
  params = {"encoder": {"layer_0": {"mlp": {"wi": {"kernel": 1, "bias": 1}, "norm": {"scale": 1, "bias": 1}}}},
            "embeddings": {"word_embeddings": {"embedding": 1}}}
  mask = optim.weight_decay_mask(params)
  assert mask["encoder"]["layer_0"]["mlp"]["wi"] == {"kernel": True, "bias": False}
  assert mask["encoder"]["layer_0"]["mlp"]["norm"] == {"scale": False, "bias": False}
  assert mask["embeddings"]["word_embeddings"]["embedding"] is True


def test_layerwise_decay_factors_scanned_and_unscanned():
  layers = 3
  unscanned = {"embeddings": {"w": jnp.ones(2)}, "encoder": {f"layer_{i}": {"w": jnp.ones(2)} for i in range(3)},
               "mlm": {"w": jnp.ones(2)}}
  scanned = {"embeddings": {"w": jnp.ones(2)}, "encoder": {"layers": {"w": jnp.ones((3, 2))}}, "mlm": {"w": jnp.ones(2)}}
  tx = lambda p: optim.make_optimizer(opt_config(name="adamw", layerwise_lr_decay=0.5, weight_decay=0.0,
                                                 clip_norm=0.0, warmup_steps=0, schedule="constant",
                                                 learning_rate=1.0), 10, p, layers)[0]
  for params in (unscanned, scanned):
    opt = tx(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = opt.update(grads, opt.init(params), params)
    # Adam's first step is -lr * sign(g); LLRD multiplies by 0.5 ** (layers + 1 - depth).
    assert float(updates["mlm"]["w"][0]) == pytest.approx(-1.0, rel=1e-4)
    assert float(updates["embeddings"]["w"][0]) == pytest.approx(-(0.5 ** 4), rel=1e-4)
    per_layer = ([updates["encoder"][f"layer_{i}"]["w"][0] for i in range(3)] if "layer_0" in params["encoder"]
                 else list(updates["encoder"]["layers"]["w"][:, 0]))
    np.testing.assert_allclose(per_layer, [-(0.5 ** 3), -(0.5 ** 2), -0.5], rtol=1e-4)


def mlm_batch(rng, rows: int) -> dict:
  """Random MLM inputs of [rows, 16] tokens (vocabulary 64) with 3 masked positions a row, no weights."""
  return {"input_ids": rng.integers(5, 64, (rows, 16)).astype(np.int32), "attention_mask": np.ones((rows, 16), np.int32),
          "token_type_ids": np.zeros((rows, 16), np.int32),
          "masked_positions": rng.integers(1, 16, (rows, 3)).astype(np.int32),
          "masked_ids": rng.integers(5, 64, (rows, 3)).astype(np.int32)}


@pytest.mark.parametrize("scale", [0.1, 10.0])  # under and over the limit
def test_clipping_matches_optax_and_uses_the_norm_it_is_given(scale):
  rng = np.random.default_rng(0)
  grads = {"a": jnp.asarray(rng.normal(size=(5, 3)) * scale, jnp.float32),
           "b": jnp.asarray(rng.normal(size=(7,)) * scale, jnp.float32)}
  want, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
  clip = optim.clip_by_global_norm(1.0)
  for got in (clip.update(grads, optax.EmptyState())[0],
              clip.update(grads, optax.EmptyState(), grad_norm=optax.tree.norm(grads))[0]):
    jax.tree.map(lambda g, w: np.testing.assert_array_equal(np.asarray(g), np.asarray(w)), got, want)
  # A given norm is the one used: twice the true norm halves a clipped update.
  norm = float(np.sqrt(sum(np.sum(np.asarray(v, np.float64) ** 2) for v in grads.values())))
  doubled, _ = clip.update(grads, optax.EmptyState(), grad_norm=jnp.float32(2 * norm))
  expect = 1.0 / (2 * norm) if 2 * norm >= 1.0 else 1.0
  np.testing.assert_allclose(np.asarray(doubled["a"]), np.asarray(grads["a"]) * expect, rtol=1e-6)


def test_gradient_accumulation_equals_one_big_batch():
  cfg = build("bert", "tiny", vocab_size=64, num_layers=1, dropout_rate=0.0, attention_dropout_rate=0.0)
  objective = MLMObjective(cfg, with_pair=True)
  rng = np.random.default_rng(0)
  batch = {**mlm_batch(rng, 8), "masked_weights": (rng.random((8, 3)) > 0.3).astype(np.float32),
           "pair_labels": rng.integers(0, 2, (8,)).astype(np.int32)}
  from flax import linen as nn
  params = nn.meta.unbox(objective.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                        jnp.zeros((1, 16), jnp.int32)))
  tx = optax.sgd(0.1)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                           rng=jax.random.key_data(jax.random.key(1)), skipped=jnp.zeros((), jnp.int32))
  run = lambda k: jax.jit(functools.partial(steps.train_step, objective=objective, tx=tx,
                                            schedule=optax.constant_schedule(0.1), accum_steps=k))(state, batch)
  one, m1 = run(1)
  four, m4 = run(4)
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), one.params, four.params)


def test_a_non_finite_step_leaves_params_and_moments_bit_identical_per_seed():
  """The update runs in a branch (one seed) or a per-seed select (vmapped seeds): a seed whose loss is
  not finite keeps every parameter and Adam moment exactly; the finite one moves as a lone step does."""
  cfg = build("bert", "tiny", vocab_size=64, num_layers=1, dropout_rate=0.0, attention_dropout_rate=0.0)
  objective = MLMObjective(cfg, with_pair=False)
  rng = np.random.default_rng(3)
  batch = {**mlm_batch(rng, 4), "masked_weights": np.ones((4, 3), np.float32)}
  from flax import linen as nn
  params = nn.meta.unbox(objective.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                        jnp.zeros((1, 16), jnp.int32)))
  tx = optax.adamw(1e-2, eps=1.0)  # eps 1: the step is ~lr * g, so rounding in g stays rounding in the step
  state = lambda p: steps.TrainState(step=jnp.ones((), jnp.int32), params=p, opt_state=tx.init(p),
                                     rng=jax.random.key_data(jax.random.key(1)), skipped=jnp.zeros((), jnp.int32))
  poisoned = jax.tree.map(lambda x: x, params)
  poisoned["embeddings"]["position_embeddings"]["embedding"] = (
      params["embeddings"]["position_embeddings"]["embedding"].at[2, 0].set(jnp.nan))
  step = functools.partial(steps.train_step, objective=objective, tx=tx, schedule=optax.constant_schedule(1e-2))
  good, good_metrics = jax.jit(step)(state(params), batch)
  bad, bad_metrics = jax.jit(step)(state(poisoned), batch)
  assert int(good_metrics["nonfinite"]) == 0 and int(bad_metrics["nonfinite"]) == 1
  assert int(bad.skipped) == 1 and int(bad.step) == 2
  same = lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  jax.tree.map(same, bad.params, poisoned)
  jax.tree.map(same, bad.opt_state, tx.init(poisoned))
  assert not np.array_equal(good.params["encoder"]["layer_0"]["mlp"]["wi"]["kernel"],
                            params["encoder"]["layer_0"]["mlp"]["wi"]["kernel"])
  # Two seeds under vmap, one of them poisoned: each does what it did alone.
  stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), state(params), state(poisoned))
  both, metrics = jax.jit(jax.vmap(step, in_axes=(0, None)))(stacked, batch)
  assert metrics["nonfinite"].tolist() == [0, 1]
  jax.tree.map(lambda s, one: np.testing.assert_allclose(s[0], one, rtol=1e-6, atol=1e-8), both.params, good.params)
  jax.tree.map(lambda s, one: same(s[1], one), both.params, poisoned)
  jax.tree.map(lambda s, one: same(s[1], one), both.opt_state, tx.init(poisoned))
