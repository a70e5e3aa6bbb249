"""Masked-language-model masking in pure numpy: choose positions, replace 80/10/10.

    spec = MaskingSpec.from_tokenizer(tokenizer, mask_rate=0.15, max_predictions=20)
    keys = example_keys(seed, stream, example_indices, epochs)          # uint64 [batch]
    out = mask_batch(input_ids, attention_mask, keys, spec)              # dict of arrays

Selection follows google-research/bert `create_masked_lm_predictions`:
round(mask_rate * non-padding tokens) positions (at least 1, at most
max_predictions), never a special token or padding; whole-word mode picks whole
words in random order, skipping a word that would overflow the budget. Each
chosen token becomes the mask token with probability 0.8, a random non-special
token with 0.1, and stays itself with 0.1.

Randomness is counter-based: every random number is a hash of (example key,
position, purpose), so an example's mask depends only on its key, never on
which batch it lands in, the batch size or the number of worker processes. The
loader derives keys from (seed, example index, epoch) for dynamic masking and
from (seed, example index) for static masking.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# splitmix64 constants (Steele et al., "Fast splittable pseudorandom number generators").
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB

# What each random draw is for; distinct so the draws are independent.
_SELECT, _ACTION, _REPLACEMENT = 1, 2, 3


def _mix(x: np.ndarray) -> np.ndarray:
  """splitmix64 finalizer on uint64 arrays (wrapping arithmetic)."""
  x = (x ^ (x >> np.uint64(30))) * np.uint64(_MIX1)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(_MIX2)
  return x ^ (x >> np.uint64(31))


def example_keys(seed: int, stream: int, example_indices: np.ndarray, epochs: np.ndarray | int = 0) -> np.ndarray:
  """One uint64 key per example from (seed, stream, example index, epoch): [batch].

  stream separates independent example sets (e.g. one per process) that share
  example indices; pass epochs=0 for masks that never change (static masking).
  """
  indices = np.asarray(example_indices, dtype=np.uint64).reshape(-1)
  epochs = np.broadcast_to(np.asarray(epochs, dtype=np.uint64), indices.shape)
  key = _mix(np.full(indices.shape, (int(seed) * _GOLDEN + 1) % 2**64, dtype=np.uint64))
  for part in (np.full(indices.shape, int(stream) % 2**64, dtype=np.uint64), indices, epochs):
    key = _mix(key ^ _mix(part + np.uint64(_GOLDEN)))
  return key


def uniform(keys: np.ndarray, length: int, purpose: int) -> np.ndarray:
  """float64 [batch, length] in [0, 1): draw `purpose` at each position of each keyed example."""
  positions = np.arange(length, dtype=np.uint64) * np.uint64(_GOLDEN) + np.uint64(purpose)
  bits = _mix(keys.astype(np.uint64)[:, None] ^ _mix(positions)[None, :])
  return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclasses.dataclass(frozen=True, eq=False)
class MaskingSpec:
  """What to mask and what to put there.

  Attributes:
    mask_rate: fraction of non-padding tokens to predict.
    max_predictions: M, the fixed number of prediction slots per row.
    mask_id: id of [MASK] / <mask>.
    is_special: bool [table_size]; True for ids never chosen (specials, padding).
    random_ids: int32 [n]; random replacements are drawn uniformly from these.
    whole_word: choose whole words (needs word_starts in mask_batch).
    mask_prob, random_prob: replacement split; the rest keep the token.
  """

  mask_rate: float
  max_predictions: int
  mask_id: int
  is_special: np.ndarray
  random_ids: np.ndarray
  whole_word: bool = False
  mask_prob: float = 0.8
  random_prob: float = 0.1

  def __post_init__(self):
    if not 0.0 < self.mask_rate <= 1.0:
      raise ValueError(f"mask_rate must be in (0, 1], got {self.mask_rate}")
    if self.max_predictions < 1:
      raise ValueError(f"max_predictions must be >= 1, got {self.max_predictions}")
    if len(self.random_ids) == 0:
      raise ValueError("random_ids is empty: no token to use as a random replacement")

  @classmethod
  def from_tokenizer(cls, tokenizer, *, mask_rate: float, max_predictions: int, whole_word: bool = False):
    """Specials are every added special token; random tokens are all other ids."""
    if tokenizer.mask_id is None:
      raise ValueError(f"tokenizer from {tokenizer.source} has no mask token; MLM needs one")
    is_special = np.zeros(tokenizer.max_id + 1, dtype=bool)
    is_special[tokenizer.special_ids] = True
    random_ids = np.flatnonzero(~is_special).astype(np.int32)
    return cls(mask_rate, max_predictions, tokenizer.mask_id, is_special, random_ids, whole_word)


def num_predictions(attention_mask: np.ndarray, candidates: np.ndarray, spec: MaskingSpec) -> np.ndarray:
  """int [batch]: max(1, round(rate * non-padding)), capped by max_predictions and candidates."""
  wanted = np.maximum(1, np.rint(spec.mask_rate * attention_mask.sum(axis=1))).astype(np.int64)
  return np.minimum(np.minimum(wanted, spec.max_predictions), candidates.sum(axis=1))


def _select_tokens(scores: np.ndarray, candidates: np.ndarray, counts: np.ndarray, slots: int) -> np.ndarray:
  """The `counts` lowest-score candidates per row, ascending positions, padded with L: [batch, slots]."""
  batch, length = scores.shape
  order = np.argsort(np.where(candidates, scores, 2.0), axis=1, kind="stable")[:, :slots]
  if order.shape[1] < slots:
    order = np.pad(order, ((0, 0), (0, slots - order.shape[1])), constant_values=length)
  chosen = np.where(np.arange(slots)[None, :] < counts[:, None], order, length)
  return np.sort(chosen, axis=1)


def _select_words(scores, candidates, word_starts, counts, slots) -> np.ndarray:
  """Whole words in score order while they fit in counts[row]: [batch, slots] positions, padded with L."""
  batch, length = scores.shape
  # A word begins at a candidate marked as a word start, or after a non-candidate
  # (a continuation right after [SEP] has nothing to attach to).
  previous_candidate = np.pad(candidates[:, :-1], ((0, 0), (1, 0)))
  begins = candidates & (word_starts | ~previous_candidate)
  word_of_token = np.cumsum(begins, axis=1) - 1  # meaningful on candidates only
  chosen = np.full((batch, slots), length, dtype=np.int64)
  for row in range(batch):
    starts = np.flatnonzero(begins[row])
    if not len(starts) or not counts[row]:
      continue
    row_words = np.where(candidates[row], word_of_token[row], len(starts))
    sizes = np.bincount(row_words, minlength=len(starts) + 1)[: len(starts)]
    taken, budget = [], int(counts[row])
    for word in np.argsort(scores[row, starts], kind="stable").tolist():
      if sizes[word] <= budget:
        taken.append(word)
        budget -= int(sizes[word])
        if not budget:
          break
    positions = np.flatnonzero(np.isin(row_words, taken))
    chosen[row, : len(positions)] = positions
  return chosen  # ascending: flatnonzero is sorted and padding (L) is largest


def mask_batch(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    keys: np.ndarray,
    spec: MaskingSpec,
    word_starts: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
  """Masks a batch of rows.

  Args:
    input_ids: int [batch, length] token ids (specials and padding included).
    attention_mask: int/bool [batch, length], 1 on real tokens.
    keys: uint64 [batch] from `example_keys`; the only source of randomness.
    spec: the masking settings.
    word_starts: bool [batch, length] (tokenizer.is_word_start), needed when
      spec.whole_word.

  Returns:
    input_ids int32 [batch, length] with the chosen tokens replaced,
    masked_positions int32 [batch, M] ascending (0 in unused slots),
    masked_ids int32 [batch, M] original ids (0 in unused slots),
    masked_weights float32 [batch, M] (1.0 real prediction, 0.0 unused slot).
  """
  input_ids = np.asarray(input_ids)
  attention = np.asarray(attention_mask).astype(bool)
  if input_ids.ndim != 2 or attention.shape != input_ids.shape:
    raise ValueError(f"input_ids {input_ids.shape} and attention_mask {attention.shape} must both be [batch, length]")
  batch, length = input_ids.shape
  if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= len(spec.is_special)):
    raise ValueError(f"input_ids must lie in [0, {len(spec.is_special)}), got [{input_ids.min()}, {input_ids.max()}]")
  slots = spec.max_predictions
  candidates = attention & ~spec.is_special[input_ids]
  counts = num_predictions(attention, candidates, spec)
  scores = uniform(keys, length, _SELECT)
  if spec.whole_word:
    if word_starts is None or np.shape(word_starts) != input_ids.shape:
      raise ValueError("whole-word masking needs word_starts [batch, length] (tokenizer.is_word_start)")
    chosen = _select_words(scores, candidates, np.asarray(word_starts, bool), counts, slots)
  else:
    chosen = _select_tokens(scores, candidates, counts, slots)

  weights = chosen < length
  positions = np.where(weights, chosen, 0)
  rows = np.arange(batch)[:, None]
  original = input_ids[rows, positions]
  action = uniform(keys, length, _ACTION)[rows, positions]
  pick = (uniform(keys, length, _REPLACEMENT)[rows, positions] * len(spec.random_ids)).astype(np.int64)
  replacement = np.where(
      action < spec.mask_prob,
      spec.mask_id,
      np.where(action < spec.mask_prob + spec.random_prob, spec.random_ids[pick], original),
  )
  masked = input_ids.astype(np.int32, copy=True)
  masked[np.broadcast_to(rows, positions.shape)[weights], positions[weights]] = replacement[weights]
  return {
      "input_ids": masked,
      "masked_positions": positions.astype(np.int32),
      "masked_ids": np.where(weights, original, 0).astype(np.int32),
      "masked_weights": weights.astype(np.float32),
  }
