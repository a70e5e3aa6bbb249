"""Task metrics (bert_jax/evaluation/) against their references: sklearn, scipy, seqeval, SQuAD, hand counts."""

from __future__ import annotations

import math
import statistics
import warnings

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from bert_jax import evaluation

SIZES = (1, 2, 7, 50, 1000)
SEEDS = (0, 1, 2)


def quiet(fn, *args, **kwargs):
  """Calls a reference implementation, hiding its zero-division / constant-input warnings."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return fn(*args, **kwargs)


def strict(fn, *args, **kwargs):
  """Calls our implementation, failing on any warning it emits."""
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    return fn(*args, **kwargs)


def random_labels(seed: int, n: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """Labels and predictions that agree more often than chance, so scores spread over [0, 1]."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, n)
  predictions = np.where(rng.random(n) < 0.5, labels, rng.integers(0, num_classes, n))
  return labels, predictions


# ----------------------------------------------------------------------------
# Classification vs sklearn
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("num_classes", (2, 3, 5, 10))
def test_classification_matches_sklearn(seed, n, num_classes):
  labels, predictions = random_labels(seed, n, num_classes)
  score = strict(evaluation.accuracy, labels, predictions)
  assert type(score) is float
  assert score == pytest.approx(sklearn.metrics.accuracy_score(labels, predictions), abs=1e-12)
  for average in ("macro", "micro"):
    ours = strict(evaluation.f1, labels, predictions, average=average)
    assert type(ours) is float
    assert ours == pytest.approx(quiet(sklearn.metrics.f1_score, labels, predictions, average=average),
                                 abs=1e-12), average
  ours = strict(evaluation.matthews_corrcoef, labels, predictions)
  assert type(ours) is float
  assert ours == pytest.approx(quiet(sklearn.metrics.matthews_corrcoef, labels, predictions), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("positive", (0, 1))
def test_binary_f1_matches_sklearn(seed, n, positive):
  labels, predictions = random_labels(seed, n, 2)
  expected = quiet(sklearn.metrics.f1_score, labels, predictions, average="binary", pos_label=positive)
  assert strict(evaluation.f1, labels, predictions, positive=positive) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("labels, predictions", [
    ([0, 0, 0], [0, 0, 0]),  # No positive anywhere: 0 / 0.
    ([1, 1, 0], [0, 0, 0]),  # Positive never predicted.
    ([0, 0, 0], [1, 0, 1]),  # Positive never true.
    ([1, 1, 1], [1, 1, 1]),
    ([1], [0]),
])
def test_f1_zero_division_matches_sklearn(labels, predictions):
  for average in ("binary", "macro", "micro"):
    expected = quiet(sklearn.metrics.f1_score, labels, predictions, average=average)
    assert strict(evaluation.f1, labels, predictions, average=average) == pytest.approx(expected, abs=1e-12)
  assert strict(evaluation.f1, [0, 0, 0], [0, 0, 0]) == 0.0


def test_f1_macro_counts_classes_only_predicted():
  # Class 2 is predicted but never true: it adds a 0 to the macro mean, as in sklearn.
  labels, predictions = [0, 1, 0, 1], [0, 1, 2, 1]
  expected = quiet(sklearn.metrics.f1_score, labels, predictions, average="macro")
  assert evaluation.f1(labels, predictions, average="macro") == pytest.approx(expected)
  # Class 0: tp 1, fn 1 -> 2/3; class 1: 1; class 2: 0.
  assert expected == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_f1_string_labels():
  labels = ["pos", "neg", "pos", "neg", "pos"]
  predictions = ["pos", "pos", "neg", "neg", "pos"]
  expected = sklearn.metrics.f1_score(labels, predictions, pos_label="pos")
  assert evaluation.f1(labels, predictions, positive="pos") == pytest.approx(expected)
  assert evaluation.f1(labels, predictions, positive="neg") == pytest.approx(
      sklearn.metrics.f1_score(labels, predictions, pos_label="neg"))
  assert evaluation.matthews_corrcoef(labels, predictions) == pytest.approx(
      sklearn.metrics.matthews_corrcoef(labels, predictions))


def test_f1_rejects_what_sklearn_rejects():
  with pytest.raises(ValueError):
    sklearn.metrics.f1_score([0, 1, 2], [0, 1, 1], average="binary")
  with pytest.raises(ValueError, match="binary"):
    evaluation.f1([0, 1, 2], [0, 1, 1], average="binary")
  with pytest.raises(ValueError):
    sklearn.metrics.f1_score([2, 3], [3, 2], pos_label=1)
  with pytest.raises(ValueError, match="positive"):
    evaluation.f1([2, 3], [3, 2], positive=1)
  with pytest.raises(ValueError, match="average"):
    evaluation.f1([0, 1], [0, 1], average="weighted")
  with pytest.raises(ValueError, match="2 labels but 3"):
    evaluation.accuracy([0, 1], [0, 1, 1])
  with pytest.raises(ValueError, match="no examples"):
    evaluation.accuracy([], [])


@pytest.mark.parametrize("labels, predictions", [
    ([0, 0, 0, 0], [0, 0, 0, 0]),
    ([0, 1, 2, 0], [1, 1, 1, 1]),  # A constant predictor: 0, not nan.
    ([0, 1, 2, 0], [2, 0, 1, 2]),  # Always wrong: negative.
    ([3, 1, 2, 0], [3, 1, 2, 0]),
])
def test_mcc_edge_cases_match_sklearn(labels, predictions):
  expected = quiet(sklearn.metrics.matthews_corrcoef, labels, predictions)
  assert strict(evaluation.matthews_corrcoef, labels, predictions) == pytest.approx(expected, abs=1e-12)


def test_mcc_large_n_no_overflow():
  labels, predictions = random_labels(3, 200_000, 4)
  expected = sklearn.metrics.matthews_corrcoef(labels, predictions)
  assert evaluation.matthews_corrcoef(labels, predictions) == pytest.approx(expected, abs=1e-9)
  assert 0.3 < expected < 0.9


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_classes", (2, 3, 6))
def test_classification_metrics_from_logits(seed, num_classes):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, 300)
  logits = rng.normal(size=(300, num_classes)).astype(np.float32)
  logits[np.arange(300), labels] += 1.0
  predictions = logits.argmax(-1)
  out = evaluation.classification_metrics(labels, logits)
  assert set(out) == {"accuracy", "f1", "mcc", "predicted_classes"}
  average = "binary" if num_classes == 2 else "macro"
  assert out["accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(labels, predictions))
  assert out["f1"] == pytest.approx(sklearn.metrics.f1_score(labels, predictions, average=average))
  assert out["mcc"] == pytest.approx(sklearn.metrics.matthews_corrcoef(labels, predictions))
  assert type(out["predicted_classes"]) is int and out["predicted_classes"] == num_classes


def test_classification_metrics_flags_single_class_predictor():
  rng = np.random.default_rng(4)
  labels = rng.integers(0, 3, 50)
  logits = rng.normal(size=(50, 3))
  logits[:, 1] += 100.0
  out = strict(evaluation.classification_metrics, labels, logits)
  assert out["predicted_classes"] == 1
  assert out["mcc"] == 0.0
  assert out["accuracy"] == pytest.approx(np.mean(labels == 1))
  assert evaluation.degenerate_runs([out, {"predicted_classes": 3}]) == [0]


def test_classification_metrics_rejects_bad_shapes():
  with pytest.raises(ValueError, match="C >= 2"):
    evaluation.classification_metrics([0, 1], np.zeros((2, 1)))
  with pytest.raises(ValueError, match="does not match"):
    evaluation.classification_metrics([0, 1, 1], np.zeros((2, 2)))
  with pytest.raises(ValueError, match=r"\[0, 2\)"):
    evaluation.classification_metrics([0, 2], np.zeros((2, 2)))


# ----------------------------------------------------------------------------
# Regression vs scipy
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", (2, 3, 10, 100, 1000))
@pytest.mark.parametrize("ties", (False, True))
def test_correlations_match_scipy(seed, n, ties):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=n)
  y = 0.6 * x + rng.normal(size=n)
  if ties:  # Few distinct values: many tied ranks.
    x, y = np.round(x), np.round(y * 2) / 2
  expected_p = quiet(scipy.stats.pearsonr, x, y).statistic
  expected_s = quiet(scipy.stats.spearmanr, x, y).statistic
  ours_p, ours_s = strict(evaluation.pearson, x, y), strict(evaluation.spearman, x, y)
  assert type(ours_p) is float and type(ours_s) is float
  if np.isnan(expected_p):  # A tied draw came out constant.
    assert math.isnan(ours_p) and math.isnan(ours_s)
    return
  assert ours_p == pytest.approx(expected_p, abs=1e-10)
  assert ours_s == pytest.approx(expected_s, abs=1e-10)


def test_spearman_ties_use_average_ranks():
  # Ranks: x -> [1, 2.5, 2.5, 4], y -> [1, 2, 3, 4].
  x, y = [1.0, 2.0, 2.0, 3.0], [10.0, 20.0, 30.0, 40.0]
  expected = np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1]
  assert evaluation.spearman(x, y) == pytest.approx(expected)
  assert evaluation.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic)
  assert evaluation.spearman(x, y) < 1.0


def test_correlations_large_offset_match_scipy():
  rng = np.random.default_rng(5)
  x = 1e6 + rng.normal(size=50)
  y = x + rng.normal(size=50)
  assert evaluation.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y).statistic, abs=1e-9)


@pytest.mark.parametrize("x, y", [
    ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]),
    ([1.0, 2.0, 3.0], [0.5, 0.5, 0.5]),
    ([0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]),
])
def test_constant_input_is_nan_without_warnings(x, y):
  assert np.isnan(quiet(scipy.stats.pearsonr, x, y).statistic)
  assert np.isnan(quiet(scipy.stats.spearmanr, x, y).statistic)
  assert math.isnan(strict(evaluation.pearson, x, y))
  assert math.isnan(strict(evaluation.spearman, x, y))
  out = strict(evaluation.regression_metrics, x, y)
  assert math.isnan(out["pearson"]) and math.isnan(out["spearman"])


def test_regression_metrics():
  rng = np.random.default_rng(6)
  labels = rng.uniform(0, 5, 200)
  predictions = labels + rng.normal(scale=0.7, size=200)
  out = evaluation.regression_metrics(labels, predictions)
  assert set(out) == {"pearson", "spearman", "mse"}
  assert out["pearson"] == pytest.approx(scipy.stats.pearsonr(labels, predictions).statistic)
  assert out["spearman"] == pytest.approx(scipy.stats.spearmanr(labels, predictions).statistic)
  assert out["mse"] == pytest.approx(sklearn.metrics.mean_squared_error(labels, predictions))
  assert evaluation.regression_metrics([1.0, 2.0], [2.0, 4.0])["mse"] == pytest.approx(2.5)
  with pytest.raises(ValueError, match="length"):
    evaluation.regression_metrics([1.0, 2.0], [1.0])


# ----------------------------------------------------------------------------
# Entity-level token classification (hand-worked seqeval / conlleval cases)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("tags, spans", [
    # seqeval's get_entities docstring and tests.
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 1), ("LOC", 3, 3)}),
    (["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O", "B-PER", "I-PER"], {("MISC", 3, 5), ("PER", 7, 8)}),
    (["O", "O", "O", "B", "I", "I", "O"], {("_", 3, 5)}),  # Untyped tags: type "_".
    (["B", "I", "O", "I", "I"], {("_", 0, 1), ("_", 3, 4)}),  # Untyped I after O opens a chunk.
    # IOB1: I- opens a chunk after O or another type; B- only splits same-type neighbours.
    (["I-PER", "I-PER", "I-LOC"], {("PER", 0, 1), ("LOC", 2, 2)}),
    (["I-PER", "B-PER", "I-PER", "O", "I-LOC"], {("PER", 0, 0), ("PER", 1, 2), ("LOC", 4, 4)}),
    (["O", "I-ORG", "I-ORG", "O"], {("ORG", 1, 2)}),
    # IOB2 with an I- of a different type: the chunk is cut and a new one starts.
    (["B-PER", "I-LOC", "I-LOC"], {("PER", 0, 0), ("LOC", 1, 2)}),
    # BIOES.
    (["B-PER", "I-PER", "E-PER", "S-LOC", "O"], {("PER", 0, 2), ("LOC", 3, 3)}),
    (["S-PER", "S-PER"], {("PER", 0, 0), ("PER", 1, 1)}),
    (["B-PER", "E-PER", "I-PER", "E-PER"], {("PER", 0, 1), ("PER", 2, 3)}),
    (["B-PER", "E-PER", "E-PER"], {("PER", 0, 1), ("PER", 2, 2)}),
    (["O", "E-PER"], {("PER", 1, 1)}),
    (["B-PER", "S-PER", "B-LOC", "I-LOC"], {("PER", 0, 0), ("PER", 1, 1), ("LOC", 2, 3)}),
    (["B-PER", "I-PER"], {("PER", 0, 1)}),  # Ends at the end of the sequence.
    # conlleval's "." neither opens nor closes by type.
    (["B-PER", ".", "I-PER"], {("PER", 0, 0), ("PER", 2, 2)}),
    # Unknown tag letters behave as seqeval makes them: like I- of their type.
    (["B-PER", "X-PER", "O"], {("PER", 0, 1)}),
    (["B-PER", "X-LOC"], {("PER", 0, 0), ("LOC", 1, 1)}),
    (["O", "O"], set()),
    ([], set()),
])
def test_entity_spans(tags, spans):
  assert evaluation.entity_spans(tags) == spans


def test_entity_spans_rejects_empty_tag():
  with pytest.raises(ValueError, match="position 1"):
    evaluation.entity_spans(["O", ""])


SEQEVAL_TRUE = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
SEQEVAL_PRED = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]


def test_entity_f1_seqeval_documented_example():
  out = evaluation.entity_f1(SEQEVAL_TRUE, SEQEVAL_PRED)
  assert out == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
  assert all(type(v) is float for v in out.values())
  assert evaluation.token_accuracy(SEQEVAL_TRUE, SEQEVAL_PRED) == pytest.approx(0.8)


@pytest.mark.parametrize("true, pred, expected", [
    # Type error on one of two entities.
    ([["B-LOC", "I-LOC", "O", "B-PER"]], [["B-LOC", "I-LOC", "O", "B-ORG"]], (0.5, 0.5, 0.5)),
    # One of two gold entities found, nothing spurious: p 1, r 1/2, f1 2/3.
    ([["B-PER", "O"], ["O", "B-LOC"]], [["B-PER", "O"], ["O", "O"]], (1.0, 0.5, 2 / 3)),
    # Three predicted (one is a boundary error), two gold, one right: p 1/3, r 1/2, f1 0.4.
    ([["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]], [["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]], (1 / 3, 0.5, 0.4)),
    # A sentence end closes an entity: I- at the start of sentence 2 opens a new one.
    ([["B-PER", "I-PER"], ["I-PER", "O"]], [["B-PER", "I-PER"], ["O", "O"]], (1.0, 0.5, 2 / 3)),
    # Same spans in different sentences are different entities.
    ([["B-PER", "O"], ["O", "O"]], [["O", "O"], ["B-PER", "O"]], (0.0, 0.0, 0.0)),
    # Nothing predicted, nothing gold: all 0 (seqeval's 0 / 0).
    ([["O", "O"]], [["O", "O"]], (0.0, 0.0, 0.0)),
    ([["B-PER"]], [["O"]], (0.0, 0.0, 0.0)),
    # IOB1 gold against IOB2 prediction of the same chunks.
    ([["I-PER", "I-PER", "I-LOC"]], [["B-PER", "I-PER", "B-LOC"]], (1.0, 1.0, 1.0)),
])
def test_entity_f1_hand_worked(true, pred, expected):
  out = evaluation.entity_f1(true, pred)
  assert (out["precision"], out["recall"], out["f1"]) == pytest.approx(expected)


def test_entity_f1_symmetry_and_perfect_prediction():
  rng = np.random.default_rng(7)
  vocab = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-LOC", "S-ORG"]
  true = [list(rng.choice(vocab, int(rng.integers(0, 12)))) for _ in range(40)]
  pred = [list(rng.choice(vocab, len(s))) for s in true]
  forward, backward = evaluation.entity_f1(true, pred), evaluation.entity_f1(pred, true)
  assert forward["precision"] == pytest.approx(backward["recall"])
  assert forward["f1"] == pytest.approx(backward["f1"])
  assert 0.0 < forward["f1"] < 1.0
  assert evaluation.entity_f1(true, true) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
  assert evaluation.token_accuracy(true, true) == 1.0


def test_sequence_length_mismatch_names_sentence():
  true = [["O", "B-PER"], ["O", "O", "O"], ["O"]]
  pred = [["O", "B-PER"], ["O", "O"], ["O"]]
  with pytest.raises(ValueError, match="sentence 1"):
    evaluation.entity_f1(true, pred)
  with pytest.raises(ValueError, match="sentence 1"):
    evaluation.token_accuracy(true, pred)
  with pytest.raises(ValueError, match="3 true sentences but 2"):
    evaluation.entity_f1(true, pred[:2])


def test_token_accuracy_counts_o_tags():
  assert evaluation.token_accuracy([["O", "B-PER"], ["O"]], [["O", "O"], ["B-LOC"]]) == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------
# SQuAD (hand-worked against the official script's rules)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, normalized", [
    ("The Quick, Brown Fox!", "quick brown fox"),
    ("  an   apple a day ", "apple day"),
    ("Theater's", "theaters"),  # "the" inside a word stays; the apostrophe goes.
    ("A.B.C.", "abc"),
    ("the-the", "thethe"),  # Punctuation goes before articles, so this is one word.
    ("the (a) an", ""),
    ("Émile\tZola", "émile zola"),
])
def test_normalize_answer(text, normalized):
  assert evaluation.normalize_answer(text) == normalized


def test_exact_match():
  assert evaluation.exact_match("the Eiffel Tower.", ["Eiffel Tower"]) == 1.0
  assert evaluation.exact_match("Tower", ["Eiffel Tower", "tower!"]) == 1.0
  assert evaluation.exact_match("Paris France", ["Paris"]) == 0.0
  assert evaluation.exact_match("Paris", "paris") == 1.0  # A bare string is one answer, not characters.
  assert evaluation.exact_match("p", "paris") == 0.0


def test_span_f1():
  # Tokens [big, red, dog] vs [red, dog, barks]: 2 shared, p = r = 2/3.
  assert evaluation.span_f1("the big red dog", ["red dog barks"]) == pytest.approx(2 / 3)
  assert evaluation.span_f1("the big red dog", ["red dog barks", "Big red dog!"]) == 1.0
  # vs [red, dog]: p 2/3, r 1 -> 0.8; the best of the golds counts.
  assert evaluation.span_f1("the big red dog", ["cat", "a red dog"]) == pytest.approx(0.8)
  # Tokens count as a multiset: one shared "dog", p 1/3, r 1.
  assert evaluation.span_f1("dog dog dog", ["dog"]) == pytest.approx(0.5)
  assert evaluation.span_f1("cat", ["dog"]) == 0.0


def test_squad_v2_unanswerable():
  for golds in ([""], [], ["the"]):  # "the" normalizes to "": unanswerable too.
    assert evaluation.exact_match("", golds) == 1.0
    assert evaluation.span_f1("", golds) == 1.0
    assert evaluation.span_f1("An", golds) == 1.0
    assert evaluation.exact_match("Paris", golds) == 0.0
    assert evaluation.span_f1("Paris", golds) == 0.0
  assert evaluation.span_f1("", ["Paris"]) == 0.0
  assert evaluation.exact_match("", ["Paris"]) == 0.0
  # The v2 script drops empty golds when a real one exists.
  assert evaluation.exact_match("", ["", "Paris"]) == 0.0
  assert evaluation.span_f1("", ["", "Paris"]) == 0.0


def test_squad_metrics():
  predictions = {"q1": "Eiffel Tower", "q2": "the big red dog", "q4": "", "q5": "ignored"}
  answers = {"q1": ["the Eiffel Tower"], "q2": ["red dog barks"], "q3": ["missing"], "q4": []}
  out = evaluation.squad_metrics(predictions, answers)
  assert out == pytest.approx({"exact_match": (1 + 0 + 0 + 1) / 4, "f1": (1 + 2 / 3 + 0 + 1) / 4})
  assert evaluation.squad_metrics({"q1": "x"}, {"q1": ["x"]}) == {"exact_match": 1.0, "f1": 1.0}
  with pytest.raises(ValueError, match="no questions"):
    evaluation.squad_metrics({}, {})


# ----------------------------------------------------------------------------
# Retrieval (hand-computed)
# ----------------------------------------------------------------------------

RANKED = [["a", "b", "c", "d"], ["x", "y", "z"], ["p", "q"]]
RELEVANT = [{"b", "d"}, {"z"}, {"r"}]


def test_recall_at_k():
  assert evaluation.recall_at_k(RANKED, RELEVANT, 1) == 0.0
  assert evaluation.recall_at_k(RANKED, RELEVANT, 2) == pytest.approx((0.5 + 0 + 0) / 3)
  assert evaluation.recall_at_k(RANKED, RELEVANT, 3) == pytest.approx((0.5 + 1 + 0) / 3)
  assert evaluation.recall_at_k(RANKED, RELEVANT, 4) == pytest.approx((1 + 1 + 0) / 3)
  assert evaluation.recall_at_k(RANKED, RELEVANT, 100) == pytest.approx(2 / 3)


def test_mrr():
  assert evaluation.mrr(RANKED, RELEVANT) == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
  assert evaluation.mrr(RANKED, RELEVANT, k=2) == pytest.approx((1 / 2 + 0 + 0) / 3)
  assert evaluation.mrr(RANKED, RELEVANT, k=1) == 0.0
  assert evaluation.mrr([["a", "b"]], [{"a", "b"}]) == 1.0


def test_ndcg_at_k():
  # Query 1: hit at rank 2, ideal has 2 hits; query 2: hit at rank 3, ideal 1; query 3: nothing.
  q1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
  q2 = (1 / math.log2(4)) / 1
  assert evaluation.ndcg_at_k(RANKED, RELEVANT, 3) == pytest.approx((q1 + q2 + 0) / 3)
  # At k = 1 the ideal is a single hit, which no query has.
  assert evaluation.ndcg_at_k(RANKED, RELEVANT, 1) == 0.0
  assert evaluation.ndcg_at_k([["b", "d", "a"]], [{"b", "d"}], 3) == pytest.approx(1.0)
  assert evaluation.ndcg_at_k([["a", "b"]], [{"b"}], 2) == pytest.approx(1 / math.log2(3))


def test_retrieval_repeated_ids_count_once():
  ranked, relevant = [["a", "a", "b"]], [{"a", "b"}]
  assert evaluation.recall_at_k(ranked, relevant, 2) == 0.5
  assert evaluation.ndcg_at_k(ranked, relevant, 3) == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)))


def test_retrieval_rejects_bad_input():
  with pytest.raises(ValueError, match="query 1"):
    evaluation.recall_at_k([["a"], ["b"]], [{"a"}, set()], 1)
  with pytest.raises(ValueError, match="2 ranked lists but 1"):
    evaluation.mrr([["a"], ["b"]], [{"a"}])
  with pytest.raises(ValueError, match="k must be"):
    evaluation.ndcg_at_k([["a"]], [{"a"}], 0)


# ----------------------------------------------------------------------------
# Across runs
# ----------------------------------------------------------------------------


def test_summarize_runs_matches_statistics_module():
  runs = [{"accuracy": 0.8, "f1": 0.7}, {"accuracy": 0.9}, {"accuracy": 0.85, "f1": 0.75}, {"accuracy": 0.6}]
  summary = evaluation.summarize_runs(runs)
  assert list(summary) == ["accuracy", "f1"]
  accuracies = [0.8, 0.9, 0.85, 0.6]
  assert summary["accuracy"] == pytest.approx({
      "mean": statistics.mean(accuracies), "median": statistics.median(accuracies),
      "std": statistics.stdev(accuracies), "min": 0.6, "max": 0.9, "n": 4})
  assert summary["f1"] == pytest.approx({
      "mean": 0.725, "median": 0.725, "std": statistics.stdev([0.7, 0.75]), "min": 0.7, "max": 0.75, "n": 2})
  assert type(summary["accuracy"]["n"]) is int
  assert all(type(v) is float for k, v in summary["accuracy"].items() if k != "n")


def test_summarize_single_run_and_errors():
  assert evaluation.summarize_runs([{"mcc": 0.4}]) == {
      "mcc": {"mean": 0.4, "median": 0.4, "std": 0.0, "min": 0.4, "max": 0.4, "n": 1}}
  assert evaluation.summarize_runs([]) == {}
  with pytest.raises(TypeError, match="run 1: metric 'f1'"):
    evaluation.summarize_runs([{"f1": 0.5}, {"f1": "high"}])


def test_degenerate_runs():
  runs = [{"predicted_classes": 2, "f1": 0.8}, {"predicted_classes": 1, "f1": 0.0},
          {"predicted_classes": 0, "f1": 0.0}, {"predicted_classes": 3, "f1": 0.9}]
  assert evaluation.degenerate_runs(runs) == [1, 2]
  assert evaluation.degenerate_runs(runs, key="f1") == [0, 1, 2, 3]
  assert evaluation.degenerate_runs([{"predicted_classes": 2}]) == []
  with pytest.raises(KeyError, match="run 1"):
    evaluation.degenerate_runs([{"predicted_classes": 2}, {"f1": 0.1}])
