"""Token classification (`tag`): CoNLL-style files, labels on the first sub-token of each word, entity-level F1.

Words are joined with single spaces and tokenized once; each token belongs to
the word whose character span holds its first character. Only a word's first
sub-token carries its label (weight 1) and is read back at evaluation; the
other sub-tokens and the special tokens have weight 0. Words cut off by
max_length are predicted "O" at evaluation, so truncation costs recall rather
than being hidden. Entity F1 follows seqeval's default (conlleval) chunking.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bert_jax import evaluation
from bert_jax.data.batching import Dataset
from bert_jax.data import finetune as finetune_data
from bert_jax.tasks.base import cross_entropy, forward
from bert_jax.tasks.finetune.base import FinetuneTask, TaskObjective


def word_starts(words: list[str]) -> tuple[str, list[int]]:
  """The space-joined text and each word's first character offset."""
  starts, position = [], 0
  for word in words:
    starts.append(position)
    position += len(word) + 1
  return " ".join(words), starts


def first_subtokens(offsets: list[tuple[int, int]], special: list[int], starts: list[int]) -> np.ndarray:
  """[tokens] int: the word index a token starts, or -1 (special token, later sub-token of a word)."""
  out = np.full(len(offsets), -1, np.int32)
  seen = set()
  word = 0
  for t, ((begin, end), is_special) in enumerate(zip(offsets, special)):
    if is_special or end <= begin:
      continue
    while word + 1 < len(starts) and starts[word + 1] <= begin:
      word += 1
    if word not in seen:
      seen.add(word)
      out[t] = word
  return out


class TaggingObjective(TaskObjective):
  """Cross entropy at the first sub-token of every word: sums over labelled tokens."""

  head = "token_classification"

  def totals(self, batch):
    return {"task_count": jnp.sum(batch["label_weights"].astype(jnp.float32))}

  def logits(self, params, batch, rng=None):
    return forward(self.model(rng), params, batch, rng).logits

  def predict(self, params, batch):
    return {"predictions": jnp.argmax(self.logits(params, batch), -1).astype(jnp.int32)}

  def sums(self, params, batch, rng):
    logits = self.logits(params, batch, rng)
    labels, weights = batch["labels"], batch["label_weights"].astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"task_loss": jnp.sum(cross_entropy(logits, labels) * weights),
            "task_correct": jnp.sum(correct * weights), "task_count": jnp.sum(weights)}


class TagTask(FinetuneTask):
  """`tag`: entity-level precision / recall / F1 (seqeval default mode) and token accuracy."""

  name = "tag"
  head = "token_classification"
  token_outputs = ("predictions",)

  def load(self, path, split, labels=None):
    sentences = finetune_data.read_conll(path)
    if not sentences:
      raise ValueError(f"{path}: no sentences (expected CoNLL lines 'token ... tag', blank lines between sentences)")
    if labels is None:
      # String order, except that "O" comes first: index 0 is then the tag of untagged tokens.
      tags = sorted({t for s in sentences for t in s.tags})
      labels = finetune_data.LabelMap((["O"] if "O" in tags else []) + [t for t in tags if t != "O"])
    max_length = self.config.data.max_length
    n = len(sentences)
    ids = np.full((n, max_length), self.tokenizer.pad_id, np.int32)
    mask = np.zeros((n, max_length), np.int32)
    types = np.zeros((n, max_length), np.int32)
    label_ids = np.zeros((n, max_length), np.int32)
    weights = np.zeros((n, max_length), np.float32)
    word_index = np.full((n, max_length), -1, np.int32)
    texts, starts = zip(*(word_starts(s.tokens) for s in sentences))
    encodings = self.tokenizer.encode_batch(list(texts), max_length=max_length)
    for i, (sentence, encoding) in enumerate(zip(sentences, encodings)):
      length = len(encoding.ids)
      ids[i, :length], mask[i, :length], types[i, :length] = encoding.ids, encoding.attention_mask, encoding.type_ids
      first = first_subtokens(encoding.offsets, encoding.special_tokens_mask, starts[i])
      word_index[i, :length] = first
      for t in np.flatnonzero(first >= 0):
        tag = sentence.tags[first[t]]
        label_ids[i, t] = labels.encode(tag, where=f"{path}:{sentence.line_number + first[t]}")
        weights[i, t] = 1.0
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": label_ids,
              "label_weights": weights}
    return Dataset(arrays, tuple(arrays), mask.sum(1).astype(np.int32), path,
                   extra={"tags": [s.tags for s in sentences], "word_index": word_index}, labels=labels)

  def model_config(self, cfg, labels):
    return cfg.replace(num_labels=labels.num_classes, label_names=tuple(labels.names))

  def objective(self, cfg, labels):
    return TaggingObjective(cfg)

  def word_predictions(self, dataset: Dataset, predictions: np.ndarray) -> list[list[str]]:
    """Token predictions [N, L'] -> one tag per word; words past the truncation get "O"."""
    out = []
    word_index = dataset.extra["word_index"]
    for i, tags in enumerate(dataset.extra["tags"]):
      words = ["O"] * len(tags)
      for t in np.flatnonzero(word_index[i, :predictions.shape[1]] >= 0):
        words[word_index[i, t]] = dataset.labels.decode(int(predictions[i, t]))
      out.append(words)
    return out

  def metrics(self, dataset, outputs):
    predicted = self.word_predictions(dataset, np.asarray(outputs["predictions"]))
    gold = dataset.extra["tags"]
    result = evaluation.entity_f1(gold, predicted)
    result["token_accuracy"] = evaluation.token_accuracy(gold, predicted)
    return result

