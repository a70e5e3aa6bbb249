"""What a fine-tuning task provides to the loop in `bert_jax.finetune`.

A task reads its files into a `Dataset` of fixed-width numpy arrays ([N, L] for
token-aligned fields, [N] or [N, ...] otherwise; bert_jax.data.batching), names the
model head, builds the training objective (loss sums, see tasks/base.py) whose
`predict` gives evaluation outputs, and turns the predictions of a whole split into
metrics.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from bert_jax.data.batching import Dataset
from bert_jax.data.finetune import LabelMap
from bert_jax.models.config import ModelConfig
from bert_jax.models.model import EncoderModel
from bert_jax.runtime import fileio
from bert_jax.tasks.base import Objective, Term


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
  packed_inputs: tuple[str, ...] = ("",)  # prefixes of the token arrays the encoder reads (packed apart)

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

  def example_tokens(self, cfg: ModelConfig) -> int | None:
    """Tokens of each example the head reads from the encoder's output when rows are packed: 1 when it
    pools the first token only (only that one is gathered back), None for all of them."""
    del cfg
    return None

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

  def export_files(self, path: str, **task_params) -> None:
    """Writes extra files into a saved checkpoint folder (sentence-transformers module files);
    task_params: the `task_*` parameters of the saved step, by name."""


# Parameters a task trains outside the encoder and its head (top-level `task_*`: align's projection) are not
# the model's: the task's export_files receives them by name (to write them in a format of its own) and a
# saved folder keeps them in TASK_PARAMS_FILE beside the model, for evaluating the folder again.
TASK_PARAMS_PREFIX, TASK_PARAMS_FILE = "task_", "task_params.npz"


def save_task_params(path: str, params: dict) -> None:
  """{"task_x": {"kernel": array}} -> path/TASK_PARAMS_FILE, keyed "task_x/kernel"."""
  flat = {"/".join(str(k.key) for k in keys): np.asarray(leaf) for keys, leaf in
          jax.tree_util.tree_flatten_with_path(params)[0]}
  with fileio.atomic_path(os.path.join(path, TASK_PARAMS_FILE)) as tmp, open(tmp, "wb") as f:
    np.savez(f, **flat)


def load_task_params(path: str) -> dict:
  """The nested task parameters of a saved folder ({} when it has none)."""
  file = os.path.join(path, TASK_PARAMS_FILE)
  if not os.path.isfile(file):
    return {}
  out: dict = {}
  with np.load(file, allow_pickle=False) as saved:
    for key in saved.files:
      *groups, leaf = key.split("/")
      node = out
      for group in groups:
        node = node.setdefault(group, {})
      node[leaf] = saved[key]
  return out
