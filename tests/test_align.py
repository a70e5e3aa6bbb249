"""The `align` task: texts into a fixed tower's space (loss, metrics, a run, the saved folder, bad input).

The references are a hand-written numpy InfoNCE (duplicated rows included), a hand-worked
retrieval case checked against evaluation.retrieval's recall_at_k / mrr, and a
sentence-transformers folder with Dense modules (tests/parity/make_dense_goldens.py). The run
trains a one-layer, 32-wide BERT through `python -m bert_jax.main` on synthetic captions
whose target is a fixed random projection of their bag of words, so a text's vector is a
function of its words that a short run can learn.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from bert_jax import embed, finetune, models, sharding
from bert_jax.convert import sentence_transformers
from bert_jax.convert.pretrained import from_pretrained
from bert_jax.data import packing
from bert_jax.data.finetune import vectors as vector_data
from bert_jax.data.tokenizers import bundled_tokenizer, load_tokenizer
from bert_jax.evaluation import retrieval
from bert_jax.tasks.finetune import align, base

from tests.conftest import REPO, TESTDATA
from tests.test_configs import load_config

DIM = 16  # the fixed tower's width in the synthetic data


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# The loss ---------------------------------------------------------------------------------------

def numpy_info_nce(text, vectors, rows, scale):
  """CLIP's symmetric loss per example, same-row pairs off the diagonal left out of both softmaxes."""
  logits = scale * _unit(text) @ _unit(vectors).T
  same = (rows[:, None] == rows[None, :]) & ~np.eye(len(rows), dtype=bool)
  logits = np.where(same, -np.inf, logits)
  forward = np.diag(_log_softmax(logits))        # text i picks vector i among the other rows' vectors
  backward = np.diag(_log_softmax(logits.T))     # vector i picks text i among the other rows' texts
  return -(forward + backward) / 2


def test_symmetric_info_nce_matches_numpy_with_and_without_duplicates():
  rng = np.random.default_rng(0)
  text, vectors = _unit(rng.normal(size=(6, 5))), _unit(rng.normal(size=(6, 5)))
  duplicated = np.array([0, 1, 1, 2, 3, 3])   # examples 1, 2 and 4, 5 name one row each: the same vector
  twins = vectors[duplicated]
  for rows, targets in ((np.arange(6), vectors), (duplicated, twins)):
    loss, correct = align.symmetric_info_nce(jnp.asarray(text), jnp.asarray(targets), jnp.asarray(rows), 14.0)
    np.testing.assert_allclose(loss, numpy_info_nce(text, targets, rows, 14.0), rtol=1e-5)
    masked = np.where((rows[:, None] == rows) & ~np.eye(6, dtype=bool), -np.inf, text @ targets.T)
    np.testing.assert_array_equal(correct, np.argmax(masked, -1) == np.arange(6))
  # Unmasked, a text's twin vector would be its negative (as likely as its own): the loss would be larger.
  unmasked = -(np.diag(_log_softmax(14.0 * text @ twins.T)) + np.diag(_log_softmax(14.0 * twins @ text.T))) / 2
  masked = numpy_info_nce(text, twins, duplicated, 14.0)
  assert np.all(masked[[1, 2, 4, 5]] < unmasked[[1, 2, 4, 5]])
  np.testing.assert_allclose(masked[[0, 3]], unmasked[[0, 3]], rtol=1e-6)


def _tiny_objective(head_lr_multiplier=1.0):
  cfg = models.build("bert", "tiny", num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64)
  objective = align.AlignObjective(cfg, "mean", DIM, temperature=0.07, max_logit_scale=100.0,
                                   head_lr_multiplier=head_lr_multiplier)
  ids = jax.random.randint(jax.random.key(0), (8, 10), 5, 1000)
  mask = np.ones((8, 10), np.int32)
  mask[::2, 6:] = 0
  params = flax.linen.meta.unbox(objective.init({"params": jax.random.key(1), "dropout": jax.random.key(1)}, ids))
  rows = np.array([0, 1, 1, 2, 3, 3, 3, 4], np.int32)
  targets = _unit(np.random.default_rng(2).normal(size=(5, DIM)).astype(np.float32))[rows]
  batch = {"a_input_ids": np.asarray(ids), "a_attention_mask": mask, "row": rows, "target": targets}
  return objective, params, batch


def _reference_loss(objective, params, batch, scale, multiplier=1.0):
  hidden = np.asarray(objective.eval_model.apply({"params": params}, batch["a_input_ids"],
                                                 batch["a_attention_mask"]).last_hidden_state)
  m = batch["a_attention_mask"][..., None]
  pooled = (hidden * m).sum(1) / m.sum(1)
  projection = params[align.PROJECTION]
  text = multiplier * (pooled @ np.asarray(projection["kernel"]) + np.asarray(projection["bias"]))
  return numpy_info_nce(text, batch["target"], batch["row"], scale).sum()


def test_objective_loss_matches_numpy_on_the_whole_sharded_batch():
  """Encoder -> mean pooling -> projection -> cosine x exp(logit_scale); CLIP's initial 1 / 0.07. The
  batch split over 8 devices gives the loss of the whole batch: in-batch negatives cross devices."""
  objective, params, batch = _tiny_objective()
  assert float(params[align.LOGIT_SCALE]) == pytest.approx(np.log(1 / 0.07))
  assert params[align.PROJECTION]["kernel"].shape == (32, DIM)
  expected = _reference_loss(objective, params, batch, 1 / 0.07)
  np.testing.assert_allclose(objective.sums(params, batch, None)["task_loss"], expected, rtol=2e-5)
  mesh = sharding.make_mesh({"data": -1})  # as the fine-tuning loop shards a batch
  sharded = {k: jax.device_put(v, NamedSharding(mesh, P(("data", "fsdp")))) for k, v in batch.items()}
  assert len(sharded["row"].sharding.device_set) == 8
  with jax.set_mesh(mesh), flax.linen.logical_axis_rules(sharding.DEFAULT_RULES):
    sums = jax.jit(objective.sums)(params, sharded, None)
  np.testing.assert_allclose(sums["task_loss"], expected, rtol=2e-5)
  assert float(sums["task_count"]) == 8
  # Padding-free rows (data.packing) give the padded batch's loss.
  packed = packing.pack_batch(dict(batch), 32, prefix="a_")
  assert packed["a_input_ids"].shape[0] < 8
  np.testing.assert_allclose(objective.sums(params, packed, None)["task_loss"], expected, rtol=1e-4)
  # The learned scale is clamped at max_logit_scale (CLIP's 100).
  params[align.LOGIT_SCALE] = jnp.asarray(np.log(1000.0), jnp.float32)
  np.testing.assert_allclose(objective.sums(params, batch, None)["task_loss"],
                             _reference_loss(objective, params, batch, 100.0), rtol=2e-5)
  # head_lr_multiplier m: the projection and the log scale are stored / m and used x m (same starting point).
  objective, params, batch = _tiny_objective(head_lr_multiplier=10.0)
  assert float(params[align.LOGIT_SCALE]) * 10 == pytest.approx(np.log(1 / 0.07))
  np.testing.assert_allclose(objective.sums(params, batch, None)["task_loss"],
                             _reference_loss(objective, params, batch, 1 / 0.07, multiplier=10.0), rtol=2e-5)


# The metrics ------------------------------------------------------------------------------------

def test_retrieval_metrics_on_a_hand_worked_case():
  # Rows 0..2 are named; row 3 is not, so it is no candidate (t1 would rank it first).
  vectors = np.array([[1, 0], [0, 1], [-1, 0], [0.6, 0.8]])
  texts = np.array([[0.7, 0.69], [0.75, 0.66], [0.9, 0.4359], [-0.1, -1.0]])
  rows = np.array([0, 1, 1, 2])
  # cosines (texts x rows 0..2): t0 .712 .702 -.712 | t1 .751 .661 -.751 | t2 .900 .436 -.900 | t3 -.100 -.995 .100
  # text -> vector ranks: t0 1, t1 2, t2 2, t3 1; vector -> text (first of its texts): r0 3 (t2, t1, t0),
  # r1 2 (t0, t1), r2 1.
  out = retrieval.text_vector_retrieval(texts, rows, vectors, ks=(1, 2, 5))
  expected = {"text_to_vector_recall@1": 0.5, "text_to_vector_recall@2": 1.0, "text_to_vector_recall@5": 1.0,
              "text_to_vector_mrr": 0.75, "vector_to_text_recall@1": 1 / 3, "vector_to_text_recall@2": 2 / 3,
              "vector_to_text_recall@5": 1.0, "vector_to_text_mrr": (1 / 3 + 1 / 2 + 1) / 3}
  expected["mean_mrr"] = (expected["text_to_vector_mrr"] + expected["vector_to_text_mrr"]) / 2
  assert out == pytest.approx(expected)
  # The same from the ranked lists by the reference helpers (vector -> text ranks texts by their row id).
  t2v = [[0, 1, 2], [0, 1, 2], [0, 1, 2], [2, 0, 1]]
  v2t = [[rows[t] for t in order] for order in ([2, 1, 0, 3], [0, 1, 2, 3], [3, 0, 1, 2])]
  for k in (1, 2, 5):
    assert out[f"text_to_vector_recall@{k}"] == pytest.approx(retrieval.recall_at_k(t2v, [{0}, {1}, {1}, {2}], k))
    assert out[f"vector_to_text_recall@{k}"] == pytest.approx(retrieval.recall_at_k(v2t, [{0}, {1}, {2}], k))
  assert out["text_to_vector_mrr"] == pytest.approx(retrieval.mrr(t2v, [{0}, {1}, {1}, {2}]))
  assert out["vector_to_text_mrr"] == pytest.approx(retrieval.mrr(v2t, [{0}, {1}, {2}]))
  # Ties go to the lower index, as a stable sort of -scores; chunking changes nothing.
  ties = np.array([[0.5, 0.5, 0.5]])
  assert retrieval.first_relevant_ranks(ties, np.array([[False, False, True]])).tolist() == [3]
  assert retrieval.first_relevant_ranks(ties, np.array([[True, False, True]])).tolist() == [1]
  assert retrieval.text_vector_retrieval(texts, rows, vectors, chunk=1) == pytest.approx(
      retrieval.text_vector_retrieval(texts, rows, vectors))


# A run, and the folder it saves -----------------------------------------------------------------

def _synthetic(root, rng):
  """Captions of random words; a row's vector is a fixed random projection of its bag of words.

  train: 256 bags, each named by two texts (the words in two orders): the same vector twice.
  dev: 64 new bags, half named by two texts; one more row in vectors.npy that nobody names.
  """
  vocab = open(os.path.join(bundled_tokenizer("wordpiece"), "vocab.txt"), encoding="utf-8").read().split()
  words = rng.choice([w for w in vocab if w.isalpha() and w.islower() and len(w) > 3], 48, replace=False)
  projection = rng.normal(size=(len(words), DIM))

  def bags(n):
    return [rng.choice(len(words), rng.integers(3, 7), replace=False) for _ in range(n)]

  def texts(bag, copies):
    return [" ".join(words[i] for i in rng.permutation(bag)) for _ in range(copies)]

  train_bags, dev_bags = bags(256), bags(65)
  vectors = np.stack([projection[b].sum(0) for b in train_bags + dev_bags]).astype(np.float32)
  np.save(root / "vectors.npy", vectors)
  train = [(t, r) for r, b in enumerate(train_bags) for t in texts(b, 2)]
  dev = [(t, 256 + r) for r, b in enumerate(dev_bags[:64]) for t in texts(b, 1 + r % 2)]
  for name, rows in (("train.tsv", train), ("dev.tsv", dev)):
    (root / name).write_text("text\trow\n" + "".join(f"{t}\t{r}\n" for t, r in rows), encoding="utf-8")
  return {"train": str(root / "train.tsv"), "dev": str(root / "dev.tsv"), "vectors": str(root / "vectors.npy"),
          "dev_texts": [t for t, _ in dev], "dev_rows": np.array([r for _, r in dev])}


TINY = {"model.num_layers": 1, "model.hidden_size": 32, "model.num_heads": 2, "model.intermediate_size": 64,
        "batch_size": 32, "eval_batch_size": 32, "data.max_length": 32, "optimizer.learning_rate": 1e-3,
        "total_steps": 60, "eval_every": 30, "log_every": 20, "checkpoint_every": 60}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("align")
  data = _synthetic(root, np.random.default_rng(0))
  workdir = root / "run"
  flags = {**TINY, "data.train": data["train"], "data.validation": data["dev"], "data.vectors": data["vectors"]}
  result = subprocess.run([sys.executable, "-m", "bert_jax.main", "--config=configs/finetune.py:align",
                           f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in flags.items())],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  return data, workdir


def test_training_reaches_recall_well_above_chance(trained):
  data, workdir = trained
  best = json.load(open(workdir / "best.json"))
  assert best["metric"] == "text_to_vector_recall@1"
  metrics = best["seeds"][0]["metrics"]
  # Chance: 1/64 (text -> vector among the 64 dev rows), ~1.5/96 (vector -> text).
  assert metrics["text_to_vector_recall@1"] > 0.4 and metrics["vector_to_text_recall@1"] > 0.4, metrics
  assert metrics["text_to_vector_recall@10"] > 0.8
  lines = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [m["step"] for m in lines if "eval/text_to_vector_mrr" in m] == [30, 60]
  losses = [m["train/loss"] for m in lines if "train/loss" in m]
  assert losses[-1] < 0.5 * losses[0]


def test_saved_folder_embeds_into_the_target_space(trained, tmp_path):
  """bert_jax.embed on WORKDIR/best applies Pooling -> Dense -> Normalize: the model's own projected,
  normalised text vectors, D wide; and the folder (with its task params) reproduces its best metrics."""
  data, workdir = trained
  best = str(workdir / "best")
  modules = json.load(open(os.path.join(best, "modules.json")))
  assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Dense", "3_Normalize"]
  dense = json.load(open(os.path.join(best, "2_Dense", "config.json")))
  assert dense == {"in_features": 32, "out_features": DIM, "bias": True,
                   "activation_function": "torch.nn.modules.linear.Identity"}
  texts = data["dev_texts"][:40]
  vectors = embed.embed_texts(best, texts)
  assert vectors.shape == (40, DIM)
  np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)

  config = load_config("finetune", "align")
  config.data.vectors, config.data.max_length = data["vectors"], 32
  task = align.AlignTask(config, load_tokenizer(best))
  model, params = from_pretrained(best)
  params = {**params, **base.load_task_params(best)}
  dev = task.load(data["dev"], "validation")
  batch = {k: v[:40] for k, v in dev.arrays.items()}
  ours = task.objective(model.config, None).predict(params, batch)["text"]
  np.testing.assert_allclose(vectors, ours, atol=2e-5)
  # The command line writes the same rows.
  (tmp_path / "texts.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
  embed.main([f"--model={best}", f"--input={tmp_path / 'texts.txt'}", f"--output={tmp_path / 'out.npy'}",
              "--no-compilation_cache"])
  np.testing.assert_allclose(np.load(tmp_path / "out.npy"), vectors, atol=1e-6)
  saved = json.load(open(workdir / "best.json"))["seeds"][0]["metrics"]
  again = finetune.evaluate_folder(config, task, best, dev)
  assert again == pytest.approx(saved, abs=1e-6)


def test_dense_modules_match_sentence_transformers():
  """A folder saved by sentence-transformers: Pooling -> Dense (Tanh, bias) -> Dense (Identity, no bias)
  -> Normalize (tests/parity/make_dense_goldens.py)."""
  folder = str(TESTDATA / "dense_st")
  golden = dict(np.load(TESTDATA / "dense_st" / "golden.npz"))
  dense = sentence_transformers.dense_modules(folder)
  assert [(d.in_features, d.out_features, d.activation, d.bias is None) for d in dense] == [
      (16, 12, "Tanh", False), (12, 8, "Identity", True)]
  ours = embed.embed_texts(folder, [str(s) for s in golden["sentences"]])
  assert ours.shape == golden["embeddings"].shape == (24, 8)
  np.testing.assert_allclose(ours, golden["embeddings"], atol=1e-5)
  # Without Normalize, the Dense output as it is.
  raw = embed.embed_texts(folder, [str(s) for s in golden["sentences"]], normalize=False)
  np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), golden["embeddings"], atol=1e-5)


# Bad input --------------------------------------------------------------------------------------

def _vectors_file(path, array):
  np.save(path, array)
  return str(path)


def test_bad_vectors_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.npy"):
    vector_data.read_vectors(str(tmp_path / "nope.npy"))
  (tmp_path / "text.npy").write_text("not an array")
  with pytest.raises(ValueError, match=r"text.npy: expected a NumPy .npy file"):
    vector_data.read_vectors(str(tmp_path / "text.npy"))
  with pytest.raises(ValueError, match=r"flat.npy: expected a 2-D array \[rows, dim\].*found shape \(4,\)"):
    vector_data.read_vectors(_vectors_file(tmp_path / "flat.npy", np.ones(4)))
  with pytest.raises(ValueError, match=r"cube.npy: expected a 2-D array.*\(2, 2, 2\)"):
    vector_data.read_vectors(_vectors_file(tmp_path / "cube.npy", np.ones((2, 2, 2))))
  with pytest.raises(ValueError, match=r"words.npy: expected float .* found dtype <U1"):
    vector_data.read_vectors(_vectors_file(tmp_path / "words.npy", np.array([["a", "b"]])))
  nan = np.ones((3, 4), np.float32)
  nan[2, 1] = np.nan
  with pytest.raises(ValueError, match=r"nan.npy: expected finite values, found nan at row 2, column 1"):
    vector_data.read_vectors(_vectors_file(tmp_path / "nan.npy", nan))
  zero = np.ones((3, 4), np.float32)
  zero[1] = 0
  with pytest.raises(ValueError, match=r"zero.npy: row 1 is all zeros"):
    vector_data.read_vectors(_vectors_file(tmp_path / "zero.npy", zero))
  assert vector_data.read_vectors(_vectors_file(tmp_path / "ints.npy", np.eye(2, dtype=np.int64))).dtype == np.float32


def test_bad_caption_files_are_named(tmp_path):
  def table(name, text):
    (tmp_path / name).write_text(text, encoding="utf-8")
    return str(tmp_path / name)

  good = vector_data.read_captions(table("ok.tsv", "text\trow\na cat\t0\nthe cat\t0\na dog\t2\n"), 3)
  assert good.texts == ["a cat", "the cat", "a dog"] and good.rows.tolist() == [0, 0, 2]
  assert vector_data.read_captions(table("v.jsonl", '{"caption": "x", "vector": 1}\n'), 3).rows.tolist() == [1]
  with pytest.raises(ValueError, match=r"far.tsv:3: 'row' = 3 is out of range: v.npy has 3 rows \(expected 0..2\)"):
    vector_data.read_captions(table("far.tsv", "text\trow\na\t0\nb\t3\n"), 3, vectors="v.npy")
  with pytest.raises(ValueError, match=r"neg.tsv:2: 'row' = -1 is out of range"):
    vector_data.read_captions(table("neg.tsv", "text\trow\na\t-1\n"), 3)
  with pytest.raises(ValueError, match=r"frac.jsonl:1: expected 'row' to be a row index .* found '1.0'"):
    vector_data.read_captions(table("frac.jsonl", '{"text": "a", "row": 1.0}\n'), 3)
  with pytest.raises(ValueError, match=r"norow.tsv:1: expected a row column 'row' or 'vector'.*"
                                       r"found columns \['text', 'label'\]"):
    vector_data.read_captions(table("norow.tsv", "text\tlabel\na\t0\n"), 3)
  with pytest.raises(ValueError, match=r"notext.tsv:1: expected a text column 'text'"):
    vector_data.read_captions(table("notext.tsv", "words\trow\na\t0\n"), 3)
  with pytest.raises(ValueError, match=r"empty.tsv:3: expected non-empty text"):
    vector_data.read_captions(table("empty.tsv", "text\trow\na\t0\n \t1\n"), 3)
  with pytest.raises(ValueError, match=r"short.tsv:2: expected 2 tab-separated fields"):
    vector_data.read_captions(table("short.tsv", "text\trow\na\n"), 3)


def test_bad_align_config_and_dense_modules_are_named(tmp_path):
  config = load_config("finetune", "align")
  task = align.AlignTask(config, load_tokenizer(bundled_tokenizer("wordpiece")))
  with pytest.raises(ValueError, match="config.data.vectors is empty"):
    task.load(str(tmp_path / "x.tsv"), "train")
  config.optimizer.grad_accum_steps, config.data.vectors = 2, _vectors_file(tmp_path / "v.npy", np.eye(3))
  with pytest.raises(ValueError, match="grad_accum_steps must be 1"):
    align.AlignTask(config, None).objective(models.build("bert", "tiny"), None)

  # Dense modules: what bert_jax does not implement is refused, naming the file.
  folder = tmp_path / "st"
  sentence_transformers.write_modules(str(folder), "mean", normalize=True, max_length=16,
                                      dense=[(np.ones((4, 8)), None, "Identity")])
  config_file = folder / "2_Dense" / "config.json"
  assert json.loads(config_file.read_text())["bias"] is False
  settings = embed.folder_settings(str(folder), 512)
  assert settings["normalize"] and len(settings["dense"]) == 1
  with pytest.raises(embed.EmbedError, match=r"2_Dense: the Dense module reads in_features=8, but the model's "
                                            r"hidden size is 32"):
    embed.resolve_settings(settings, 512, 32)
  # Search, export and init_from do not apply Dense modules: they refuse the folder.
  with pytest.raises(sentence_transformers.SentenceTransformersError, match="Dense"):
    sentence_transformers.folder_defaults(str(folder), 512)
  config_file.write_text(json.dumps({"in_features": 8, "out_features": 4, "bias": False,
                                     "activation_function": "torch.nn.modules.activation.GELU"}))
  with pytest.raises(sentence_transformers.SentenceTransformersError,
                     match=r"2_Dense/config.json: activation_function 'torch.nn.modules.activation.GELU' is not "
                           r"supported"):
    sentence_transformers.dense_modules(str(folder))
  config_file.write_text(json.dumps({"in_features": 8, "out_features": 5, "bias": False}))
  with pytest.raises(sentence_transformers.SentenceTransformersError,
                     match=r"expected linear.weight of shape \(5, 8\) \(out, in\), found \(4, 8\)"):
    sentence_transformers.dense_modules(str(folder))
  modules = json.loads((folder / "modules.json").read_text())
  (folder / "modules.json").write_text(json.dumps([modules[0], modules[1], modules[3], modules[2]]))
  with pytest.raises(sentence_transformers.SentenceTransformersError,
                     match=r"expected Transformer -> Pooling \[-> Dense ...\] \[-> Normalize\]"):
    sentence_transformers.dense_modules(str(folder))
