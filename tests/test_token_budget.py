"""Token-budget training steps: the plan covers each example once per epoch within the budget, and a
budget step's loss and gradients are those of its real examples as an ordinary padded batch.

References: a hand-checked first-fit of every planned micro-batch; for every task, the objective on
the same examples padded to rows of their own (no packing, no padding examples), 1e-5; for the run,
the fixed-count packed run a budget that never binds must reproduce step for step.
"""

from __future__ import annotations

import collections
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import finetune
from bert_jax.data import batching, packing
from bert_jax.data.token_budget import TokenBudget, auto_budget
from bert_jax.data.tokenizers import load_tokenizer
from bert_jax.metrics import read_metrics
from bert_jax.tasks import registry

from tests import run_goldens
from tests.test_align import _synthetic
from tests.test_configs import load_config
from tests.test_finetune import tiny_config
from tests.test_packing import _numbers, _pairs_classification


# The plan ---------------------------------------------------------------------------------------

def _random_lengths(n=300, groups=1, seed=0, low=3, high=60):
  return np.random.default_rng(seed).integers(low, high, size=(n, groups))


@pytest.mark.parametrize("groups,parts,group_by_length", [(1, 1, False), (1, 2, True), (3, 1, True)])
def test_each_epoch_takes_every_example_once_within_the_budget(groups, parts, group_by_length):
  lengths = _random_lengths(groups=groups)
  budget = TokenBudget({"": lengths}, seed=3, row_length=64, rows=4 * parts, examples=8 * parts, parts=parts,
                       group_by_length=group_by_length)
  ends = [0, budget.steps_for_epochs(1), budget.steps_for_epochs(2)]
  for epoch in range(2):
    seen = []
    for step in range(ends[epoch] + 1, ends[epoch + 1] + 1):
      micro = budget.step(step)
      assert len(micro) == parts
      for indices in micro:
        assert len(indices) <= 8
        if len(indices):  # the hand check: every planned micro-batch's sequences first-fit into 4 rows
          assert packing.first_fit(lengths[indices].reshape(-1), 64)[2] <= 4
        seen.extend(indices.tolist())
    assert sorted(seen) == list(range(len(lengths))), f"epoch {epoch}"
  assert budget.mean_examples(ends[2]) == pytest.approx(len(lengths) / ends[1] * 2 * ends[1] / ends[2])


@pytest.mark.parametrize("groups,parts,examples", [(1, 1, 8), (3, 2, 3)])
def test_each_micro_batch_stops_where_the_next_example_would_not_fit(groups, parts, examples):
  """Greedy in epoch order: a micro-batch ends at the count, or where packing.first_fit of it and
  the next example needs more rows (or tokens) than the budget, for every packed input."""
  lengths = {"a_": _random_lengths(groups=groups, seed=1, high=40), "p_": _random_lengths(seed=2, low=10)}
  rows, row_length = 4, 64
  budget = TokenBudget(lengths, seed=5, row_length=row_length, rows=rows * parts, examples=examples * parts,
                       parts=parts)
  micro = [m for s in range(1, budget.steps_for_epochs(1) + 1) for m in budget.step(s) if len(m)]
  fits = lambda indices: all(v[indices].sum() <= rows * row_length and
                             packing.first_fit(v[indices].reshape(-1), row_length)[2] <= rows for v in lengths.values())
  stops = collections.Counter()
  for current, following in zip(micro, micro[1:]):
    assert fits(current)
    full = len(current) == examples
    assert full or not fits(np.append(current, following[0])), (current, following[0])
    stops["count" if full else "rows"] += 1
  assert stops["count"] and stops["rows"]  # both rules end micro-batches here


def test_the_plan_is_a_pure_function_of_seed_and_a_budget_binds():
  lengths = _random_lengths()
  plan = lambda seed: [np.concatenate(TokenBudget({"": lengths}, seed, 64, 3, 16).step(s)) for s in range(1, 30)]
  assert all(np.array_equal(a, b) for a, b in zip(plan(1), plan(1)))
  assert not all(np.array_equal(a, b) for a, b in zip(plan(1), plan(2)))
  # 3 rows of 64 tokens hold ~6 examples of mean length ~31: the token budget, not the count of 16, binds.
  assert 3 < TokenBudget({"": lengths}, 1, 64, 3, 16).mean_examples(30) < 8


def test_fractional_epochs_and_a_step_past_the_planned_epochs():
  budget = TokenBudget({"": _random_lengths()}, 0, 64, 4, 8)
  one, two = budget.steps_for_epochs(1), budget.steps_for_epochs(2)
  assert budget.steps_for_epochs(1.5) == one + round((two - one) / 2)
  assert len(np.concatenate(budget.step(3 * two))) > 0  # planned as the run reaches it


def test_an_example_beyond_one_micro_batch_is_named():
  lengths = {"a_": np.array([[5], [9]]), "p_": np.array([[4], [30]])}
  with pytest.raises(ValueError, match=r"training example 1 \(9 tokens in a, 30 tokens in p\).*tokens_per_batch"):
    TokenBudget(lengths, 0, row_length=16, rows=1, examples=4)
  with pytest.raises(ValueError, match="does not split into 2 micro-batches"):
    TokenBudget({"": np.array([[3]])}, 0, 16, rows=3, examples=4, parts=2)


# The objectives ---------------------------------------------------------------------------------

def _align_data(root):
  return _synthetic(root, np.random.default_rng(0))


# case -> (task, data, overrides)
CASES = {
    "classify": ("classify", run_goldens.sentiment_without_test, {}),
    "classify-pairs-mean-pooling": ("classify", _pairs_classification, {"pooling": "mean"}),
    "regress": ("regress", run_goldens.sentiment_without_test, {}),
    "tag": ("tag", run_goldens.tagging, {}),
    "qa": ("qa", run_goldens.squad, {"data.max_length": 64, "data.doc_stride": 16, "data.max_query_length": 16}),
    "contrastive-with-negatives": ("contrastive", run_goldens.pairs, {}),
    "contrastive-mean-pooling": ("contrastive", run_goldens.pairs, {"pooling": "mean"}),
    "rerank-listwise": ("rerank", run_goldens.ranking, {"data.max_length": 64}),
    "rerank-pointwise": ("rerank", run_goldens.ranking, {"data.max_length": 64, "rerank_loss": "pointwise"}),
    "align": ("align", _align_data, {"data.max_length": 32}),
}


def _task(case, root):
  """-> (task, training set, objective, its params) of a tiny random model without dropout."""
  name, data, extra = CASES[case]
  files = data(root)
  values = {"data.train": files["train"], "data.validation": files["dev"], **extra}
  if name == "align":
    values["data.vectors"] = files["vectors"]
  config = tiny_config(name, **values)
  config.model.dropout_rate = config.model.attention_dropout_rate = 0.0
  spec = registry.get(name, registry.FINETUNE)
  base_cfg, _, tokenizer_dir, _ = finetune.backbone(config, spec.cls.head)
  config.pooling = finetune.resolve_pooling(config, base_cfg)
  task = spec.cls(config, load_tokenizer(tokenizer_dir))
  train = task.load(config.data.train, "train", None)
  cfg = task.model_config(base_cfg, train.labels)
  objective = task.objective(cfg, train.labels)
  ids = jnp.ones((1, 16), jnp.int32)
  params = nn.meta.unbox(objective.init({"params": jax.random.key(1), "dropout": jax.random.key(2)}, ids))
  return task, config, train, objective, params, cfg


@pytest.mark.parametrize("case", list(CASES))
def test_a_budget_step_computes_what_its_real_examples_compute_padded(case, tmp_path):
  task, config, train, objective, params, cfg = _task(case, tmp_path)
  width = config.data.max_length
  lengths = {p: packing.sequence_lengths(train.arrays, p) for p in task.packed_inputs
             if f"{p}input_ids" in train.arrays}
  # Rows as long as the longest sequence, for about two of the longest examples: several real examples a
  # step, and padding ones after them.
  row_length = int(max(v.max() for v in lengths.values()))
  rows = 2 * max(packing.first_fit(v.reshape(len(train), -1)[i], row_length)[2]
                 for v in lengths.values() for i in range(len(train)))
  budget = TokenBudget(lengths, seed=0, row_length=row_length, rows=rows, examples=8,
                       keep=task.example_tokens(cfg))

  def take(indices):
    return task.train_arrays(batching.take(train, indices, width))

  step = next(s for s in range(1, 40) if 2 <= len(budget.step(s)[0]) < 8)
  indices = budget.step(step)[0]
  packed, padded = budget.arrays(step, take), take(indices)
  assert packed["example_weights"].tolist() == [1.0] * len(indices) + [0.0] * (8 - len(indices))

  def mean_loss(params, batch):
    sums = objective.sums(params, batch, None)
    return sums["task_loss"] / sums["task_count"], sums

  results = []
  # The same examples padded in the reverse order: the same loss, other rounding. Its spread from the
  # padded gradients is the reference's own float32 noise, which ill-conditioned gradients make large
  # (contrastive with CLS pooling on a random model: near-parallel embeddings, ~1% of a leaf's largest).
  for batch in (packed, padded, take(indices[::-1])):
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    (_, sums), grads = jax.value_and_grad(mean_loss, has_aux=True)(params, batch)
    totals = objective.totals(batch)
    results.append((jax.device_get(sums), jax.device_get(grads), jax.device_get(totals)))
  (sums, grads, totals), (want_sums, want_grads, want_totals), (_, reordered, _) = results
  assert sums.keys() == want_sums.keys() and totals.keys() == want_totals.keys()
  for key in want_sums:
    np.testing.assert_allclose(sums[key], want_sums[key], rtol=1e-5, atol=1e-6, err_msg=key)
  for key in want_totals:
    np.testing.assert_allclose(totals[key], want_totals[key], rtol=1e-6, err_msg=key)
  assert float(want_sums["task_count"]) > 0
  flat, want_flat = jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(want_grads)
  for (path, got), want, other in zip(flat, want_flat, jax.tree_util.tree_leaves(reordered)):
    noise = float(np.abs(np.asarray(other) - want).max())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=max(1e-6, 4 * noise), err_msg=jax.tree_util.keystr(path))


# The run ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [{"seeds": 2}, {"optimizer.grad_accum_steps": 2, "batch_size": 16}])
def test_a_budget_that_never_binds_reproduces_the_fixed_count_run(extra, tmp_path):
  """Ungrouped, with room for every batch: each step holds batch_size examples in epoch order, as the
  fixed-count packed run's steps do (in rows of another count), so every loss and metric matches."""
  files = run_goldens.sentiment_without_test(tmp_path)
  values = {"data.train": files["train"], "data.validation": files["dev"], "total_steps": 4, "eval_every": 2,
            "batch_size": 8, "eval_batch_size": 8, "data.group_by_length": False, **extra}
  runs = {}
  for tokens in (0, 16 * 64):
    config = tiny_config("classify", **{**values, "data.tokens_per_batch": tokens})
    config.model.dropout_rate = config.model.attention_dropout_rate = 0.0
    finetune.finetune_and_evaluate(config, str(tmp_path / str(tokens)))
    runs[tokens] = _numbers(tmp_path / str(tokens))
  assert sorted(runs[0]) == sorted(runs[16 * 64]) and any(k.startswith("eval/") for _, k in runs[0])
  for (step, key), want in runs[0].items():
    np.testing.assert_allclose(runs[16 * 64][(step, key)], want, rtol=1e-5, atol=1e-5, err_msg=f"step {step} {key}")


def test_a_binding_budget_trains_an_epoch_of_every_example_and_reports_them(tmp_path, capsys):
  files = run_goldens.sentiment_without_test(tmp_path)
  config = tiny_config("classify", **{"data.train": files["train"], "data.validation": files["dev"],
                                      "num_epochs": 1.0, "batch_size": 32, "data.tokens_per_batch": 8 * 64,
                                      "eval_every": 0})  # 8 rows: one per (fake) device
  finetune.finetune_and_evaluate(config, str(tmp_path / "run"))
  out = capsys.readouterr().out
  assert "batch 8 rows of 64 tokens" in out and "of at most 32 examples" in out
  lines = [m for m in read_metrics(str(tmp_path / "run")) if "perf/examples_per_sec" in m]
  rows = sum(1 for _ in open(files["train"], encoding="utf-8")) - 1
  # Examples per step (examples/s over steps/s) times the epoch's steps: every training example once.
  per_step = lines[-1]["perf/examples_per_sec"] / lines[-1]["perf/steps_per_sec"]
  assert per_step < 32 and per_step * lines[-1]["step"] == pytest.approx(rows, rel=1e-6)
  assert all(np.isfinite(m["train/loss"]) for m in lines)


@pytest.mark.parametrize("multiple", [1, 4])
def test_the_auto_budget_averages_the_batch(multiple):
  lengths = {"": _random_lengths(n=400, seed=4)}
  make = lambda seed, rows, examples: TokenBudget(lengths, seed, 64, rows, examples, group_by_length=True)
  rows, examples = auto_budget(lengths, 64, batch=16, seed=0, multiple=multiple, group_by_length=True)
  assert examples == -(-24 // multiple) * multiple and rows % multiple == 0

  def average(rows):
    budget = make(0, rows, examples)
    return budget.mean_examples(budget.steps_for_epochs(1))
  # The chosen rows straddle the batch with a neighbour and are the closer of the two.
  below, at, above = average(rows - multiple), average(rows), average(rows + multiple)
  assert below < 16 <= above and abs(at - 16) <= min(16 - below, above - 16) + 1e-9


@pytest.mark.parametrize("case", ["classify", "tag", "qa", "rerank-listwise"])
def test_the_default_recipe_runs_auto_budget_steps_of_the_batch_on_average(case, tmp_path, capsys):
  name, data, extra = CASES[case]
  files = data(tmp_path)
  config = tiny_config(name, **{"data.train": files["train"], "data.validation": files["dev"],
                                "num_epochs": 1.0, "batch_size": 16, "eval_every": 0, **extra})
  config.data.tokens_per_batch = load_config("finetune", name).data.tokens_per_batch
  assert config.data.tokens_per_batch == -1
  finetune.finetune_and_evaluate(config, str(tmp_path / "run"))
  out = capsys.readouterr().out
  assert "rows of 64 tokens" in out
  examples = int(re.search(r": (\d+) examples, \d+ steps/epoch", out).group(1))  # windows / groups, not lines
  lines = [m for m in read_metrics(str(tmp_path / "run")) if "perf/examples_per_sec" in m]
  per_step = lines[-1]["perf/examples_per_sec"] / lines[-1]["perf/steps_per_sec"]
  assert per_step * lines[-1]["step"] == pytest.approx(examples, rel=1e-6)  # every example once an epoch
  assert 16 * 0.75 <= per_step <= 16 * 1.25  # rows come in 8s here (8 devices): the nearest average


def test_a_budget_without_packing_is_refused(tmp_path):
  files = run_goldens.sentiment_without_test(tmp_path)
  config = tiny_config("classify", **{"data.train": files["train"], "data.tokens_per_batch": 256,
                                      "data.packing": False})
  with pytest.raises(ValueError, match="tokens_per_batch=256 needs config.data.packing=True"):
    finetune.finetune_and_evaluate(config, str(tmp_path / "run"))
