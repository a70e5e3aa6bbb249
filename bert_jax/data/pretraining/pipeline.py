"""The pretraining input pipeline: prepared ArrayRecord shards -> masked, batched numpy (grain).

    from bert_jax.data.pretraining import pipeline as pretraining_data
    loader = pretraining_data.make_loader(config.data, "mlm_nsp", tokenizer, split="train",
                                          global_batch_size=256, seed=0, process_index=jax.process_index(),
                                          process_count=jax.process_count())
    it = iter(loader)                        # a grain DatasetIterator
    batch = next(it)                         # dict of numpy arrays, global_batch_size / process_count rows
    state = pretraining_data.loader_state(it)    # JSON-serialisable; save it with the checkpoint
    pretraining_data.restore(it, state)          # continue exactly there

data_config keys, their defaults and meaning: bert_jax/data/pretraining_config.py.

Batch (numpy, B = global_batch_size / process_count rows):
  input_ids int32 [B, L] (masked: 80% mask token, 10% random token, 10% unchanged),
  attention_mask int32 [B, L], token_type_ids int32 [B, L],
  masked_positions int32 [B, M], masked_ids int32 [B, M] (original ids), masked_weights float32 [B, M],
  example_weights float32 [B] (1.0; 0.0 on the rows that pad the last validation batch),
  pair_labels int32 [B] for mlm_nsp (1 = B from another document) / mlm_sop (1 = swapped),
  segment_ids int32 [B, L] when packing (1, 2, ... per document, 0 on padding).

Training repeats forever; validation is one pass over all its examples (every
process sees all of them, each taking its slice of each global batch; the last
batch is padded with weight-0 rows), always with the same static masks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import grain
import numpy as np
from absl import flags

from bert_jax.data.pretraining import masking
from bert_jax.data.pretraining import prepare as prepare_lib
from bert_jax.data.pretraining import records
from bert_jax.data.pretraining.config import DEFAULTS, OBJECTIVES, data_config, resolve
from bert_jax.runtime import caches


__all__ = ["DEFAULTS", "OBJECTIVES", "Loader", "data_config", "loader_state", "make_loader",
           "restore"]

# Masking stream of validation examples: never a process index, the same on every process.
_VALIDATION_STREAM = 2**32 - 1
# Batches built ahead in background threads (in-process) while the model trains.
_PREFETCH_BATCHES = 4


def _cache_dir(config) -> str:
  """data.cache_dir, else the shared cache (bert_jax.runtime.caches): prepared folders are named by a
  fingerprint of their inputs, so runs in any workdir reuse them and never see stale ones."""
  return config.cache_dir or caches.path("prepared")


def _seed32(*parts) -> int:
  return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "little")


class _EpochOf:
  """(position in the repeated order, example index) -> int64 [3]: example, epoch, weight."""

  def __init__(self, num_examples: int):
    self.num_examples = num_examples

  def __call__(self, position: int, example: int) -> np.ndarray:
    return np.array([example, position // self.num_examples, 1], dtype=np.int64)


class _RowsOf:
  """A global batch of row specs [global B, 3] -> this process's consecutive slice [B, 3]."""

  def __init__(self, process_index: int, batch_size: int):
    self.start, self.stop = process_index * batch_size, (process_index + 1) * batch_size

  def __call__(self, rows: np.ndarray) -> np.ndarray:
    return rows[self.start:self.stop]


class _ValidationRows:
  """Validation batch number -> int64 [B, 3] (example, 0, weight) for this process's slice."""

  def __init__(self, num_examples: int, global_batch_size: int, batch_size: int, process_index: int):
    self.num_examples, self.global_batch_size = num_examples, global_batch_size
    self.batch_size, self.process_index = batch_size, process_index

  def __call__(self, batch_number: int) -> np.ndarray:
    first = batch_number * self.global_batch_size + self.process_index * self.batch_size
    positions = np.arange(first, first + self.batch_size)
    # Padding rows repeat real examples (no degenerate all-padding rows) with weight 0.
    return np.stack([positions % self.num_examples, np.zeros_like(positions),
                     positions < self.num_examples], axis=1).astype(np.int64)


class _BuildBatch:
  """int64 [B, 3] (example, epoch, weight) -> the batch dict: read, pad, mask."""

  def __init__(self, source, fmt, tokenizer, spec: masking.MaskingSpec, *, max_length, seed, stream, dynamic,
               pair_labels: bool):
    self.source, self.fmt, self.spec = source, fmt, spec
    self.tokenizer = tokenizer if spec.whole_word else None  # only for word boundaries
    self.max_length, self.pad_id = max_length, tokenizer.pad_id
    self.seed, self.stream, self.dynamic, self.pair_labels = seed, stream, dynamic, pair_labels

  def __call__(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    examples, epochs, weights = rows[:, 0], rows[:, 1], rows[:, 2].astype(np.float32)
    batch = records.collate(self.source.__getitems__(examples.tolist()), self.fmt, self.max_length, self.pad_id)
    keys = masking.example_keys(self.seed, self.stream, examples, epochs if self.dynamic else 0)
    word_starts = self.tokenizer.is_word_start(batch["input_ids"]) if self.tokenizer is not None else None
    masked = masking.mask_batch(batch["input_ids"], batch["attention_mask"], keys, self.spec, word_starts)
    masked["masked_weights"] *= weights[:, None]
    out = {"attention_mask": batch["attention_mask"], "token_type_ids": batch["token_type_ids"], **masked,
           "example_weights": weights}
    if self.pair_labels:
      out["pair_labels"] = batch["pair_labels"]
    if "segment_ids" in batch:
      out["segment_ids"] = batch["segment_ids"]
    return out


def _plain_arrays(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {name: np.array(value) for name, value in batch.items()}


@dataclasses.dataclass
class Loader:
  """Iterable over batches; `iter(loader)` gives a fresh grain iterator at the start.

  Attributes:
    split: "train" (endless) or "validation" (one pass of num_batches).
    batch_size: rows per batch in this process; global_batch_size over all processes.
    num_examples: prepared examples this process reads (validation: all of them).
    num_batches: batches in one validation pass; None for training.
    prepared: the shard set (directory, paths, manifest).
    element_spec: {name: (shape, dtype)} of a batch.
  """

  split: str
  batch_size: int
  global_batch_size: int
  num_examples: int
  num_batches: int | None
  prepared: prepare_lib.Prepared
  element_spec: dict[str, tuple[tuple[int, ...], np.dtype]]
  dataset: grain.MapDataset
  num_workers: int = 0

  def __iter__(self) -> grain.DatasetIterator:
    threads = 1 if self.num_workers else 2
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=_PREFETCH_BATCHES)
    dataset = self.dataset.to_iter_dataset(options)
    if self.num_workers:
      # grain's workers read absl flags; outside an absl app (tests, notebooks) they are unparsed.
      if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
      workers = grain.MultiprocessingOptions(num_workers=self.num_workers, per_worker_buffer_size=2)
      dataset = dataset.mp_prefetch(workers)
      # Workers hand over shared-memory arrays; plain copies free that memory as soon as a batch is dropped.
      dataset = dataset.map(_plain_arrays)
    return iter(dataset)

  def __len__(self) -> int:
    if self.num_batches is None:
      raise TypeError("the training loader is endless; it has no len()")
    return self.num_batches


def make_loader(
    data_config, objective: str, tokenizer, split: str = "train", global_batch_size: int = 256, seed: int = 0,
    process_index: int = 0, process_count: int = 1,
) -> Loader:
  """Prepares (or reuses) the split's examples and returns its Loader; see the module docstring."""
  config = resolve(data_config)
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                     f"process_count={process_count}")
  batch_size = global_batch_size // process_count
  if tokenizer.pad_id is None:
    raise ValueError(f"tokenizer from {tokenizer.source} has no pad token")
  spec = masking.MaskingSpec.from_tokenizer(tokenizer, mask_rate=config.mask_rate,
                                            max_predictions=config.max_predictions,
                                            whole_word=config.whole_word_masking)
  # Without per-process shards every process prepares the same examples, so the global batches
  # (and the losses) do not depend on how many processes read them.
  shard_index, shard_count = (process_index, process_count) if config.per_process_shards else (0, 1)
  prepared = prepare_lib.prepare(config, objective, tokenizer, split=split, seed=seed, process_index=shard_index,
                                 process_count=shard_count, out_dir=_cache_dir(config))
  source = grain.sources.ArrayRecordDataSource(prepared.paths)
  count = len(source)
  if count != prepared.num_examples:
    raise ValueError(f"{prepared.directory}: shards hold {count} examples, manifest says {prepared.num_examples}")
  train = split == "train"
  build = _BuildBatch(source, prepared.format, tokenizer, spec, max_length=config.max_length, seed=seed,
                      stream=shard_index if train else _VALIDATION_STREAM, dynamic=train and config.dynamic_masking,
                      pair_labels=prepared.settings.has_pair_labels)
  if train:
    rows = grain.MapDataset.range(count)
    if config.shuffle:
      rows = rows.shuffle(seed=_seed32("shuffle", seed, shard_index))
    rows = rows.repeat().map_with_index(_EpochOf(count))
    if config.per_process_shards:
      rows = rows.batch(batch_size, drop_remainder=True)
    else:
      rows = rows.batch(global_batch_size, drop_remainder=True).map(_RowsOf(process_index, batch_size))
    num_batches = None
  else:
    num_batches = math.ceil(count / global_batch_size)
    rows = grain.MapDataset.range(num_batches).map(_ValidationRows(count, global_batch_size, batch_size,
                                                                   process_index))
  dataset = rows.map(build)
  element_spec = {name: (value.shape, value.dtype) for name, value in dataset[0].items()}
  return Loader(split, batch_size, global_batch_size, count, num_batches, prepared, element_spec, dataset,
                int(config.num_workers))


def loader_state(iterator: grain.DatasetIterator) -> dict:
  """The iterator's position (grain's get_state): a small JSON-serialisable dict."""
  return iterator.get_state()


def restore(iterator: grain.DatasetIterator, state: dict) -> None:
  """Moves a fresh iterator of an identically configured loader to a saved position."""
  iterator.set_state(state)
