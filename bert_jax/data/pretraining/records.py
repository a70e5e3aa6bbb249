"""Prepared examples as compact bytes (one ArrayRecord record each) and back into padded batches.

Record layout, little-endian:

    int32 length n, int32 pair_label (-1: none)      8-byte header
    ids        [n]  uint16 or int32 (the manifest's ids_dtype: uint16 when every id < 65536)
    type_ids   [n]  uint8
    segment_ids[n]  uint8, only in packed shards (1, 2, ... per packed document)

Every prepared example of a shard set has the same layout, so a reader needs
only `RecordFormat` (from the manifest) to decode them.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence

import numpy as np

from bert_jax.data.pretraining.examples import Example

_HEADER = struct.Struct("<ii")


@dataclasses.dataclass(frozen=True)
class RecordFormat:
  """ids_dtype: "uint16" | "int32"; packed: records carry segment_ids."""

  ids_dtype: str
  packed: bool

  @classmethod
  def for_vocabulary(cls, max_id: int, packed: bool) -> RecordFormat:
    return cls("uint16" if max_id < 2**16 else "int32", packed)


def encode(example: Example, fmt: RecordFormat) -> bytes:
  """One example -> record bytes."""
  n = len(example.ids)
  if len(example.type_ids) != n:
    raise ValueError(f"example has {n} ids but {len(example.type_ids)} type ids")
  parts = [_HEADER.pack(n, example.pair_label), np.asarray(example.ids, dtype=fmt.ids_dtype).tobytes(),
           np.asarray(example.type_ids, dtype=np.uint8).tobytes()]
  if fmt.packed:
    if example.segment_ids is None or len(example.segment_ids) != n:
      raise ValueError("packed records need one segment id per token")
    parts.append(np.asarray(example.segment_ids, dtype=np.uint8).tobytes())
  return b"".join(parts)


def decode(record: bytes, fmt: RecordFormat) -> Example:
  """Record bytes -> Example (for inspection and tests; batches use `collate`)."""
  n, label = _HEADER.unpack_from(record)
  itemsize = np.dtype(fmt.ids_dtype).itemsize
  ids = np.frombuffer(record, fmt.ids_dtype, n, _HEADER.size)
  offset = _HEADER.size + n * itemsize
  type_ids = np.frombuffer(record, np.uint8, n, offset)
  segment_ids = np.frombuffer(record, np.uint8, n, offset + n).tolist() if fmt.packed else None
  return Example(ids.tolist(), type_ids.tolist(), label, segment_ids)


def collate(records: Sequence[bytes], fmt: RecordFormat, max_length: int, pad_id: int) -> dict[str, np.ndarray]:
  """Records -> padded arrays.

  Returns input_ids, attention_mask, token_type_ids int32 [batch, max_length]
  (padded with pad_id / 0 / 0), pair_labels int32 [batch] (-1 where none) and,
  for packed records, segment_ids int32 [batch, max_length] (0 on padding).
  """
  batch = len(records)
  ids = np.full((batch, max_length), pad_id, dtype=np.int32)
  lengths = np.empty(batch, dtype=np.int64)
  labels = np.empty(batch, dtype=np.int32)
  # Type and segment ids are bytes: gather them into one buffer and convert once.
  extras = np.zeros((batch, 2 if fmt.packed else 1, max_length), dtype=np.uint8)
  itemsize = np.dtype(fmt.ids_dtype).itemsize
  for row, record in enumerate(records):
    n, labels[row] = _HEADER.unpack_from(record)
    if n > max_length:
      raise ValueError(f"prepared example has {n} tokens but max_length is {max_length}; prepare again")
    lengths[row] = n
    offset = _HEADER.size + n * itemsize
    ids[row, :n] = np.frombuffer(record, fmt.ids_dtype, n, _HEADER.size)
    extras[row, :, :n] = np.frombuffer(record, np.uint8, n * extras.shape[1], offset).reshape(-1, n)
  arrays = {
      "input_ids": ids,
      "attention_mask": (np.arange(max_length)[None, :] < lengths[:, None]).astype(np.int32),
      "token_type_ids": extras[:, 0].astype(np.int32),
      "pair_labels": labels,
  }
  if fmt.packed:
    arrays["segment_ids"] = extras[:, 1].astype(np.int32)
  return arrays
