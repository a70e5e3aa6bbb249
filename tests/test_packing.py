"""Padding-free fine-tuning: packed rows compute what padded rows compute, for every family and task.

References: hand-worked first-fit cases; for the model, the same examples as padded rows (hidden
states, head outputs and gradients at every real position); for the tasks, the same fine-tuning
run with `data.packing=False` (every training loss and every validation metric, dropout off so
both runs see the same arithmetic).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import config_lib, finetune, models
from bert_jax.convert.pretrained import from_pretrained
from bert_jax.data import batching, packing
from bert_jax.data.finetune import LabelMap
from bert_jax.data.tokenizers import load_tokenizer
from bert_jax.metrics import read_metrics
from bert_jax.models.model import EncoderModel
from bert_jax.tasks import registry
from bert_jax.tasks.base import forward

from tests import run_goldens
from tests.test_finetune import tiny_config

SMALL = dict(num_layers=2, hidden_size=64, num_heads=4, intermediate_size=128)
FAMILIES = {
    "bert": models.build("bert", "tiny"),
    "roberta": models.build("roberta", "tiny"),
    "albert": models.build("albert", "tiny"),
    "deberta": models.build("deberta", "tiny"),
    "deberta-conv-groups": models.build("deberta", "tiny", conv_kernel_size=3, conv_groups=2),
    "deberta-v1": models.build("deberta", "tiny", position_buckets=0, position_ids="absolute",
                               norm_rel_embeddings=False),
    "modernbert": models.build("modernbert", "tiny", local_attention=8, global_attn_every_n_layers=2),
    "mpnet": models.build("mpnet", "base", **SMALL),
    "distilbert": models.build("distilbert", "base", **SMALL),
    "electra": models.build("electra", "small", embedding_size=32, **SMALL),
    "xlm-roberta": models.build("xlm-roberta", "base", vocab_size=500, **SMALL),
}


def test_row_ladder_and_first_fit_by_hand():
  assert [packing.row_bucket(n) for n in (1, 2, 3, 4, 5, 7, 9, 13, 17, 25)] == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
  # Longest first, each into the first row with room: 7 -> row 0; 5 -> row 1; 3 -> row 0 (7+3=10);
  # 3 -> row 1 (5+3); 2 -> row 1 (8+2); 1 -> row 2 (10 and 10 are full).
  row, offset, used = packing.first_fit(np.array([3, 7, 2, 5, 3, 1]), 10)
  assert used == 3
  assert row.tolist() == [0, 0, 1, 1, 1, 2] and offset.tolist() == [7, 0, 8, 0, 5, 0]
  with pytest.raises(ValueError, match="11 tokens does not fit rows of 10"):
    packing.first_fit(np.array([11]), 10)


def _examples(cfg, n=9, width=24, seed=0, pairs=True):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(2, width + 1, n)
  ids = np.full((n, width), cfg.pad_token_id, np.int32)
  mask, types = np.zeros((n, width), np.int32), np.zeros((n, width), np.int32)
  for i, k in enumerate(lengths):
    ids[i, :k], mask[i, :k] = rng.integers(5, cfg.vocab_size, k), 1
    if pairs and cfg.type_vocab_size > 1:
      types[i, k // 2:k] = 1
  return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def test_unpack_indices_gather_each_example_back_and_parts_stay_apart():
  cfg = FAMILIES["bert"]
  arrays = _examples(cfg, n=8, width=16)
  packed = packing.pack_batch(arrays, 20, parts=2)
  rows = packed["input_ids"].shape[0] // 2
  for i in range(8):
    k = int(arrays["attention_mask"][i].sum())
    index = packed["unpack"][i]
    assert (index[k:] == -1).all() and (index[:k] >= 0).all()
    part_rows = packed["input_ids"][(i // 4) * rows:(i // 4 + 1) * rows].reshape(-1)
    np.testing.assert_array_equal(part_rows[index[:k]], arrays["input_ids"][i, :k])
    # One segment id per example, the same on all of its tokens.
    segments = packed["segment_ids"][(i // 4) * rows:(i // 4 + 1) * rows].reshape(-1)[index[:k]]
    assert len(set(segments.tolist())) == 1 and segments[0] > 0
  assert packed["attention_mask"].sum() == arrays["attention_mask"].sum()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_packed_rows_compute_what_padded_rows_compute(family):
  cfg = FAMILIES[family].replace(dropout_rate=0.0, attention_dropout_rate=0.0)
  mask = None
  for head, extra in (("classification", {"num_labels": 3, "classifier_pooling": "mean"}),
                      ("token_classification", {"num_labels": 5}), ("qa", {})):
    c = cfg.replace(**extra)
    model = EncoderModel(c, head=head)
    arrays = _examples(c)
    mask = arrays["attention_mask"].astype(bool)
    params = model.init(jax.random.key(1), jnp.asarray(arrays["input_ids"]))["params"]
    packed = packing.pack_batch(arrays, 40)
    assert packed["input_ids"].shape[0] < len(mask)  # several examples share rows

    def outputs(params, batch):
      out = forward(model, params, {k: jnp.asarray(v) for k, v in batch.items()}, None)
      return out.last_hidden_state, out.head_outputs

    (hidden, heads), (hidden_p, heads_p) = outputs(params, arrays), outputs(params, packed)
    np.testing.assert_allclose(np.asarray(hidden_p)[mask], np.asarray(hidden)[mask], atol=1e-5, rtol=1e-5)
    for key in heads:
      want, got = np.asarray(heads[key]), np.asarray(heads_p[key])
      if want.ndim >= 2 and want.shape[1] == mask.shape[1]:
        want, got = want[mask], got[mask]
      np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=f"{family} {head} {key}")

    # Gradients of a loss over every real position: the backward pass is the padded one too.
    def loss(params, batch):
      out = forward(model, params, {k: jnp.asarray(v) for k, v in batch.items()}, None)
      return jnp.sum(jnp.where(jnp.asarray(mask)[..., None], out.last_hidden_state, 0.0) ** 2)
    grads, grads_p = jax.grad(loss)(params, arrays), jax.grad(loss)(params, packed)
    for (path, g), gp in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(grads_p)):
      np.testing.assert_allclose(gp, g, atol=1e-4, rtol=1e-4, err_msg=f"{family} {head} {path}")


def test_an_evaluation_packer_covers_each_example_once_in_one_shape():
  cfg = FAMILIES["bert"]
  arrays = _examples(cfg, n=50, width=32, seed=3)
  lengths = arrays["attention_mask"].sum(1)
  dataset = batching.Dataset({**arrays, "labels": np.arange(50)}, tuple(arrays), lengths, "mem")
  packer = packing.EvalPacker(row_length=64, rows=4, examples=16)
  seen, shapes = [], set()
  for indices, real in packer.batches(dataset):
    batch = packer.arrays(dataset, indices, real)
    shapes.add((batch["input_ids"].shape, batch["unpack"].shape))
    assert (batch["unpack"][real:] == -1).all()
    assert (batch["labels"][:real] == indices[:real]).all()
    seen += indices[:real].tolist()
  assert sorted(seen) == list(range(50)) and shapes == {((4, 64), (16, 32))}


# Every task: the packed run against the padded run ------------------------------------------------

def _pairs_classification(root):
  """Scored pairs (sentence, sentence2, label 1.0 / 0.0) as a two-class pair task."""
  dev = run_goldens.pairs(root)["dev"]
  return {"train": dev, "dev": dev}


DATA = {"classify": run_goldens.sentiment_without_test, "regress": run_goldens.sentiment_without_test,
        "pairs": _pairs_classification, "tag": run_goldens.tagging, "qa": run_goldens.squad,
        "contrastive": run_goldens.pairs, "rerank": run_goldens.ranking}
DEBERTA = models.build("deberta", "tiny", conv_kernel_size=3, num_layers=1)
# case -> (task, data, overrides); "model" replaces the backbone.
CASES = {
    "classify": ("classify", "classify", {}),
    "classify-pairs-mean-pooling": ("classify", "pairs", {"pooling": "mean"}),
    "classify-deberta-accumulated": ("classify", "classify", {"optimizer.grad_accum_steps": 2, "batch_size": 16,
                                                             "model": DEBERTA}),
    "classify-seeds-vmapped": ("classify", "classify", {"seeds": 2}),
    "regress": ("regress", "regress", {}),
    "tag": ("tag", "tag", {}),
    "qa": ("qa", "qa", {"data.max_length": 64, "data.doc_stride": 16, "data.max_query_length": 16}),
    "contrastive": ("contrastive", "contrastive", {}),
    "rerank": ("rerank", "rerank", {}),
    "rerank-pointwise": ("rerank", "rerank", {"rerank_loss": "pointwise"}),
}


def _numbers(workdir) -> dict:
  out = {}
  for line in read_metrics(str(workdir)):
    for key, value in line.items():
      if key.startswith(("train/", "eval/")) and "per_sec" not in key and "real_token" not in key:
        out[(line["step"], key)] = value
  return out


@pytest.mark.parametrize("case", list(CASES))
def test_packed_fine_tuning_reproduces_the_padded_run(case, tmp_path):
  task, data, extra = CASES[case]
  files = DATA[data](tmp_path)
  extra = dict(extra)
  backbone = extra.pop("model", None)
  values = {"data.train": files["train"], "data.validation": files["dev"], "total_steps": 4, "eval_every": 2,
            "batch_size": 8, "eval_batch_size": 8, **extra}  # 8 devices: one example per device
  runs = {}
  for packed in (True, False):
    config = tiny_config(task, **{**values, "data.packing": packed})
    if backbone is not None:
      config.model = config_lib.model_section(backbone)
    config.model.dropout_rate = config.model.attention_dropout_rate = 0.0
    finetune.finetune_and_evaluate(config, str(tmp_path / str(packed)))
    runs[packed] = _numbers(tmp_path / str(packed))
  assert sorted(runs[True]) == sorted(runs[False]) and any(k.startswith("eval/") for _, k in runs[True])
  for (step, key), want in runs[False].items():
    # A 4-step tiny model scores every pair almost alike (cosines within ~1e-5 of each other, regression
    # outputs within 1e-4), so rounding at 1e-7 reorders near-ties: correlations are compared loosely here
    # and the outputs they come from exactly below.
    # In-batch contrastive accuracy is an argmax over those near-equal cosines: within one example of 8.
    tolerance = 2e-2 if key.endswith(("pearson", "spearman")) else 1e-5
    if task == "contrastive" and key.endswith("accuracy"):
      tolerance = 1 / 8 + 1e-6
    np.testing.assert_allclose(runs[True][(step, key)], want, rtol=tolerance, atol=tolerance,
                               err_msg=f"{case} step {step} {key}")

  # The validation outputs of the saved model, packed and padded: every output within 1e-5.
  spec = registry.get(task, registry.FINETUNE)
  config = tiny_config(task, **{**values, "data.packing": True})
  best = str(tmp_path / "False" / "best" / ("seed_0" if config.seeds > 1 else ""))
  model, params = from_pretrained(best, head=spec.cls.head)
  config.pooling = finetune.resolve_pooling(config, model.config)
  task_obj = spec.cls(config, load_tokenizer(best))
  names = list(model.config.label_names) if task in ("classify", "tag") else None
  dataset = task_obj.load(files["dev"], "validation", LabelMap(names) if names else None)
  objective = task_obj.objective(model.config, dataset.labels)
  predict = jax.jit(objective.predict)
  padded = batching.predict_split(predict, params, dataset, 8, task_obj.token_outputs)
  packed = batching.predict_split(predict, params, dataset, 8, task_obj.token_outputs,
                                  packer=finetune.eval_packer(config, task_obj, model.config, None, dataset))
  for key in padded:
    finite = np.isfinite(padded[key]) & (np.abs(padded[key]) < 1e30)
    if key in task_obj.token_outputs:  # only real tokens: padded rows compute (unused) outputs on padding too
      finite &= dataset.arrays["attention_mask"].astype(bool)
    np.testing.assert_allclose(packed[key][finite], padded[key][finite], atol=1e-5, rtol=1e-5, err_msg=key)


@pytest.mark.parametrize("family", ["roberta", "deberta-emd", "bert"])
def test_packed_pretraining_rows_see_each_document_as_if_alone(family):
  """A packed row of documents (segment_ids, no unpack): each document's MLM logits are its logits
  alone, positions and DeBERTa's enhanced-mask-decoder positions restarting per document."""
  cfg = (models.build("deberta", "tiny", emd_layers=2) if family == "deberta-emd" else FAMILIES[family])
  cfg = cfg.replace(dropout_rate=0.0, attention_dropout_rate=0.0)
  model = EncoderModel(cfg, head="mlm")
  docs = _examples(cfg, n=3, width=10, seed=5, pairs=False)
  lengths = docs["attention_mask"].sum(1)
  row = np.concatenate([docs["input_ids"][i, :k] for i, k in enumerate(lengths)])[None]
  segments = np.concatenate([np.full(k, i + 1) for i, k in enumerate(lengths)])[None].astype(np.int32)
  params = model.init(jax.random.key(2), jnp.asarray(docs["input_ids"]))["params"]
  packed = model.apply({"params": params}, row, np.ones_like(row), np.zeros_like(row), segment_ids=segments).logits
  alone = model.apply({"params": params}, docs["input_ids"], docs["attention_mask"],
                      np.zeros_like(docs["input_ids"])).logits
  start = 0
  for i, k in enumerate(lengths):
    np.testing.assert_allclose(np.asarray(packed)[0, start:start + k], np.asarray(alone)[i, :k], atol=1e-5,
                               rtol=1e-5)
    start += k
