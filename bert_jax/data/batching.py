"""Batches of featurized splits: the one length-bucketing rule, training order, evaluation passes.

A `Dataset` is one split as fixed-width numpy arrays. Training batches are a pure function of
(seed, step) (`train_indices`: a resumed run draws the same ones, optionally grouped by
length); evaluation goes over a split in length order (`predict_split`), each batch cut to
its bucket.

The one length-bucketing rule: a batch's rows are padded up to the next length of a ladder.

Every distinct padded length is one compiled program, so a ladder trades padding against
compilations:

    POWER_OF_TWO  16, 32, 64, 128, ...: few shapes (log2(max_length / 16) + 1); fine-tuning and
                  evaluation batches, where each new shape costs a compilation mid-run
    FINE          multiples of 8 up to 128, of 16 up to 256, then of 64: little padding; the
                  embedding planner (bert_jax.embed) weighs each extra shape's compile cost itself

    bucket_length(37, 128)               -> 64
    bucket_length(37, 128, ladder=FINE)  -> 40
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from bert_jax.data.finetune.labels import LabelMap

POWER_OF_TWO = "power_of_two"
FINE = "fine"
MIN_BUCKET = 16  # the shortest power-of-two bucket


def bucket_length(length: int, max_length: int, ladder: str = POWER_OF_TWO) -> int:
  """The padded length of a batch whose longest row has `length` tokens: the ladder's next step, <= max_length."""
  if ladder == POWER_OF_TWO:
    bucket = MIN_BUCKET
    while bucket < length:
      bucket *= 2
  elif ladder == FINE:
    step = 8 if length <= 128 else 16 if length <= 256 else 64
    bucket = -(-length // step) * step
  else:
    raise ValueError(f"unknown bucketing ladder {ladder!r}; expected {POWER_OF_TWO!r} or {FINE!r}")
  return min(bucket, max_length)


@dataclasses.dataclass
class Dataset:
  """One split, featurized.

  arrays: name -> [N, ...]; token-aligned arrays are [N, max_length].
  token_keys: the names of the token-aligned arrays (cut to the bucket length).
  lengths: [N] tokens of each row (the longest of its sequences).
  extra: whatever the task's metrics need beyond the arrays (QA offsets, the raw examples).
  labels: the label vocabulary the split was encoded with (classification, tagging), else None.
  """

  arrays: dict[str, np.ndarray]
  token_keys: tuple[str, ...]
  lengths: np.ndarray
  source: str
  extra: Any = None
  labels: LabelMap | None = None

  def __len__(self) -> int:
    return int(self.lengths.shape[0])


def take(dataset: Dataset, indices: np.ndarray, length: int | None = None) -> dict[str, np.ndarray]:
  """Rows `indices` [B] (or [S, B]) of every array, token-aligned ones cut to `length` (default: the bucket)."""
  if length is None:
    length = bucket_length(int(dataset.lengths[indices].max()), dataset.arrays[dataset.token_keys[0]].shape[-1])
  out = {}
  for key, array in dataset.arrays.items():
    rows = array[indices]
    out[key] = rows[..., :length] if key in dataset.token_keys else rows
  return out


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
  """[size] permutation for one epoch: a pure function of (seed, epoch), so a resumed run sees the same order."""
  return np.random.default_rng([seed, epoch, 0x5EED]).permutation(size)


GROUP_BATCHES = 16  # batches per length-sorted group


@functools.lru_cache(maxsize=8)
def _epoch_batches(seed: int, epoch: int, lengths_key: bytes, batch_size: int, group: bool) -> np.ndarray:
  lengths = np.frombuffer(lengths_key, np.int32)
  order = epoch_order(seed, epoch, len(lengths))
  per_epoch = len(lengths) // batch_size
  if group:
    # Sort within groups of GROUP_BATCHES random batches, then shuffle the batches: rows of a batch have
    # similar lengths (less padding, smaller buckets) while batch composition stays random.
    span = batch_size * GROUP_BATCHES
    order = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                            for chunk in np.split(order, range(span, len(order), span))])
  batches = order[:per_epoch * batch_size].reshape(per_epoch, batch_size)
  if group:
    batches = batches[np.random.default_rng([seed, epoch, 0xBA7C]).permutation(per_epoch)]
  return batches


def train_indices(seed: int, step: int, batch_size: int, lengths: np.ndarray, group_by_length: bool = False
                  ) -> np.ndarray:
  """[batch_size] example indices of optimizer step `step` (1-based); the remainder of an epoch is dropped.

  group_by_length: batches of similar lengths (HF's group_by_length), still a pure function of (seed, step).
  """
  per_epoch = len(lengths) // batch_size
  epoch, position = divmod(step - 1, per_epoch)
  key = np.ascontiguousarray(lengths, np.int32).tobytes()
  return _epoch_batches(seed, epoch, key, batch_size, group_by_length)[position]


def eval_batches(dataset: Dataset, batch_size: int) -> list[tuple[np.ndarray, int]]:
  """Evaluation batches in length order: [(indices [batch_size], real rows)], the last padded with row 0.

  Sorting by length keeps each batch's bucket tight; predictions are scattered
  back to the original order by the caller.
  """
  order = np.argsort(dataset.lengths, kind="stable")
  batches = []
  for start in range(0, len(order), batch_size):
    chunk = order[start:start + batch_size]
    real = len(chunk)
    if real < batch_size:
      chunk = np.concatenate([chunk, np.full(batch_size - real, chunk[0])])
    batches.append((chunk, real))
  return batches


def predict_split(predict, params, dataset: Dataset, batch_size: int, token_outputs: tuple[str, ...],
                  put=lambda arrays: arrays, seeds: int = 1, packer=None, fetch=jax.device_get
                  ) -> dict[str, np.ndarray]:
  """Runs predict(params, batch) over a whole split -> name -> [N, ...] ([seeds, N, ...] when seeds > 1).

  Batches go in length order (tight buckets); rows are scattered back to dataset order and
  token-aligned outputs padded to the dataset's max_length. packer: a `bert_jax.data.packing.
  EvalPacker` whose batches (a fixed token budget each, one compiled shape) replace the padded ones.
  fetch: device outputs -> host arrays (`sharding.to_host` when they span several processes).
  """
  max_length = dataset.arrays[dataset.token_keys[0]].shape[-1]
  outputs: dict[str, np.ndarray] = {}
  lead = 1 if seeds > 1 else 0
  batches = packer.batches(dataset) if packer is not None else eval_batches(dataset, batch_size)
  for indices, real in batches:
    arrays = packer.arrays(dataset, indices, real) if packer is not None else take(dataset, indices)
    result = fetch(predict(params, put(arrays)))
    for key, value in result.items():
      value = np.asarray(value)
      if key in token_outputs:
        pad = [(0, 0)] * value.ndim
        pad[lead + 1] = (0, max_length - value.shape[lead + 1])
        fill = np.finfo(value.dtype).min if np.issubdtype(value.dtype, np.floating) else 0
        value = np.pad(value, pad, constant_values=fill)
      if key not in outputs:
        outputs[key] = np.zeros(value.shape[:lead] + (len(dataset),) + value.shape[lead + 1:], value.dtype)
      if seeds > 1:
        outputs[key][:, indices[:real]] = value[:, :real]
      else:
        outputs[key][indices[:real]] = value[:real]
  return outputs
