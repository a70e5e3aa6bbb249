"""MLM masking (bert_jax/data/masking.py): counts, positions, 80/10/10, whole words, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from bert_jax.data.pretraining import masking
from bert_jax.data.tokenizers import bundled_tokenizer, load_tokenizer

VOCAB = 1000
PAD, CLS, SEP, MASK = 0, 2, 3, 4
SPECIALS = (0, 1, 2, 3, 4)


def make_spec(whole_word=False, max_predictions=20, mask_rate=0.15) -> masking.MaskingSpec:
  is_special = np.zeros(VOCAB, dtype=bool)
  is_special[list(SPECIALS)] = True
  return masking.MaskingSpec(mask_rate, max_predictions, MASK, is_special,
                             np.flatnonzero(~is_special).astype(np.int32), whole_word)


def make_rows(batch=4000, length=64, seed=0):
  """[CLS] random ids [SEP] then padding; lengths 3..length. Returns ids, attention, lengths."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, length + 1, batch)
  ids = rng.integers(5, VOCAB, (batch, length)).astype(np.int32)
  attention = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  ids[:, 0] = CLS
  ids[np.arange(batch), lengths - 1] = SEP
  ids[attention == 0] = PAD
  return ids, attention, lengths


def test_counts_positions_and_padding():
  ids, attention, lengths = make_rows()
  out = masking.mask_batch(ids, attention, masking.example_keys(0, 0, np.arange(len(ids))), make_spec())
  weights = out["masked_weights"]
  expected = np.minimum(20, np.minimum(np.maximum(1, np.rint(0.15 * lengths)), lengths - 2))
  np.testing.assert_array_equal(weights.sum(1), expected)
  rows = np.arange(len(ids))[:, None]
  positions, real = out["masked_positions"], weights > 0
  # Real slots first, ascending, distinct, on real non-special tokens; unused slots are zeros.
  assert np.all(real[:, :-1] >= real[:, 1:])  # real slots form a prefix
  assert np.all(np.diff(positions, axis=1)[real[:, 1:]] > 0)
  assert np.all(positions[real] >= 1) and np.all(positions[real] < (lengths - 1)[:, None].repeat(20, 1)[real])
  assert np.all(positions[~real] == 0) and np.all(out["masked_ids"][~real] == 0)
  np.testing.assert_array_equal(out["masked_ids"][real], ids[rows, positions][real])
  # Nothing outside the chosen positions changes; specials and padding never move.
  changed = np.zeros_like(ids, dtype=bool)
  changed[np.broadcast_to(rows, positions.shape)[real], positions[real]] = True
  np.testing.assert_array_equal(out["input_ids"][~changed], ids[~changed])
  assert out["input_ids"].dtype == np.int32 and out["masked_weights"].dtype == np.float32


def test_80_10_10_and_uniform_positions():
  ids, attention, lengths = make_rows(batch=6000, length=32)
  out = masking.mask_batch(ids, attention, masking.example_keys(1, 0, np.arange(len(ids))), make_spec())
  real = out["masked_weights"] > 0
  rows = np.broadcast_to(np.arange(len(ids))[:, None], real.shape)[real]
  new = out["input_ids"][rows, out["masked_positions"][real]]
  old = out["masked_ids"][real]
  to_mask, kept = np.mean(new == MASK), np.mean(new == old)
  random = (new != MASK) & (new != old)
  assert abs(to_mask - 0.8) < 0.01
  assert abs(kept - 0.1) < 0.01  # a random draw equal to the original is rare (1 in 995)
  assert abs(random.mean() - 0.1) < 0.01
  assert not np.isin(new[random], SPECIALS).any()
  assert len(np.unique(new[random])) > 500  # drawn over the whole non-special vocabulary
  # Every inner position of full-length rows is chosen about equally often.
  ids, attention, _ = make_rows(batch=6000, length=32, seed=2)
  ids[:, 1:31], ids[:, 31], attention[:] = np.maximum(ids[:, 1:31], 5), SEP, 1
  out = masking.mask_batch(ids, attention, masking.example_keys(2, 0, np.arange(len(ids))), make_spec())
  hits = np.bincount(out["masked_positions"][out["masked_weights"] > 0], minlength=32)
  inner = hits[1:31]
  assert hits[0] == 0 and hits[31] == 0
  assert inner.min() > 0.9 * inner.mean() and inner.max() < 1.1 * inner.mean()


def test_whole_words_are_never_split():
  ids, attention, _ = make_rows(batch=2000, length=48, seed=3)
  rng = np.random.default_rng(4)
  starts = rng.random(ids.shape) < 0.4
  out = masking.mask_batch(ids, attention, masking.example_keys(0, 0, np.arange(len(ids))), make_spec(True), starts)
  candidates = (attention > 0) & ~np.isin(ids, SPECIALS)
  for row in range(len(ids)):
    chosen = np.zeros(ids.shape[1], dtype=bool)
    chosen[out["masked_positions"][row][out["masked_weights"][row] > 0]] = True
    assert not chosen[~candidates[row]].any()
    # A continuation (not a word start, right after a candidate) goes with the token before it.
    for position in range(1, ids.shape[1]):
      if candidates[row, position] and candidates[row, position - 1] and not starts[row, position]:
        assert chosen[position] == chosen[position - 1]
  budget = np.minimum(20, np.maximum(1, np.rint(0.15 * attention.sum(1))))
  assert np.all(out["masked_weights"].sum(1) <= budget)
  assert out["masked_weights"].sum() > 0.9 * budget.sum()  # skipping words that overflow loses little


def test_keys_decide_everything():
  ids, attention, _ = make_rows(batch=64)
  spec = make_spec()
  keys = masking.example_keys(5, 0, np.arange(64), 0)
  first = masking.mask_batch(ids, attention, keys, spec)
  # Same keys in another batch composition (reversed): the same masks.
  backward = masking.mask_batch(ids[::-1], attention[::-1], keys[::-1], spec)
  for name in first:
    np.testing.assert_array_equal(first[name], backward[name][::-1])
  other_epoch = masking.mask_batch(ids, attention, masking.example_keys(5, 0, np.arange(64), 1), spec)
  assert not np.array_equal(first["masked_positions"], other_epoch["masked_positions"])
  other_stream = masking.example_keys(5, 1, np.arange(64), 0)
  assert len(set(keys.tolist()) | set(other_stream.tolist())) == 128
  u = masking.uniform(masking.example_keys(0, 0, np.arange(1000)), 100, 1)
  assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def test_edge_cases():
  spec = make_spec(max_predictions=40)
  ids = np.array([[CLS, SEP, PAD, PAD], [CLS, 10, SEP, PAD]], dtype=np.int32)
  out = masking.mask_batch(ids, ids != PAD, masking.example_keys(0, 0, [0, 1]), spec)
  assert out["masked_positions"].shape == (2, 40)  # more slots than tokens: padded
  np.testing.assert_array_equal(out["masked_weights"].sum(1), [0, 1])  # no candidate / at least one
  assert out["masked_positions"][1, 0] == 1
  with pytest.raises(ValueError, match="word_starts"):
    masking.mask_batch(ids, ids != PAD, masking.example_keys(0, 0, [0, 1]), make_spec(True))
  with pytest.raises(ValueError, match=r"\[0, 1000\)"):
    masking.mask_batch(ids + 1000, ids != PAD, masking.example_keys(0, 0, [0, 1]), spec)
  with pytest.raises(ValueError, match="mask_rate"):
    make_spec(mask_rate=0.0)


def test_spec_from_tokenizer():
  tokenizer = load_tokenizer(bundled_tokenizer("bpe"))
  spec = masking.MaskingSpec.from_tokenizer(tokenizer, mask_rate=0.15, max_predictions=20)
  assert spec.mask_id == tokenizer.mask_id == 8191
  assert spec.is_special[tokenizer.special_ids].all() and spec.is_special.sum() == len(tokenizer.special_ids)
  assert not np.isin(spec.random_ids, tokenizer.special_ids).any()
  assert len(spec.random_ids) == tokenizer.max_id + 1 - len(tokenizer.special_ids)
