"""Knowledge distillation: attention maps out of the model, each loss against a slow numpy version,
the objective's gradient flow, and tiny end-to-end runs of objective distill_mlm.
"""

import gzip
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bert_jax import config_lib, optim, steps, train
from bert_jax.convert import layout
from bert_jax.convert.pretrained import export_hf, save_pretrained
from bert_jax.metrics import read_metrics
from bert_jax.models import build
from bert_jax.models.config import ModelConfig
from bert_jax.models.model import EncoderModel, collect_attention
from bert_jax.models.relative import DisentangledSelfAttention
from bert_jax.tasks.pretrain import distill_losses as losses
from bert_jax.tasks.pretrain import distillation as dist
from tests.conftest import REPO
from tests.test_relative_attention import slow_scores


def _softmax(x, axis=-1):
  x = x - x.max(axis=axis, keepdims=True)
  e = np.exp(x)
  return e / e.sum(axis=axis, keepdims=True)


def _inputs(batch=2, length=9, vocab=60, pad_from=6, seed=0):
  ids = np.random.default_rng(seed).integers(5, vocab, (batch, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, pad_from:] = 0
  return ids, mask


def _maps(model, params, ids, mask, **kw):
  out, state = model.apply({"params": params}, ids, mask, mutable=["intermediates"], output_hidden_states=True, **kw)
  return out, collect_attention(state["intermediates"], model.config), \
      collect_attention(state["intermediates"], model.config, "attention_values")


# Attention maps out of the model ------------------------------------------------------------------

def _project(p, x):
  return np.einsum("ble,ehd->blhd", x, np.asarray(p["kernel"])) + np.asarray(p["bias"])


def _hand_maps(layer_params, x, mask, head_dim):
  """softmax(Q K^T / sqrt(d)) with padded keys excluded, and V: [b, h, l, l], [b, l, h, d]."""
  attn = layer_params["attention"]["self"]
  q, k, v = (_project(attn[n], x) for n in ("query", "key", "value"))
  scores = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
  scores = np.where(mask[:, None, None, :].astype(bool), scores, -np.inf)
  return _softmax(scores), v


def test_bert_attention_probs_match_softmax_by_hand():
  cfg = build("bert", "tiny", vocab_size=60, num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64)
  ids, mask = _inputs()
  model = EncoderModel(cfg, head="mlm")
  params = nn.meta.unbox(model.init(jax.random.key(0), ids)["params"])
  out, probs, values = _maps(model, params, ids, mask)
  assert probs.shape == (2, 2, 4, 9, 9) and probs.dtype == jnp.float32
  assert values.shape == (2, 2, 9, 4, 8)
  for layer in range(2):
    x = np.asarray(out.hidden_states[layer], np.float64)  # the layer's input
    expected, v = _hand_maps(params["encoder"][f"layer_{layer}"], x, mask, cfg.dim_per_head)
    np.testing.assert_allclose(probs[layer], expected, atol=1e-5)
    np.testing.assert_allclose(values[layer], v, atol=1e-5)
  np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, atol=1e-5)
  assert np.all(np.asarray(probs)[:, 1, :, :, 6:] == 0.0), "padded keys get exactly zero probability"
  # Asking for the maps changes nothing else; not asking returns no collection at all.
  plain = model.apply({"params": params}, ids, mask, output_hidden_states=True)
  np.testing.assert_array_equal(plain.logits, out.logits)


def test_scanned_shared_and_remat_layers_give_the_same_maps():
  ids, mask = _inputs()
  cfg = build("bert", "tiny", vocab_size=60, hidden_size=32, num_heads=2, intermediate_size=64, num_layers=3)
  model = EncoderModel(cfg, head=None)
  params = nn.meta.unbox(model.init(jax.random.key(0), ids)["params"])
  _, reference, ref_values = _maps(model, params, ids, mask)
  for overrides in ({"scan_layers": True}, {"scan_layers": True, "remat_policy": "full"}, {"remat_policy": "dots"}):
    other = EncoderModel(cfg.replace(**overrides), head=None)
    p = layout.stack_layers(params) if overrides.get("scan_layers") else params
    _, probs, values = _maps(other, p, ids, mask)
    np.testing.assert_allclose(probs, reference, atol=1e-6, err_msg=str(overrides))
    np.testing.assert_allclose(values, ref_values, atol=1e-6, err_msg=str(overrides))


@pytest.mark.parametrize("share", ["all", "attention"])
def test_albert_shared_layers_report_every_applied_layer_in_order(share):
  extra = dict(num_hidden_groups=2, inner_group_num=2) if share == "all" else {}
  cfg = build("albert", "tiny", vocab_size=60, hidden_size=32, num_heads=2, intermediate_size=64, num_layers=3,
              embedding_size=16, share_layers=share, **extra)
  ids, mask = _inputs()
  model = EncoderModel(cfg, head=None)
  params = nn.meta.unbox(model.init(jax.random.key(0), ids)["params"])
  out, probs, _ = _maps(model, params, ids, mask)
  encoder = params["encoder"]
  if share == "all":  # 3 layers in 2 groups of 2: groups 0, 0, 1 -> blocks (0,0) (0,1) (0,0) (0,1) (1,0) (1,1)
    blocks = [encoder[f"group_{g}_layer_{k}"] for g in (0, 0, 1) for k in (0, 1)]
  else:
    blocks = [{"attention": encoder["shared_attention"]}] * 3
  assert probs.shape[0] == len(blocks) == out.hidden_states.shape[0] - 1
  for i, block in enumerate(blocks):
    expected, _ = _hand_maps(block, np.asarray(out.hidden_states[i], np.float64), mask, cfg.dim_per_head)
    np.testing.assert_allclose(probs[i], expected, atol=1e-5, err_msg=f"applied layer {i}")


@pytest.mark.parametrize("talking", [False, True])
def test_disentangled_attention_sows_its_probabilities(talking):
  cfg = ModelConfig(hidden_size=24, num_heads=3, attention_type="disentangled", dropout_rate=0.0,
                    attention_dropout_rate=0.0, max_position_embeddings=64, pos_att_type=("c2p", "p2c"),
                    max_relative_positions=6, talking_head=talking)
  rng = np.random.default_rng(1)
  length = 11
  x = rng.normal(size=(2, length, 24)).astype(np.float32)
  table = rng.normal(size=(2 * cfg.relative_span, 24)).astype(np.float32)
  keep = np.ones((2, length), bool)
  keep[1, 7:] = False
  module = DisentangledSelfAttention(cfg)
  relative = {"embeddings": table}
  params = nn.meta.unbox(module.init(jax.random.key(0), x, keep[:, None, None, :], relative=relative)["params"])
  params = jax.tree.map(lambda p: p + 0.3 * rng.normal(size=p.shape).astype(np.float32), params)
  context, state = module.apply({"params": params}, x, keep[:, None, None, :], relative=relative,
                                mutable=["intermediates"])
  probs = np.asarray(state["intermediates"]["attention_probs"][0])
  np.testing.assert_allclose(context, module.apply({"params": params}, x, keep[:, None, None, :], relative=relative),
                             atol=1e-6)
  proj = lambda name, inp: np.einsum("...e,ehd->...hd", inp, params[name]["kernel"]) + params[name]["bias"]
  scale = 1 / math.sqrt(cfg.dim_per_head * 3)
  for b in range(2):
    q, k = proj("query", x[b]), proj("key", x[b])
    scores = slow_scores(q, k, proj("pos_key", table), proj("pos_query", table), cfg, length) * scale
    if talking:
      scores = np.einsum("hqk,hg->gqk", scores, params["head_logits_proj"])
    expected = _softmax(np.where(keep[b][None, None, :], scores, -np.inf))
    if talking:  # recorded after the mixing, as the layer uses them
      expected = np.einsum("hqk,hg->gqk", expected, params["head_weights_proj"])
    np.testing.assert_allclose(probs[b], expected, atol=2e-5)


def test_deberta_scanned_and_unscanned_maps_agree():
  cfg = build("deberta", "tiny", vocab_size=60, hidden_size=32, num_heads=2, intermediate_size=64,
              position_buckets=8, max_relative_positions=32)
  ids, mask = _inputs()
  model = EncoderModel(cfg, head="mlm")
  params = nn.meta.unbox(model.init(jax.random.key(0), ids)["params"])
  _, probs, _ = _maps(model, params, ids, mask)
  _, scanned, _ = _maps(EncoderModel(cfg.replace(scan_layers=True), head="mlm"), layout.stack_layers(params), ids, mask)
  np.testing.assert_allclose(scanned, probs, atol=1e-6)
  valid = np.asarray(probs)[:, 1, :, :6]  # padded query rows attend uniformly (DeBERTa); valid ones do not
  np.testing.assert_allclose(valid.sum(-1), 1.0, atol=1e-5)
  assert np.all(valid[..., 6:] == 0.0)


# Losses against slow numpy versions ---------------------------------------------------------------

def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_soft_target_kl_by_hand():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(3, 4, 7)) * 3, rng.normal(size=(3, 4, 7)) * 3
  w = rng.uniform(size=(3, 4))
  w[1, 2] = 0.0
  for temp in (1.0, 2.0, 4.0):
    expected = 0.0
    for i in range(3):
      for j in range(4):
        p = np.exp(_log_softmax(t[i, j] / temp))
        kl = sum(p[v] * (np.log(p[v]) - _log_softmax(s[i, j] / temp)[v]) for v in range(7))
        expected += w[i, j] * temp ** 2 * kl
    ours = losses.soft_target_kl(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), temp, jnp.asarray(w))
    np.testing.assert_allclose(float(ours), expected, rtol=1e-5)
  # A zero weight drops its row entirely, whatever it holds.
  s2 = s.copy()
  s2[1, 2] += 100.0
  np.testing.assert_allclose(losses.soft_target_kl(s2, t, 2.0, w), losses.soft_target_kl(s, t, 2.0, w), rtol=1e-6)
  assert abs(float(losses.soft_target_kl(t, t, 2.0, w))) < 1e-5
  assert float(losses.soft_target_kl(s, t, 2.0)) > 0
  with pytest.raises(ValueError, match="vocabulary"):
    losses.soft_target_kl(s[..., :5], t, 2.0)


def test_hidden_mse_and_cosine_by_hand():
  rng = np.random.default_rng(1)
  s, t = rng.normal(size=(2, 5, 6)), rng.normal(size=(2, 5, 6))
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  mse = cos = 0.0
  for b in range(2):
    for i in range(5):
      mse += mask[b, i] * sum((s[b, i, h] - t[b, i, h]) ** 2 for h in range(6)) / 6
      cos += mask[b, i] * (1 - s[b, i] @ t[b, i] / (np.linalg.norm(s[b, i]) * np.linalg.norm(t[b, i])))
  np.testing.assert_allclose(losses.hidden_mse(s, t, mask), mse, rtol=1e-5)
  np.testing.assert_allclose(losses.cosine_embedding_loss(s, t, mask), cos, rtol=1e-5)
  assert abs(float(losses.hidden_mse(t, t, mask))) < 1e-9 and abs(float(losses.cosine_embedding_loss(t, t, mask))) < 1e-5
  with pytest.raises(ValueError, match="project"):
    losses.hidden_mse(s[..., :4], t, mask)


def _random_maps(rng, shape, mask):
  scores = rng.normal(size=shape) * 2
  return _softmax(np.where(mask[:, None, None, :].astype(bool), scores, -np.inf))


def test_attention_kl_by_hand():
  rng = np.random.default_rng(2)
  mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], np.float32)
  s, t = _random_maps(rng, (2, 3, 6, 6), mask), _random_maps(rng, (2, 3, 6, 6), mask)
  expected = 0.0
  for b in range(2):
    for i in range(6):
      if not mask[b, i]:
        continue
      per_head = [sum(t[b, h, i, j] * np.log(t[b, h, i, j] / s[b, h, i, j]) for j in range(6) if t[b, h, i, j] > 0)
                  for h in range(3)]
      expected += np.mean(per_head)
  np.testing.assert_allclose(losses.attention_kl(s, t, mask), expected, rtol=1e-5)
  # Masked queries do not count, whatever their rows hold; identical maps give 0, others more.
  s2 = s.copy()
  s2[1, :, 5] = np.roll(s2[1, :, 5], 1, axis=-1)
  np.testing.assert_allclose(losses.attention_kl(s2, t, mask), losses.attention_kl(s, t, mask), rtol=1e-6)
  assert abs(float(losses.attention_kl(t, t, mask))) < 1e-6 and float(losses.attention_kl(s, t, mask)) > 0
  grads = jax.grad(lambda x: losses.attention_kl(x, t, mask))(jnp.asarray(s, jnp.float32))
  assert np.all(np.isfinite(grads)), "zero probabilities at masked keys keep the gradient finite"
  with pytest.raises(ValueError, match="equal head counts"):
    losses.attention_kl(s[:, :2], t, mask)


def test_value_relation_by_hand():
  rng = np.random.default_rng(3)
  v = rng.normal(size=(2, 5, 3, 4))
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
  ours = np.asarray(losses.value_relation(v, mask))
  for b in range(2):
    for h in range(3):
      valid = mask[b].astype(bool)
      scores = v[b, :, h] @ v[b, :, h].T / 2.0
      expected = np.zeros((5, 5))
      expected[:, valid] = _softmax(scores[:, valid])
      np.testing.assert_allclose(ours[b, h], expected, atol=1e-6)


def test_distill_logits_sums_for_classification():
  rng = np.random.default_rng(4)
  s, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
  labels, w = np.array([0, 2, 1, 1, 0]), np.array([1, 1, 0, 1, 1], np.float32)
  out = losses.distill_logits_sums(s, t, labels, w, 3.0, 0.7, 0.3)
  ce = -sum(w[i] * _log_softmax(s[i])[labels[i]] for i in range(5))
  kd = float(losses.soft_target_kl(s, t, 3.0, w))
  np.testing.assert_allclose(out["hard_loss"], ce, rtol=1e-5)
  np.testing.assert_allclose(out["kd_loss"], kd, rtol=1e-6)
  np.testing.assert_allclose(out["distill_loss"], 0.7 * kd + 0.3 * ce, rtol=1e-5)
  assert float(out["distill_count"]) == 4.0
  assert float(out["hard_correct"]) == sum(w[i] * (np.argmax(s[i]) == labels[i]) for i in range(5))
  # Gradients reach the student's logits only.
  gs, gt = jax.grad(lambda a, b: losses.distill_logits_sums(a, b, labels, w, 3.0, 0.7, 0.3)["distill_loss"],
                    argnums=(0, 1))(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32))
  assert np.abs(gs).sum() > 0 and np.abs(gt).sum() == 0


# The objective ------------------------------------------------------------------------------------

TEACHER = dict(vocab_size=60, hidden_size=32, num_heads=2, intermediate_size=64, num_layers=2,
               max_position_embeddings=32)


def _distill(**alphas):
  d = config_lib.base_config().distill
  for name in dist.LOSSES:
    d[f"alpha_{name}"] = float(alphas.get(name, 0.0))
  return d


def _teacher(**overrides):
  cfg = build("bert", "tiny", **{**TEACHER, **overrides})
  model = EncoderModel(cfg, head="mlm")
  return model, nn.meta.unbox(model.init(jax.random.key(7), jnp.zeros((1, 8), jnp.int32))["params"])


def _batch(batch=4, length=12, seed=0):
  ids, mask = _inputs(batch, length, pad_from=8, seed=seed)
  positions = np.tile(np.array([1, 3, 5], np.int32), (batch, 1))
  weights = np.ones(positions.shape, np.float32)
  weights[2, 2] = 0.0
  return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
          "masked_positions": positions, "masked_ids": np.take_along_axis(ids, positions, 1),
          "masked_weights": weights}


ALL = dict(kd=1.0, mlm=0.5, cosine=0.3, hidden=0.2, attention=1.0, value=1.0)


def test_teacher_batch_adds_the_enabled_outputs_only():
  teacher = _teacher()
  student = teacher[0].config.replace(hidden_size=16, intermediate_size=32, num_layers=1)
  batch = _batch()
  full = dist.DistillationObjective(student, _distill(**ALL), teacher=teacher).prepare_batch(batch)
  assert full["teacher_logits"].shape == (4, 3, 60)
  assert full["teacher_hidden"].shape == (4, 12, 32)
  assert full["teacher_attention"].shape == full["teacher_values"].shape == (4, 2, 12, 12)
  only_kd = dist.DistillationObjective(student, _distill(kd=1.0), teacher=teacher).prepare_batch(batch)
  assert set(only_kd) - set(batch) == {"teacher_logits"}
  first = dist.DistillationObjective(student, _distill(hidden=1.0, attention=1.0, **{"kd": 0.0}), teacher=teacher)
  first.teacher_layer = 1
  layer1 = first.prepare_batch(batch)
  out, probs, _ = _maps(teacher[0], teacher[1], batch["input_ids"], batch["attention_mask"])
  np.testing.assert_allclose(layer1["teacher_hidden"], out.hidden_states[1], atol=1e-6)
  np.testing.assert_allclose(layer1["teacher_attention"], probs[0], atol=1e-6)


def test_config_errors_are_clear():
  teacher = _teacher()
  cfg = teacher[0].config
  with pytest.raises(ValueError, match="share the vocabulary"):
    dist.DistillationObjective(cfg.replace(vocab_size=61), _distill(kd=1.0), teacher=teacher)
  with pytest.raises(ValueError, match="equal head counts"):
    dist.DistillationObjective(cfg.replace(num_heads=4), _distill(attention=1.0), teacher=teacher)
  with pytest.raises(ValueError, match="talking-heads"):
    dist.DistillationObjective(cfg.replace(talking_head=True), _distill(attention=1.0), teacher=teacher)
  with pytest.raises(ValueError, match="at least one"):
    dist.DistillationObjective(cfg, _distill(), teacher=teacher)
  with pytest.raises(ValueError, match="distill.teacher is empty"):
    dist.DistillationObjective(cfg, _distill(kd=1.0))


def _init(objective, batch):
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(0)}
  return nn.meta.unbox(objective.init(rngs, jnp.asarray(batch["input_ids"][:1])))


def test_losses_vanish_when_the_student_is_the_teacher():
  teacher = _teacher()
  cfg = teacher[0].config.replace(dropout_rate=0.0, attention_dropout_rate=0.0)
  objective = dist.DistillationObjective(cfg, _distill(**ALL), teacher=teacher)
  batch = objective.prepare_batch(_batch())
  assert not objective.needs_projection
  sums = objective.sums(teacher[1], batch, jax.random.key(1))
  for name in ("kd", "cosine", "hidden", "attention", "value"):
    assert abs(float(sums[f"{name}_loss"])) < 1e-4, name
  other = objective.sums(_init(objective, batch), batch, jax.random.key(1))
  for name in ("kd", "cosine", "hidden", "attention", "value"):
    assert float(other[f"{name}_loss"]) > 1e-3, name


@pytest.mark.parametrize("scan", [False, True])
def test_train_step_moves_the_student_only_and_accumulates_exactly(scan):
  teacher = _teacher()
  teacher_before = jax.tree.map(np.array, teacher[1])
  cfg = teacher[0].config.replace(hidden_size=16, intermediate_size=32, num_layers=1, scan_layers=scan,
                                  dropout_rate=0.0, attention_dropout_rate=0.0)
  objective = dist.DistillationObjective(cfg, _distill(**ALL), teacher=teacher)
  batch = objective.prepare_batch(_batch())
  params = _init(objective, batch)
  assert dist.PROJECTION in params and dist.PROJECTION not in objective.student_params(params)
  grads = jax.grad(lambda p: objective.loss(objective.sums(p, batch, None), objective.totals(batch)))(params)
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert np.abs(grads[dist.PROJECTION]["kernel"]).sum() > 0
  assert np.abs(grads["embeddings"]["word_embeddings"]["embedding"]).sum() > 0
  opt = ml_collections.ConfigDict(config_lib.base_config().optimizer.to_dict())
  tx, schedule = optim.make_optimizer(opt, 10, params, cfg.num_layers)
  losses = []
  for accum in (1, 2):
    state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                             rng=jax.random.key_data(jax.random.key(0)), skipped=jnp.zeros((), jnp.int32))
    step = jax.jit(lambda s, b, a=accum: steps.train_step(s, b, objective=objective, tx=tx, schedule=schedule,
                                                          accum_steps=a))
    _, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
    assert {"kd_loss", "mlm_loss", "cosine_loss", "hidden_loss", "attention_loss", "value_loss"} <= set(metrics)
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, teacher_before, jax.tree.map(np.array, objective.teacher_params))


def test_init_student_from_teacher_picks_spread_layers():
  assert dist.teacher_layers_for(6, 12) == [0, 2, 4, 7, 9, 11]
  assert dist.teacher_layers_for(3, 3) == [0, 1, 2]
  teacher = _teacher(num_layers=4)
  cfg = teacher[0].config.replace(num_layers=2, scan_layers=True)
  student = nn.meta.unbox(EncoderModel(cfg, head="mlm").init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))["params"])
  student[dist.PROJECTION] = {"kernel": np.ones((2, 2), np.float32)}
  out = dist.init_student_from_teacher(student, cfg, teacher[1], teacher[0].config)
  layers = layout.unstack_layers(out)["encoder"]
  for i, source in enumerate([0, 3]):
    jax.tree.map(np.testing.assert_array_equal, layers[f"layer_{i}"], teacher[1]["encoder"][f"layer_{source}"])
  np.testing.assert_array_equal(out["embeddings"]["word_embeddings"]["embedding"],
                                teacher[1]["embeddings"]["word_embeddings"]["embedding"])
  np.testing.assert_array_equal(out[dist.PROJECTION]["kernel"], 1.0)
  with pytest.raises(ValueError, match="teacher .* vs student"):
    narrow = cfg.replace(hidden_size=16, intermediate_size=32)
    params = nn.meta.unbox(EncoderModel(narrow, head="mlm").init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32)))
    dist.init_student_from_teacher(params["params"], narrow, teacher[1], teacher[0].config)


# End to end ---------------------------------------------------------------------------------------

RUN_TEACHER = dict(vocab_size=8192, hidden_size=32, num_heads=2, intermediate_size=64, num_layers=2,
                   max_position_embeddings=64)


@pytest.fixture(scope="module")
def run_setup(tmp_path_factory):
  """A slice of the bundled corpus, and a tiny random BERT teacher saved both ways."""
  root = tmp_path_factory.mktemp("distill")
  with gzip.open(REPO / "data" / "austen.txt.gz", "rt", encoding="utf-8") as f:
    documents = f.read().strip("\n").split("\n\n")[:12]
  corpus = root / "small.txt"
  corpus.write_text("\n\n".join("\n".join(d.split("\n")[:12]) for d in documents) + "\n", encoding="utf-8")
  model, params = _teacher(**RUN_TEACHER)
  save_pretrained(str(root / "teacher_bert_jax"), model, params)
  export_hf(str(root / "teacher_hf"), model, params)
  return {"root": root, "corpus": str(corpus), "teacher_cfg": model.config}


def _run_config(setup, student: ModelConfig, teacher: str, **distill):
  c = config_lib.base_config()
  c.model = config_lib.model_section(student)
  c.objective = "distill_mlm"
  c.total_steps, c.batch_size, c.log_every, c.eval_every, c.eval_steps = 3, 8, 1, 0, 1
  c.checkpoint_every = 100
  c.data.train, c.data.validation_documents = setup["corpus"], 2
  c.data.cache_dir = str(setup["root"] / "cache")
  c.data.max_length, c.data.max_predictions = 32, 5
  c.optimizer.warmup_steps = 1
  c.distill.teacher = teacher
  for key, value in distill.items():
    c.distill[key] = value
  return c


def test_distill_mlm_run_logs_finite_distillation_terms(run_setup, tmp_path):
  student = run_setup["teacher_cfg"].replace(hidden_size=16, intermediate_size=32, num_layers=1, scan_layers=True)
  config = _run_config(run_setup, student, str(run_setup["root"] / "teacher_bert_jax"),
                       **{f"alpha_{k}": v for k, v in ALL.items()})
  config.batch_size = 16
  config.optimizer.grad_accum_steps = 2
  train.train_and_evaluate(config, str(tmp_path))
  records = read_metrics(tmp_path)
  trains = [r for r in records if "train/loss" in r]
  assert [r["step"] for r in trains] == [1, 2, 3]
  for name in ("loss", "kd_loss", "mlm_loss", "cosine_loss", "hidden_loss", "attention_loss", "value_loss"):
    assert all(np.isfinite(r[f"train/{name}"]) for r in trains), name
  evals = [r for r in records if "eval/loss" in r]
  assert evals and all(np.isfinite(evals[-1][f"eval/{k}"]) for k in ("loss", "kd_loss", "attention_loss"))


def test_student_equal_to_the_teacher_starts_at_zero_kd_loss(run_setup, tmp_path):
  student = run_setup["teacher_cfg"].replace(dropout_rate=0.0, attention_dropout_rate=0.0, scan_layers=True)
  config = _run_config(run_setup, student, str(run_setup["root"] / "teacher_hf"), alpha_kd=1.0, alpha_mlm=0.0,
                       alpha_cosine=0.0, init_from_teacher=True)
  config.total_steps = 1
  train.train_and_evaluate(config, str(tmp_path))
  first = next(r for r in read_metrics(tmp_path) if "train/loss" in r)
  assert first["step"] == 1 and abs(first["train/loss"]) < 1e-5 and abs(first["train/kd_loss"]) < 1e-5
  assert first["train/mlm_loss"] > 1.0, "the hard MLM loss is logged, just not trained on"
