"""Fine-tuning: the loop (seeds under vmap, resume, best checkpoint) and each task's data and loss.

End-to-end runs use a one-layer, 32-wide BERT on a slice of the bundled movie
set; the references are separate runs (a vmapped seed against the same seed
alone, a resumed run against an uninterrupted one) and slow numpy versions of
the losses and the featurization.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import evaluation, finetune, loop
from bert_jax.data import batching
from bert_jax.data.tokenizers import bundled_tokenizer, load_tokenizer
from bert_jax.metrics import read_metrics
from bert_jax.tasks import registry
from bert_jax.tasks.finetune import contrastive, ranking, span_qa, tagging

from tests.conftest import REPO
from tests.test_configs import load_config

MOVIE = REPO / "data" / "movie_sentiment.{}.tsv"


def _slice(src, dst, rows: int, labels=None) -> str:
  lines = open(src, encoding="utf-8").read().splitlines()
  body = lines[1:rows + 1]
  if labels:
    body = ["\t".join([r.split("\t")[0], labels[r.split("\t")[1]]] + r.split("\t")[2:]) for r in body]
  with open(dst, "w", encoding="utf-8") as f:
    f.write("\n".join([lines[0]] + body) + "\n")
  return str(dst)


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
  root = tmp_path_factory.mktemp("movie")
  # Shuffled first so both classes appear in the slices; labels as strings, as users' files have them.
  rng = np.random.default_rng(0)
  out = {}
  for split, rows in (("train", 96), ("dev", 48)):
    lines = open(str(MOVIE).format(split), encoding="utf-8").read().splitlines()
    body = [lines[1:][i] for i in rng.permutation(len(lines) - 1)[:rows]]
    body = ["\t".join([r.split("\t")[0], {"0": "neg", "1": "pos"}[r.split("\t")[1]]]) for r in body]
    path = root / f"{split}.tsv"
    path.write_text("sentence\tlabel\n" + "\n".join(body) + "\n", encoding="utf-8")
    out[split] = str(path)
  return out


def tiny_config(task: str = "classify", **overrides):
  c = load_config("finetune", task)
  c.model.num_layers, c.model.hidden_size, c.model.num_heads, c.model.intermediate_size = 1, 32, 2, 64
  c.batch_size, c.eval_batch_size, c.data.max_length = 16, 16, 64
  c.optimizer.learning_rate = 1e-3
  c.log_every = 1
  c.data.tokens_per_batch = 0  # batch_size examples a step: what these tests count (test_token_budget.py: the rest)
  for key, value in overrides.items():
    section, _, name = key.rpartition(".")
    (c[section] if section else c)[name] = value
  return c


def _lines(workdir, key):
  return {m["step"]: m[key] for m in read_metrics(str(workdir)) if key in m}


# The loop ---------------------------------------------------------------------------------------

def test_each_vmapped_seed_equals_its_own_run(movie, tmp_path):
  # max_length 32: every batch of either run fills the same bucket, so dropout draws the same bits.
  data = {"data.train": movie["train"], "data.validation": movie["dev"], "total_steps": 6, "eval_every": 3,
          "data.max_length": 32}
  together = finetune.finetune_and_evaluate(tiny_config(seeds=2, seed=0, **data), str(tmp_path / "both"))
  alone = finetune.finetune_and_evaluate(tiny_config(seeds=1, seed=1, **data), str(tmp_path / "alone"))
  assert together["seeds"] == [0, 1] and alone["seeds"] == [1]
  for step, value in _lines(tmp_path / "alone", "eval/loss").items():
    np.testing.assert_allclose(_lines(tmp_path / "both", "eval/loss_seed1")[step], value, rtol=2e-4)
  for step, value in _lines(tmp_path / "alone", "train/loss").items():
    np.testing.assert_allclose(_lines(tmp_path / "both", "train/loss_seed1")[step], value, rtol=2e-4)
  # The summary's statistics are those of the per-seed best validation metrics.
  best = json.load(open(tmp_path / "both" / "best.json"))["seeds"]
  accuracies = [b["metrics"]["accuracy"] for b in best]
  assert together["validation"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
  assert together["validation"]["accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
  assert os.path.isfile(tmp_path / "both" / "summary.md")
  assert os.path.isdir(tmp_path / "both" / "best" / "seed_0") and os.path.isdir(tmp_path / "both" / "best" / "seed_1")


def test_resume_continues_exactly_and_best_checkpoint_reproduces_its_metric(movie, tmp_path):
  config = tiny_config(**{"data.train": movie["train"], "data.validation": movie["dev"], "total_steps": 8,
                          "eval_every": 2, "checkpoint_every": 4, "keep_checkpoints": 2})
  full = tmp_path / "full"
  finetune.finetune_and_evaluate(config, str(full))
  # A copy stopped after step 4: drop the later checkpoint, relaunch the same command.
  cut = tmp_path / "cut"
  shutil.copytree(full, cut)
  shutil.rmtree(cut / "checkpoints" / "8")
  finetune.finetune_and_evaluate(config, str(cut))
  for key in ("train/loss", "eval/loss", "eval/accuracy"):
    full_values, cut_values = _lines(full, key), _lines(cut, key)
    assert sorted(full_values) == sorted(cut_values)
    np.testing.assert_allclose([cut_values[s] for s in sorted(cut_values)],
                               [full_values[s] for s in sorted(full_values)], rtol=1e-5)
  # best.json names the step with the highest logged accuracy (first of ties), and the saved folder
  # reproduces that step's logged metrics.
  logged = _lines(full, "eval/accuracy")
  best = json.load(open(full / "best.json"))["seeds"][0]
  assert best["value"] == pytest.approx(max(logged.values()))
  assert best["step"] == min(s for s, v in logged.items() if v == max(logged.values()))
  task = registry.get("classify", registry.FINETUNE).cls(config, load_tokenizer(bundled_tokenizer("wordpiece")))
  labels = task.load(movie["train"], "train").labels
  again = finetune.evaluate_folder(config, task, str(full / "best"), task.load(movie["dev"], "validation", labels))
  assert again["accuracy"] == pytest.approx(best["metrics"]["accuracy"])
  assert again["loss"] == pytest.approx(best["metrics"]["loss"], rel=1e-4)
  meta = json.load(open(full / "best" / "bert_jax.json"))
  assert meta["finetune"]["label_names"] == ["neg", "pos"]


def tiny_hf_folder(tmp_path):
  """A random 1-layer, 32-wide BERT written as a Hugging Face folder; returns its params."""
  from bert_jax import export_hf, models
  from bert_jax.models.model import EncoderModel
  cfg = models.build("bert", "tiny", num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64,
                     vocab_size=8192)
  model = EncoderModel(cfg)
  params = model.init(jax.random.key(3), jnp.zeros((1, 8), jnp.int32))["params"]
  export_hf(str(tmp_path / "hf"), model, params, tokenizer_from=bundled_tokenizer("wordpiece"))
  return params


def test_init_from_takes_the_runs_compute_settings(movie, tmp_path):
  """remat_policy / scan_layers / dtype / attention_impl are the run's; the architecture is the checkpoint's."""
  tiny_hf_folder(tmp_path)
  config = tiny_config(**{"data.train": movie["train"], "model.remat_policy": "full", "model.scan_layers": True,
                          "model.hidden_size": 64})
  config.init_from = str(tmp_path / "hf")
  base_cfg, _, _, _ = finetune.backbone(config, "classification")
  assert (base_cfg.remat_policy, base_cfg.scan_layers, base_cfg.hidden_size) == ("full", True, 32)


def test_init_from_a_hugging_face_folder_loads_the_backbone(movie, tmp_path):
  params = tiny_hf_folder(tmp_path)
  config = tiny_config(**{"data.train": movie["train"], "data.validation": "", "total_steps": 0})
  config.init_from = str(tmp_path / "hf")
  base_cfg, pretrained, tokenizer_dir, with_head = finetune.backbone(config, "classification")
  assert not with_head  # a bare encoder: the classifier starts fresh
  assert base_cfg.hidden_size == 32 and tokenizer_dir == str(tmp_path / "hf")
  task = registry.get("classify", registry.FINETUNE).cls(config, load_tokenizer(tokenizer_dir))
  labels = task.load(movie["train"], "train").labels
  config.pooling = "pooler"
  objective = task.objective(task.model_config(base_cfg, labels), labels)
  fresh = jax.tree.map(np.asarray, __import__("flax").linen.meta.unbox(
      objective.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, jnp.zeros((1, 8), jnp.int32))))
  merged, new = loop.merge_pretrained(fresh, pretrained, seeds=1, source=str(tmp_path / "hf"))
  assert new == ["['classifier']['dense']['bias']", "['classifier']['dense']['kernel']"]
  np.testing.assert_array_equal(merged["embeddings"]["word_embeddings"]["embedding"],
                                np.asarray(params["embeddings"]["word_embeddings"]["embedding"].value))


@pytest.mark.parametrize("seeds", [1, 2])
def test_init_from_in_one_program_equals_initialising_then_merging(movie, tmp_path, seeds):
  """restore_or_init with `pretrained` (the loaded tensors' random init left to XLA to drop) gives the
  state of a full init with the tensors merged in afterwards, bit for bit: fresh head, moments, keys."""
  hf_params = tiny_hf_folder(tmp_path)
  config = tiny_config(**{"data.train": movie["train"], "data.validation": "", "total_steps": 0})
  config.init_from = str(tmp_path / "hf")
  base_cfg, pretrained, tokenizer_dir, _ = finetune.backbone(config, "classification")
  task = registry.get("classify", registry.FINETUNE).cls(config, load_tokenizer(tokenizer_dir))
  labels = task.load(movie["train"], "train").labels
  config.pooling = "pooler"
  cfg = task.model_config(base_cfg, labels)
  from bert_jax import checkpointing, sharding
  mesh = sharding.make_mesh(config.mesh.to_dict())
  setup = loop.setup_state(task.objective(cfg, labels), config.optimizer, 10, cfg.num_layers,
                           jax.ShapeDtypeStruct((1, 16), jnp.int32), mesh, sharding.rules_from_config(config.sharding_rules),
                           seeds=seeds)
  empty = checkpointing.Checkpointer(str(tmp_path / "none"), keep=1)
  got, step, fresh = loop.restore_or_init(empty, setup, 3, pretrained=pretrained, source=config.init_from)
  plain, _, _ = loop.restore_or_init(empty, setup, 3)
  merged, new = loop.merge_pretrained(plain.params, pretrained, seeds, config.init_from)
  assert (step, fresh) == (0, True) and new == ["['classifier']['dense']['bias']", "['classifier']['dense']['kernel']"]
  same = lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  jax.tree.map(same, got.params, merged)
  jax.tree.map(same, got.replace(params=None), plain.replace(params=None))
  words = np.asarray(got.params["embeddings"]["word_embeddings"]["embedding"])  # the folder's own tensor
  want = np.asarray(hf_params["embeddings"]["word_embeddings"]["embedding"].value)
  np.testing.assert_array_equal(words, np.broadcast_to(want, words.shape))
  head = np.asarray(got.params["classifier"]["dense"]["kernel"])
  assert np.abs(head).min() > 0  # drawn, not zeros
  if seeds > 1:  # each seed draws its own head on the one loaded backbone
    assert not np.array_equal(head[0], head[1])
    same(got.params["embeddings"]["word_embeddings"]["embedding"][0], got.params["embeddings"]["word_embeddings"]["embedding"][1])
  empty.close()


def test_fine_tuning_continues_a_fine_tuned_classifier_with_its_classes(movie, tmp_path):
  """init_from a fine-tuned classifier keeps its head: at learning rate 0 the continued run scores exactly
  what the saved model scored, and class k stays class k even when the new data lacks a class."""
  data = {"data.train": movie["train"], "data.validation": movie["dev"], "eval_every": 4}
  first = tmp_path / "first"
  finetune.finetune_and_evaluate(tiny_config(total_steps=4, **data), str(first))
  saved = json.load(open(first / "best.json"))["seeds"][0]["metrics"]
  # Exported for transformers, it is a BertForSequenceClassification with the class names and the same logits.
  from bert_jax.convert import __main__ as convert
  from bert_jax.convert.pretrained import from_pretrained
  convert.to_hf(str(first / "best"), str(tmp_path / "hf"))
  hf_config = json.load(open(tmp_path / "hf" / "config.json"))
  assert hf_config["architectures"] == ["BertForSequenceClassification"]
  assert hf_config["id2label"] == {"0": "neg", "1": "pos"}
  ids = np.asarray(load_tokenizer(str(tmp_path / "hf")).encode("a fine film").ids)[None]
  logits = [model.apply({"params": params}, ids).logits for model, params in
            (from_pretrained(str(path), head="classification") for path in (first / "best", tmp_path / "hf"))]
  np.testing.assert_allclose(logits[1], logits[0], atol=1e-6)
  only_pos = tmp_path / "pos.tsv"
  rows = [r for r in open(movie["train"], encoding="utf-8").read().splitlines()[1:] if r.endswith("\tpos")]
  only_pos.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
  config = tiny_config(total_steps=1, **{**data, "eval_every": 1, "data.train": str(only_pos)})
  config.init_from, config.optimizer.learning_rate = str(first / "best"), 0.0
  finetune.finetune_and_evaluate(config, str(tmp_path / "again"))
  assert _lines(tmp_path / "again", "eval/accuracy")[1] == pytest.approx(saved["accuracy"])
  assert _lines(tmp_path / "again", "eval/loss")[1] == pytest.approx(saved["loss"], rel=1e-4)
  assert json.load(open(tmp_path / "again" / "best" / "bert_jax.json"))["finetune"]["label_names"] == ["neg", "pos"]

  # A label the head has no class for: the error names it and the way out; fresh_head trains a new head.
  other = tmp_path / "other.tsv"
  other.write_text("sentence\tlabel\na fine film\tneutral\n" + "\n".join(rows) + "\n", encoding="utf-8")
  config.data.train = str(other)
  with pytest.raises(ValueError, match=r"other.tsv:2: unknown label 'neutral'.*fresh_head=True"):
    finetune.finetune_and_evaluate(config, str(tmp_path / "bad"))
  config.fresh_head, config.data.validation = True, ""
  finetune.finetune_and_evaluate(config, str(tmp_path / "fresh"))
  assert json.load(open(tmp_path / "fresh" / "best" / "bert_jax.json"))["finetune"]["label_names"] == ["neutral",
                                                                                                      "pos"]


def test_a_continued_head_must_have_the_outputs_the_data_needs(movie, tmp_path):
  """A Hugging Face classifier with one output (placeholder label names) cannot continue on two classes."""
  folder = tmp_path / "ce"
  shutil.copytree(REPO / "tests" / "testdata" / "hf" / "bert_cross_encoder", folder)
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, 97)]
  (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
  config = tiny_config(total_steps=1, **{"data.train": movie["train"], "data.validation": ""})
  config.init_from = str(folder)
  with pytest.raises(ValueError, match=r"classification head has 1 outputs, the classify data needs 2.*fresh_head"):
    finetune.finetune_and_evaluate(config, str(tmp_path / "run"))


def test_group_by_length_batches_cover_each_epoch_once_and_resume_by_step():
  lengths = np.random.default_rng(1).integers(3, 100, 200).astype(np.int32)
  epoch = np.concatenate([batching.train_indices(5, s, 16, lengths, True) for s in range(1, 13)])
  assert len(set(epoch.tolist())) == 12 * 16  # 200 // 16 batches, no example twice
  again = batching.train_indices(5, 7, 16, lengths.copy(), True)
  np.testing.assert_array_equal(again, epoch[6 * 16:7 * 16])
  spread = lambda group: np.mean([np.ptp(lengths[batching.train_indices(5, s, 16, lengths, group)])
                                  for s in range(1, 13)])
  assert spread(True) < spread(False) / 2
  assert batching.bucket_length(17, 128) == 32 and batching.bucket_length(3, 128) == 16
  assert batching.bucket_length(300, 256) == 256


# Tagging ----------------------------------------------------------------------------------------

def test_tag_labels_sit_on_the_first_sub_token_of_each_word(tmp_path):
  tokenizer = load_tokenizer(bundled_tokenizer("wordpiece"))
  words = ["Quetzalcoatl", "Bennet", "visited", "Zyxwvutopia", "."]
  tags = ["B-PER", "I-PER", "O", "B-LOC", "O"]
  path = tmp_path / "train.conll"
  path.write_text("\n".join(f"{w} {t}" for w, t in zip(words, tags)) + "\n", encoding="utf-8")
  config = tiny_config("tag")
  task = tagging.TagTask(config, tokenizer)
  data = task.load(str(path), "train")
  encoding = tokenizer.encode(" ".join(words))
  # Slow reference: a token starts word w when its first character is w's first character.
  text_starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
  expected_labels = np.zeros(len(encoding.ids), np.int32)
  expected_weights = np.zeros(len(encoding.ids), np.float32)
  for t, (begin, end) in enumerate(encoding.offsets):
    if encoding.special_tokens_mask[t] == 0 and begin in text_starts:
      expected_labels[t] = data.labels.encode(tags[list(text_starts).index(begin)])
      expected_weights[t] = 1
  assert expected_weights.sum() == len(words)
  assert len(encoding.ids) > len(words) + 2  # some word is split into several sub-tokens
  np.testing.assert_array_equal(data.arrays["labels"][0, :len(encoding.ids)], expected_labels)
  np.testing.assert_array_equal(data.arrays["label_weights"][0, :len(encoding.ids)], expected_weights)
  assert data.labels.names[0] == "O"
  # Predictions read back per word; words past the truncation come back as "O".
  predictions = data.arrays["labels"].copy()
  assert task.word_predictions(data, predictions) == [tags]
  second_word = int(np.flatnonzero(data.extra["word_index"][0] == 1)[0])
  assert task.word_predictions(data, predictions[:, :second_word + 1]) == [tags[:2] + ["O"] * 3]
  assert task.word_predictions(data, predictions[:, :second_word]) == [tags[:1] + ["O"] * 4]
  assert task.metrics(data, {"predictions": predictions})["f1"] == 1.0


# Span QA ----------------------------------------------------------------------------------------

def test_qa_windows_cover_the_context_and_point_at_the_answer(tmp_path):
  tokenizer = load_tokenizer(bundled_tokenizer("wordpiece"))
  context = " ".join(f"Sentence number {i} talks about the weather." for i in range(40))
  answer = "number 23"
  start = context.index(answer)
  squad = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
      {"id": "a", "question": "Which sentence?", "answers": [{"text": answer, "answer_start": start}]},
      {"id": "b", "question": "Nothing here?", "answers": [], "is_impossible": True}]}]}]}
  path = tmp_path / "squad.json"
  path.write_text(json.dumps(squad), encoding="utf-8")
  config = tiny_config("qa", **{"data.max_length": 48, "data.doc_stride": 16})
  task = span_qa.QATask(config, tokenizer)
  data = task.load(str(path), "train")
  owners, offsets = data.extra["owners"], data.extra["offsets"]
  windows = np.flatnonzero(owners == 0)
  assert len(windows) > 5
  covered = set()
  for f in windows:
    spans = offsets[f][offsets[f][:, 0] >= 0]
    covered |= {c for s, e in spans for c in range(s, e)}
    s, e = data.arrays["start_positions"][f], data.arrays["end_positions"][f]
    if s:
      assert context[offsets[f][s][0]:offsets[f][e][1]] == answer
    else:
      assert not (spans[0][0] <= start and start + len(answer) <= spans[-1][1])
  assert covered >= {i for i, ch in enumerate(context) if not ch.isspace()}
  assert sum(data.arrays["start_positions"][windows] > 0) >= 1
  assert not data.arrays["start_positions"][owners == 1].any()
  # Post-processing: logits peaked on the answer tokens give the answer; question b stays unanswered.
  n, length = data.arrays["input_ids"].shape
  start_logits, end_logits = np.zeros((n, length), np.float32), np.zeros((n, length), np.float32)
  f = windows[np.argmax(data.arrays["start_positions"][windows] > 0)]
  start_logits[f, data.arrays["start_positions"][f]] = end_logits[f, data.arrays["end_positions"][f]] = 10.0
  start_logits[owners == 1, 0] = end_logits[owners == 1, 0] = 10.0
  assert task.answers(data, start_logits, end_logits) == {"a": answer, "b": ""}
  assert task.metrics(data, {"start_logits": start_logits, "end_logits": end_logits}) == {
      "exact_match": 1.0, "f1": 1.0}


# Contrastive and ranking losses against numpy ---------------------------------------------------

def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_contrastive_loss_matches_a_numpy_reference():
  from bert_jax import models
  cfg = models.build("bert", "tiny", num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64)
  objective = contrastive.ContrastiveObjective(cfg, "mean", temperature=0.05)
  ids = jax.random.randint(jax.random.key(0), (3, 4, 10), 5, 1000)
  mask = np.ones((3, 4, 10), np.int32)
  mask[:, :, 7:] = 0
  batch = {f"{s}_input_ids": ids[i] for i, s in enumerate("apn")} | {f"{s}_attention_mask": mask[i]
                                                                      for i, s in enumerate("apn")}
  params = objective.init({"params": jax.random.key(1), "dropout": jax.random.key(1)}, ids[0])
  params = __import__("flax").linen.meta.unbox(params)
  sums = objective.sums(params, batch, None)
  emb = {}
  for side in "apn":
    hidden = np.asarray(objective.eval_model.apply({"params": params}, batch[f"{side}_input_ids"],
                                                   batch[f"{side}_attention_mask"]).last_hidden_state)
    m = batch[f"{side}_attention_mask"][..., None]
    pooled = (hidden * m).sum(1) / m.sum(1)
    emb[side] = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
  forward = _log_softmax(emb["a"] @ np.concatenate([emb["p"], emb["n"]]).T / 0.05)
  backward = _log_softmax(emb["p"] @ emb["a"].T / 0.05)
  expected = -(np.diag(forward) + np.diag(backward)) / 2
  np.testing.assert_allclose(sums["task_loss"], expected.sum(), rtol=2e-5)
  assert float(sums["task_count"]) == 4


def test_listwise_and_pointwise_ranking_losses_match_numpy():
  from bert_jax import models
  cfg = models.build("bert", "tiny", num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, num_labels=1)
  ids = np.asarray(jax.random.randint(jax.random.key(0), (2, 3, 12), 5, 1000))
  batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
  listwise = ranking.RankingObjective(cfg, listwise=True)
  params = __import__("flax").linen.meta.unbox(
      listwise.init({"params": jax.random.key(2), "dropout": jax.random.key(2)}, ids[0]))
  scores = np.asarray(listwise.scores(params, batch))
  flat = listwise.eval_model.apply({"params": params}, ids.reshape(6, 12), np.ones((6, 12), np.int32))
  np.testing.assert_allclose(scores, np.asarray(flat.logits)[:, 0].reshape(2, 3), rtol=1e-6)
  np.testing.assert_allclose(listwise.sums(params, batch, None)["task_loss"],
                             -_log_softmax(scores)[:, 0].sum(), rtol=1e-5)
  pointwise = ranking.RankingObjective(cfg, listwise=False)
  flat_batch = {k: v[:, 0] for k, v in batch.items()} | {"labels": np.array([1, 0])}
  s = np.asarray(pointwise.scores(params, flat_batch))
  bce = -(np.log(1 / (1 + np.exp(-s[0]))) + np.log(1 - 1 / (1 + np.exp(-s[1]))))
  np.testing.assert_allclose(pointwise.sums(params, flat_batch, None)["task_loss"], bce, rtol=1e-5)


def test_rerank_groups_from_jsonl_and_tables_and_bad_lines(tmp_path):
  grouped = tmp_path / "g.jsonl"
  grouped.write_text(json.dumps({"query": "q1", "positive": "p", "negatives": ["n1", "n2"]}) + "\n"
                     + json.dumps({"query": "q2", "positives": ["p2"]}) + "\n", encoding="utf-8")
  assert [(g["query"], g["positives"], g["negatives"]) for g in ranking.read_groups(str(grouped))] == [
      ("q1", ["p"], ["n1", "n2"]), ("q2", ["p2"], [])]
  table = tmp_path / "t.tsv"
  table.write_text("query\tpassage\tlabel\nq\ta\t1\nq\tb\t0\nr\tc\t1\n", encoding="utf-8")
  assert [(g["query"], g["positives"], g["negatives"]) for g in ranking.read_groups(str(table))] == [
      ("q", ["a"], ["b"]), ("r", ["c"], [])]
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"query": "q", "positives": ["p"]}) + "\n" + json.dumps({"query": "q"}) + "\n")
  with pytest.raises(ValueError, match=r"bad.jsonl:2: no positive"):
    ranking.read_groups(str(bad))


def test_contrastive_and_rerank_runs_save_models_the_commands_load(tmp_path):
  from bert_jax import embed
  from bert_jax.search import rerank
  rng = np.random.default_rng(0)
  sentences = [s.split("\t")[0] for s in open(str(MOVIE).format("dev"), encoding="utf-8").read().splitlines()[1:65]]
  pairs = tmp_path / "pairs.tsv"
  pairs.write_text("sentence\tsentence2\n" + "".join(f"{s}\t{s.lower()}\n" for s in sentences[:32]))
  sts = tmp_path / "sts.tsv"
  sts.write_text("sentence\tsentence2\tlabel\n" + "".join(
      f"{s}\t{s if i % 2 else sentences[-i - 1]}\t{5.0 if i % 2 else rng.uniform(0, 1):.2f}\n"
      for i, s in enumerate(sentences[32:48])))
  finetune.finetune_and_evaluate(tiny_config("contrastive", **{"data.train": str(pairs), "data.validation": str(sts),
                                                               "total_steps": 2}), str(tmp_path / "c"))
  vectors = embed.embed_texts(str(tmp_path / "c" / "best"), sentences[:3])
  np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)  # its Normalize module was honoured
  groups = tmp_path / "groups.jsonl"
  groups.write_text("".join(json.dumps({"query": s[:20], "positives": [s], "negatives": sentences[i + 1:i + 3]}) + "\n"
                            for i, s in enumerate(sentences[:32])))
  finetune.finetune_and_evaluate(tiny_config("rerank", **{"data.train": str(groups), "data.validation": str(groups),
                                                          "total_steps": 2}), str(tmp_path / "r"))
  candidates = tmp_path / "cands.jsonl"
  candidates.write_text(json.dumps({"id": "q", "query": "a query", "passages": sentences[:5]}) + "\n")
  rerank.main(["--model", str(tmp_path / "r" / "best"), "--input", str(candidates),
               "--output", str(tmp_path / "out.jsonl"), "--top_k", "3"])
  ranked = json.loads((tmp_path / "out.jsonl").read_text())["passages"]
  scorer = rerank.Reranker(str(tmp_path / "r" / "best"))
  direct = scorer.score(["a query"] * 5, sentences[:5])
  assert [p["id"] for p in ranked] == list(np.argsort(-direct, kind="stable")[:3])
  np.testing.assert_allclose([p["score"] for p in ranked], np.sort(direct)[::-1][:3], rtol=1e-5)


def test_bad_fine_tuning_input_names_the_problem(movie, tmp_path):
  bad = tmp_path / "bad.tsv"
  bad.write_text("sentence\tlabel\nfine\tpos\n\tneg\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"bad.tsv:3"):
    finetune.finetune_and_evaluate(tiny_config(**{"data.train": str(bad)}), str(tmp_path / "w"))
  unseen = tmp_path / "dev.tsv"
  unseen.write_text("sentence\tlabel\nfine\tmaybe\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"dev.tsv:2: unknown label 'maybe'"):
    finetune.finetune_and_evaluate(tiny_config(**{"data.train": movie["train"], "data.validation": str(unseen)}),
                                   str(tmp_path / "w2"))
  with pytest.raises(ValueError, match="config.task='nope'"):
    registry.get("nope", registry.FINETUNE)
  with pytest.raises(ValueError, match="fewer than one batch"):
    finetune.finetune_and_evaluate(tiny_config(**{"data.train": movie["train"], "data.validation": "",
                                                  "batch_size": 128}), str(tmp_path / "w3"))


def test_summary_flags_a_degenerate_seed():
  runs = [{"accuracy": 0.8, "predicted_classes": 2}, {"accuracy": 0.5, "predicted_classes": 1}]
  assert evaluation.degenerate_runs(runs) == [1]
  table = evaluation.summary_table({"metric": "accuracy", "seeds": [0, 1], "best_steps": [3, 3],
                                  "validation": evaluation.summarize_runs(runs), "test": {},
                                  "degenerate_seeds": [1]})
  assert "| validation | accuracy | 0.6500 | 0.6500 | 0.2121 |" in table and "Degenerate runs" in table


def test_task_distillation_from_a_fine_tuned_teacher(movie, tmp_path):
  data = {"data.train": movie["train"], "data.validation": movie["dev"], "total_steps": 3}
  finetune.finetune_and_evaluate(tiny_config(**data), str(tmp_path / "teacher"))
  student = tiny_config(**data, **{"distill.teacher": str(tmp_path / "teacher" / "best"), "model.hidden_size": 16,
                                   "model.intermediate_size": 32})
  finetune.finetune_and_evaluate(student, str(tmp_path / "student"))
  kd, hard = _lines(tmp_path / "student", "train/kd_loss"), _lines(tmp_path / "student", "train/hard_loss")
  assert sorted(kd) == [1, 2, 3] and all(np.isfinite(list(kd.values())) + np.isfinite(list(hard.values())))
  total = _lines(tmp_path / "student", "train/loss")
  for step in kd:  # loss = alpha_kd * KL + alpha_hard * CE with the defaults 0.5 / 0.5
    assert total[step] == pytest.approx(0.5 * kd[step] + 0.5 * hard[step], rel=1e-5)
  # A teacher trained on other labels is refused before any training.
  other = tmp_path / "other.tsv"
  other.write_text("sentence\tlabel\n" + "".join(f"s{i}\t{'abc'[i % 3]}\n" for i in range(32)), encoding="utf-8")
  with pytest.raises(ValueError, match="labels"):
    finetune.finetune_and_evaluate(tiny_config(**{**data, "data.train": str(other), "data.validation": "",
                                                  "distill.teacher": str(tmp_path / "teacher" / "best")}),
                                   str(tmp_path / "bad"))


def test_glue_pair_task_from_tfds_trains_through_the_same_loop(tmp_path):
  """tfds:glue/mrpc (sentence pairs, ClassLabel names) via tfds' mock data source: no TensorFlow, no download."""
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=32):
    summary = finetune.finetune_and_evaluate(
        tiny_config(**{"data.train": "tfds:glue/mrpc", "data.validation": "tfds:glue/mrpc", "total_steps": 2}),
        str(tmp_path))
  meta = json.load(open(tmp_path / "best" / "bert_jax.json"))["finetune"]
  assert meta["label_names"] == ["equivalent", "not_equivalent"]
  assert 0.0 <= summary["validation"]["accuracy"]["mean"] <= 1.0


def test_regress_reports_correlations_of_its_saved_model(tmp_path):
  """STS-B style scores (the movie set's `score` column); the logged Spearman is the saved model's."""
  train = _slice(str(MOVIE).format("train"), tmp_path / "train.tsv", 64)
  dev = _slice(str(MOVIE).format("dev"), tmp_path / "dev.tsv", 32)
  config = tiny_config("regress", **{"data.train": train, "data.validation": dev, "total_steps": 4})
  summary = finetune.finetune_and_evaluate(config, str(tmp_path / "w"))
  assert set(summary["validation"]) == {"pearson", "spearman", "mse", "loss"}
  task = registry.get("regress", registry.FINETUNE).cls(config, load_tokenizer(bundled_tokenizer("wordpiece")))
  data = task.load(dev, "validation")
  np.testing.assert_allclose(data.arrays["labels"][:2], [2.26666666667, 1.26666666667], rtol=1e-6)
  from bert_jax.convert.pretrained import from_pretrained
  model, params = from_pretrained(str(tmp_path / "w" / "best"), head="classification")
  objective = task.objective(model.config, None)
  predictions = batching.predict_split(jax.jit(objective.predict), params, data, 16, ())["logits"][:, 0]
  whole = np.asarray(model.apply({"params": params}, data.arrays["input_ids"], data.arrays["attention_mask"],
                                 data.arrays["token_type_ids"]).logits)[:, 0]
  np.testing.assert_allclose(predictions, whole, atol=1e-5)  # bucketed batches == one unpadded-to-bucket pass
  from scipy import stats
  best = json.load(open(tmp_path / "w" / "best.json"))["seeds"][0]["metrics"]
  # The run evaluated on 8 devices, this on one: float noise can swap nearly tied predictions of a
  # barely trained model, which moves Spearman in the 4th decimal.
  assert best["spearman"] == pytest.approx(stats.spearmanr(data.arrays["labels"], predictions).statistic, abs=1e-3)
  assert best["pearson"] == pytest.approx(stats.pearsonr(data.arrays["labels"], predictions).statistic, abs=1e-4)


def test_rerank_takes_a_hugging_face_cross_encoder_folder_as_it_is(tmp_path):
  """A BertForSequenceClassification with one label (tests/testdata/hf/bert_cross_encoder) plus its
  vocabulary: scores are sigmoid(logit), as sentence-transformers' CrossEncoder reports them, unless the
  folder says Identity."""
  import shutil
  from bert_jax.convert.pretrained import from_pretrained
  from bert_jax.search import rerank
  folder = tmp_path / "ce"
  shutil.copytree(REPO / "tests" / "testdata" / "hf" / "bert_cross_encoder", folder)
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, 97)]
  (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
  (folder / "tokenizer_config.json").write_text('{"do_lower_case": true}')
  queries, passages = ["w5 w6 w7", "w9 w10"], ["w11 w12 w13 w14", "w20 w21 w22"]
  scorer = rerank.Reranker(str(folder))
  assert scorer.activation == "sigmoid"
  model, params = from_pretrained(folder, head="classification")
  for q, p, got in zip(queries, passages, scorer.score(queries, passages)):
    enc = scorer.tokenizer.encode(q, p)
    logit = model.apply({"params": params}, np.asarray([enc.ids]), np.asarray([enc.attention_mask]),
                        np.asarray([enc.type_ids])).logits[0, 0]
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-logit)), atol=1e-6)
  config = json.loads((folder / "config.json").read_text())
  config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.linear.Identity"}
  (folder / "config.json").write_text(json.dumps(config))
  assert rerank.Reranker(str(folder)).activation == "identity"
