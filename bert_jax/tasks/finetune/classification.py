"""Sequence classification (`classify`) and regression (`regress`): single sentences or pairs.

Inputs come from TSV/CSV/JSONL files with a header (`sentence`, optional
`sentence2`, `label`) or from TFDS (`tfds:glue/sst2`, `tfds:glue/mnli:validation_matched`).
Classification labels may be strings; the training file fixes the label
vocabulary (saved with the checkpoint). Regression labels are floats (STS-B
scores) and the head has one output trained with mean squared error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import evaluation
from bert_jax.data.batching import Dataset
from bert_jax.data import finetune as finetune_data
from bert_jax.models.config import ModelConfig
from bert_jax.tasks.base import Term, cross_entropy, example_weights, forward
from bert_jax.tasks.finetune.base import FinetuneTask, TaskObjective
from bert_jax.tasks.pretrain.distill_losses import distill_logits_sums


def read_split(spec: str, split: str, data_config) -> finetune_data.Table:
  """A file path, or `tfds:NAME[:SPLIT]` (SPLIT defaults to the split being read)."""
  if spec.startswith("tfds:"):
    name, _, tfds_split = spec[len("tfds:"):].partition(":")
    return finetune_data.read_tfds(name, tfds_split or split, data_dir=data_config.get("tfds_data_dir") or None)
  return finetune_data.read_table(spec, text_columns=(data_config.text_column,), pair_column=data_config.pair_column,
                            label_column=data_config.label_column)


def encode_texts(tokenizer, sentences: list[str], pairs: list[str] | None, max_length: int) -> dict[str, np.ndarray]:
  """Tokenizes (pairs truncated longest-first) into int32 [N, max_length] arrays + lengths [N]."""
  arrays = tokenizer.batch(sentences, pairs, max_length=max_length)
  arrays["lengths"] = arrays["attention_mask"].sum(axis=1).astype(np.int32)
  return arrays


class ClassificationObjective(TaskObjective):
  """Cross entropy over classes, or mean squared error on one output (regression); sums over examples."""

  head = "classification"

  def __init__(self, cfg: ModelConfig, regression: bool):
    super().__init__(cfg)
    self.regression = regression

  def sum_keys(self):
    return ["task_loss", "task_count"] + ([] if self.regression else ["task_correct"])

  def totals(self, batch):
    return {"task_count": jnp.sum(example_weights(batch))}

  def logits(self, params, batch, rng=None) -> jax.Array:
    return forward(self.model(rng), params, batch, rng).logits

  def predict(self, params, batch):
    return {"logits": self.logits(params, batch)}

  def sums(self, params, batch, rng):
    weights = example_weights(batch)
    logits = self.logits(params, batch, rng)
    if self.regression:
      error = logits[:, 0] - batch["labels"].astype(jnp.float32)
      return {"task_loss": jnp.sum(jnp.square(error) * weights), "task_count": jnp.sum(weights)}
    labels = batch["labels"].astype(jnp.int32)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"task_loss": jnp.sum(cross_entropy(logits, labels) * weights),
            "task_correct": jnp.sum(correct * weights), "task_count": jnp.sum(weights)}


class DistilledClassificationObjective(ClassificationObjective):
  """Task distillation: alpha_kd * T^2 KL(teacher || student) + alpha_hard * cross entropy on the labels.

  The teacher's logits arrive in the batch (`teacher_logits` [B, C], computed outside the step by
  ClassifyTask.train_arrays), so the step never holds the teacher's weights.
  """

  def __init__(self, cfg: ModelConfig, distill):
    super().__init__(cfg, regression=False)
    self.temperature, self.alpha_kd, self.alpha_hard = distill.temperature, distill.alpha_kd, distill.alpha_hard
    self.terms = (Term("distill_loss", "distill_count"),)

  def sum_keys(self):
    return ["distill_loss", "distill_count", "kd_loss", "kd_count", "hard_loss", "hard_correct", "hard_count"]

  def totals(self, batch):
    return {"distill_count": jnp.sum(example_weights(batch))}

  def sums(self, params, batch, rng):
    logits = self.logits(params, batch, rng)
    return distill_logits_sums(logits, batch["teacher_logits"], batch["labels"].astype(jnp.int32),
                               example_weights(batch), self.temperature, self.alpha_kd, self.alpha_hard)


class ClassifyTask(FinetuneTask):
  """`classify`: accuracy, F1 (binary for two classes, macro otherwise), MCC."""

  name = "classify"
  head = "classification"
  regression = False

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self.teacher = None
    distill = config.get("distill")
    if distill is not None and distill.get("teacher") and not self.regression:
      self.teacher = self._load_teacher(distill.teacher)

  def _load_teacher(self, path: str):
    """(jitted logits function, params, label names) of a fine-tuned classification checkpoint."""
    import json
    import os
    from bert_jax.convert.pretrained import META_FILE, from_pretrained
    model, params = from_pretrained(path, head="classification")
    names = None
    if os.path.isfile(os.path.join(path, META_FILE)):
      with open(os.path.join(path, META_FILE)) as f:
        names = json.load(f).get("finetune", {}).get("label_names")
    apply = jax.jit(lambda p, b: model.apply({"params": p}, b["input_ids"], b["attention_mask"],
                                             b["token_type_ids"]).logits)
    return {"apply": apply, "params": params, "names": names, "config": model.config, "path": path}

  def load(self, path: str, split: str, labels: finetune_data.LabelMap | None = None) -> Dataset:
    table = read_split(path, split, self.config.data)
    if table.labels is None:
      raise ValueError(f"{path}: no '{self.config.data.label_column}' column; {self.name} needs labels")
    if labels is None and not self.regression:
      labels = finetune_data.LabelMap.from_labels(table.labels)
    arrays = encode_texts(self.tokenizer, table.sentences, table.pairs, self.config.data.max_length)
    lengths = arrays.pop("lengths")
    arrays["labels"] = self.encode_labels(table, path, labels)
    return Dataset(arrays, ("input_ids", "attention_mask", "token_type_ids"), lengths, path,
                   extra={"pairs": table.pairs is not None}, labels=labels)

  def encode_labels(self, table: finetune_data.Table, path: str, labels: finetune_data.LabelMap | None) -> np.ndarray:
    where = lambda i: f"{path}:{table.line_numbers[i]}"
    if self.regression:
      return np.array([finetune_data.parse_score(v, where(i)) for i, v in enumerate(table.labels)], np.float32)
    return np.array([labels.encode(v, where=where(i)) for i, v in enumerate(table.labels)], np.int32)

  def num_outputs(self, labels: finetune_data.LabelMap | None) -> int:
    return labels.num_classes

  def example_tokens(self, cfg: ModelConfig) -> int | None:
    return None if cfg.classifier_pooling == "mean" else 1

  def model_config(self, cfg: ModelConfig, labels) -> ModelConfig:
    names = tuple(labels.names) if labels is not None else ()
    return cfg.replace(num_labels=self.num_outputs(labels), classifier_pooling=self.config.pooling, label_names=names)

  def objective(self, cfg, labels):
    if self.teacher is not None:
      teacher = self.teacher
      if teacher["config"].vocab_size != cfg.vocab_size:
        raise ValueError(f"distill.teacher={teacher['path']}: vocabulary {teacher['config'].vocab_size} differs from "
                         f"the student's {cfg.vocab_size}; teacher and student must share the tokenizer")
      if teacher["config"].num_labels != cfg.num_labels or (teacher["names"] and teacher["names"] != labels.names):
        raise ValueError(f"distill.teacher={teacher['path']}: labels {teacher['names'] or teacher['config'].num_labels} "
                         f"differ from the training labels {labels.names}")
      return DistilledClassificationObjective(cfg, self.config.distill)
    return ClassificationObjective(cfg, self.regression)

  def train_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Adds the teacher's logits [..., B, C] to a training batch when distilling."""
    if self.teacher is None:
      return arrays
    ids = arrays["input_ids"]
    flat = {k: arrays[k].reshape(-1, ids.shape[-1]) for k in ("input_ids", "attention_mask", "token_type_ids")}
    logits = np.asarray(self.teacher["apply"](self.teacher["params"], flat))
    return {**arrays, "teacher_logits": logits.reshape(ids.shape[:-1] + logits.shape[-1:])}

  def metrics(self, dataset, outputs):
    labels = dataset.arrays["labels"]
    logits = outputs["logits"]
    result = evaluation.classification_metrics(labels, logits)
    ce = -jax.nn.log_softmax(jnp.asarray(logits, jnp.float32))[np.arange(len(labels)), labels]
    result["loss"] = float(jnp.mean(ce))
    return result


class RegressTask(ClassifyTask):
  """`regress`: Pearson and Spearman correlation (STS-B), mean squared error."""

  name = "regress"
  regression = True

  def num_outputs(self, labels) -> int:
    return 1

  def metrics(self, dataset, outputs):
    predictions = np.asarray(outputs["logits"])[:, 0]
    result = evaluation.regression_metrics(dataset.arrays["labels"], predictions)
    result["loss"] = result["mse"]
    return result

