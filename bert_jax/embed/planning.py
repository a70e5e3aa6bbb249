"""Windows into batches of a few static shapes: row packing, the row-length choice and the batch plan.

Several short windows share one row, each in its own attention segment, so
the model sees almost no padding; rows are padded to `bucket_length`'s FINE
ladder, and a cost model trades padding and attention against compiling one
more shape. `plan_batches` is the entry point; the numbers below tune it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bert_jax.data.batching import FINE, bucket_length

# Tokens (rows x length) per batch unless batch_size gives rows; bounds activation memory
# (attention is [rows, heads, l, l]). CPUs gain nothing from bigger batches and lose more
# to the padded last one; accelerators want them big.
TOKENS_PER_BATCH_CPU = 4096
TOKENS_PER_BATCH_ACCELERATOR = 16384
# A packed row holds at most length // 4 texts (the shortest text is [CLS] [SEP]).
TOKENS_PER_SEGMENT = 4
# Cost model for choosing shapes: a row of l tokens costs l * (1 + l / 512) tokens' worth
# (attention, [l, l] per head, grows with the row; measured ~+25% at l = 128 on CPU), and
# compiling one more shape costs as much as running this many tokens.
ATTENTION_COST_LENGTH = 512
COMPILE_COST_TOKENS_CPU = 3_000
COMPILE_COST_TOKENS_ACCELERATOR = 1_000_000


def pack_rows(lengths: np.ndarray, row_length: int) -> list[list[int]]:
  """Windows packed into rows of at most row_length tokens: [rows][segments] window indices.

  Each row starts from the longest window left (alone if longer than
  row_length), adds more long ones while they fit, then fills the rest with
  the shortest: O(windows), and rows come out nearly full.
  """
  order = np.argsort(lengths, kind="stable")
  sizes = lengths[order].tolist()
  low, high, rows = 0, len(order) - 1, []
  while low <= high:
    row, room = [int(order[high])], row_length - sizes[high]
    high -= 1
    while high >= low and sizes[high] <= room and len(row) < row_length // TOKENS_PER_SEGMENT:
      row.append(int(order[high]))
      room -= sizes[high]
      high -= 1
    while low <= high and sizes[low] <= room and len(row) < row_length // TOKENS_PER_SEGMENT:
      row.append(int(order[low]))
      room -= sizes[low]
      low += 1
    rows.append(row)
  return rows


def row_lengths(lengths: np.ndarray, rows: list[list[int]], max_length: int) -> np.ndarray:
  """The padded length of each row: int [rows]."""
  return np.array([bucket_length(int(lengths[row].sum()), max_length, FINE) for row in rows], np.int64)


def row_cost(length: np.ndarray) -> np.ndarray:
  """Running a row of `length` tokens, in tokens' worth: attention grows with the row."""
  return length * (1 + length / ATTENTION_COST_LENGTH)


def merge_rare_lengths(padded: np.ndarray, compile_cost: float) -> np.ndarray:
  """Pads the rows of a length up to the next longer one where that costs less than compiling it.

  padded: int [rows]. Returns the new padded lengths [rows], fewer distinct values.
  """
  padded = padded.copy()
  lengths = np.unique(padded)
  for shorter, longer in zip(lengths[:-1], lengths[1:]):
    rows = padded == shorter
    if rows.sum() * (row_cost(longer) - row_cost(shorter)) < compile_cost:
      padded[rows] = longer
  return padded


def plan_cost(lengths: np.ndarray, row_length: int, max_length: int, compile_cost: float) -> float:
  """Estimated cost of packing into rows of row_length, in token units (see choose_row_length)."""
  padded = merge_rare_lengths(row_lengths(lengths, pack_rows(lengths, row_length), max_length), compile_cost)
  return float(np.sum(row_cost(padded))) + compile_cost * len(np.unique(padded))


def choose_row_length(lengths: np.ndarray, max_length: int, compile_cost: float) -> int:
  """The packing row length that minimizes padded tokens (attention weighted) plus compilation.

  Longer rows waste less at their end but pay for attention across the
  whole row; every distinct padded length is one more program to compile.
  Decided on an evenly spaced sample of at most 2048 windows.
  """
  sample = np.sort(lengths)[np.linspace(0, len(lengths) - 1, min(len(lengths), 2048)).astype(np.int64)]
  scale = len(lengths) / len(sample)
  candidates = sorted({bucket_length(n, max_length, FINE) for n in range(16, min(max_length, 256) + 1)})
  return min(candidates, key=lambda n: plan_cost(sample, n, max_length, compile_cost / scale))


@dataclasses.dataclass(frozen=True)
class Batch:
  windows: np.ndarray      # int [rows, segments]: the window in each segment of each row; -1 = none
  shape: tuple[int, int]   # (rows, length) the batch is padded to


def plan_batches(lengths: np.ndarray, max_length: int, rows_per_batch: int | None, *, tokens_per_batch: int,
                 compile_cost: float, pack: bool = True, row_multiple: int = 1) -> list[Batch]:
  """Windows into batches of a few static shapes.

  Windows share rows (each in its own segment) of `choose_row_length`
  tokens; a longer window gets a row to itself. Without pack (DeBERTa-v2's
  convolution would see the neighbouring texts) every window is alone in its
  row. Rows are padded to `bucket_length`; each padded length is one shape
  (rows_per_batch, or tokens_per_batch // length, at most the rows there are
  rounded up to a power of two), then rounded up to a multiple of row_multiple
  (the devices a batch is split over; the extra rows stay empty).
  """
  row_length = choose_row_length(lengths, max_length, compile_cost) if pack else 0
  rows = pack_rows(lengths, row_length) if pack else [[int(w)] for w in np.argsort(-lengths, kind="stable")]
  padded = merge_rare_lengths(row_lengths(lengths, rows, max_length), compile_cost)
  segments = max(len(row) for row in rows)
  batches = []
  for length in sorted(set(padded.tolist()), reverse=True):
    members = [row for row, n in zip(rows, padded) if n == length]
    size = rows_per_batch or max(1, tokens_per_batch // length)
    size = min(size, 1 << (len(members) - 1).bit_length())
    size = -(-size // row_multiple) * row_multiple
    for i in range(0, len(members), size):
      windows = np.full((size, segments), -1, np.int64)
      for r, row in enumerate(members[i:i + size]):
        windows[r, :len(row)] = row
      batches.append(Batch(windows, (size, length)))
  return batches
