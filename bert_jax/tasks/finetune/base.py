"""What a fine-tuning task provides to the loop in `bert_jax.finetune`, and the batching tasks share.

A task reads its files into a `Dataset` of fixed-width numpy arrays ([N, L] for
token-aligned fields, [N] or [N, ...] otherwise), names the model head, builds
the training objective (loss sums, see tasks/base.py), predicts on evaluation
batches and turns the predictions of a whole split into metrics.

Batches are cut to a bucketed length: the longest row of the batch rounded up
to a power of two (at least 16, at most max_length), so a short-sentence task
pays for 32 or 64 positions instead of 128 while the number of compiled shapes
stays at log2(max_length / 16) + 1.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from bert_jax.data.batching import bucket_length
from bert_jax.data.finetune import LabelMap
from bert_jax.models.config import ModelConfig
from bert_jax.models.model import EncoderModel
from bert_jax.tasks.base import Objective, Term

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


class TaskObjective(Objective):
  """One encoder with the task's head, trained on the summed `task_loss` over `task_count`.

  Subclasses set `head` and implement `totals`, `sums` and `predict`; model(rng) is the dropout
  model when rng is given, the deterministic one otherwise.
  """

  head: str | None = None

  def __init__(self, cfg: ModelConfig, **model_kwargs):
    self.train_model = EncoderModel(cfg, head=self.head, deterministic=False, **model_kwargs)
    self.eval_model = EncoderModel(cfg, head=self.head, deterministic=True, **model_kwargs)
    self.terms = (Term("task_loss", "task_count"),)

  def init(self, rngs, input_ids):
    return self.train_model.init(rngs, input_ids)["params"]

  def model(self, rng) -> EncoderModel:
    return self.train_model if rng is not None else self.eval_model

  def sum_keys(self):
    return ["task_loss", "task_correct", "task_count"]

  def predict(self, params, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Jit-able: evaluation outputs of a batch (logits, scores), each [B, ...]."""
    raise NotImplementedError


class FinetuneTask:
  """A fine-tuning task: data in, objective and metrics out (see the module docstring).

  The loop calls, in this order and each with what it needs:

    train = task.load(path, "train")                 # a Dataset; its `labels` fix the label vocabulary
    dev = task.load(path, "validation", train.labels)
    cfg = task.model_config(backbone_cfg, train.labels)
    objective = task.objective(cfg, train.labels)    # loss sums + predict
    task.metrics(dev, outputs)                       # outputs: objective.predict over the split

  Hooks with defaults that do nothing: `train_arrays` (extra training inputs, e.g. a
  teacher's logits) and `export_files` (files beside the best checkpoint).
  """

  name: str = ""
  head: str | None = None
  token_outputs: tuple[str, ...] = ()  # predict() outputs that are [B, length] (padded back to max_length)
  with_pooler: bool | None = None      # None: the head's default (EncoderModel)

  def __init__(self, config: ml_collections.ConfigDict, tokenizer):
    self.config = config
    self.tokenizer = tokenizer

  def load(self, path: str, split: str, labels: LabelMap | None = None) -> Dataset:
    """One split featurized; `labels` None means: take the vocabulary from this split (training)."""
    raise NotImplementedError

  def model_config(self, cfg: ModelConfig, labels: LabelMap | None) -> ModelConfig:
    """The backbone config adjusted for this task's head (number of labels, pooling)."""
    del labels
    return cfg

  def objective(self, cfg: ModelConfig, labels: LabelMap | None) -> TaskObjective:
    raise NotImplementedError

  def metrics(self, dataset: Dataset, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
    """outputs: name -> [N, ...] in dataset order."""
    raise NotImplementedError

  def metadata(self, labels: LabelMap | None) -> dict[str, Any]:
    """JSON saved beside the best checkpoint (label names, task settings)."""
    out: dict[str, Any] = {"task": self.name}
    if labels is not None:
      out["label_names"] = labels.names
    return out

  # Hooks: the loop calls each; the defaults do nothing. -------------------------------------------

  def train_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A training batch's host arrays as the step receives them (task distillation adds teacher logits)."""
    return arrays

  def export_files(self, path: str) -> None:
    """Writes extra files into a saved checkpoint folder (sentence-transformers module files)."""


def predict_split(predict, params, dataset: Dataset, batch_size: int, token_outputs: tuple[str, ...],
                  put=lambda arrays: arrays, seeds: int = 1) -> dict[str, np.ndarray]:
  """Runs predict(params, batch) over a whole split -> name -> [N, ...] ([seeds, N, ...] when seeds > 1).

  Batches go in length order (tight buckets); rows are scattered back to dataset order and
  token-aligned outputs padded to the dataset's max_length.
  """
  max_length = dataset.arrays[dataset.token_keys[0]].shape[-1]
  outputs: dict[str, np.ndarray] = {}
  lead = 1 if seeds > 1 else 0
  for indices, real in eval_batches(dataset, batch_size):
    result = jax.device_get(predict(params, put(take(dataset, indices))))
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
