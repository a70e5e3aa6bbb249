"""Token classification (`tag`): CoNLL-style files, labels on the first sub-token of each word, entity-level F1.

Words are joined with single spaces and each sentence is tokenized once, whole;
each token belongs to the last word that starts before the token ends.
Only a word's first sub-token carries its label (weight 1) and is read back at
evaluation; the other sub-tokens and the special tokens have weight 0.

A sentence longer than max_length tokens is cut into windows of max_length
tokens (the template's special tokens around each) that overlap by
data.doc_stride tokens, as span QA cuts long contexts. Every window is a
training example; a word's tag is read from the one window in which it has the
most context (BERT's SQuAD rule, `max_context_windows`), so every word with a
token gets a prediction. A sentence that fits is a single window holding all its
tokens. Entity F1 follows seqeval's default (conlleval) chunking.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    # A token belongs to the last word that starts before it ends: SentencePiece and byte-level BPE
    # tokens ("▁lives", "Ġlives") may begin at the space before their word.
    while word + 1 < len(starts) and starts[word + 1] < end:
      word += 1
    if word not in seen:
      seen.add(word)
      out[t] = word
  return out


# Windows ----------------------------------------------------------------------------------------

def window_starts(length: int, room: int, stride: int) -> list[int]:
  """Where windows of `room` tokens start over `length` tokens, each overlapping the one before by `stride`.

  As the tokenizers library's overflow cuts them (span QA's windows): steps of
  room - stride until a window reaches the last token, so the last one may be
  shorter.
  """
  if not 0 <= stride < room:
    raise ValueError(f"window overlap {stride} must be >= 0 and below the window's {room} tokens")
  starts = [0]
  while starts[-1] + room < length:
    starts.append(starts[-1] + room - stride)
  return starts


def max_context_windows(length: int, room: int, stride: int) -> tuple[list[int], np.ndarray]:
  """(window starts, [length] int: the window in which each token has the most context).

  BERT's `_check_is_max_context` (run_squad.py): a token's score in a window is
  min(tokens to its left, tokens to its right) + 0.01 * the window's length;
  the highest score wins and a tie goes to the earlier window. A token in one
  window only belongs to it.
  """
  starts = window_starts(length, room, stride)
  position = np.arange(length)
  best = np.full(length, -np.inf)
  owner = np.zeros(length, np.int32)
  for w, start in enumerate(starts):
    end = min(start + room, length)
    inside = position[start:end]
    score = np.minimum(inside - start, end - 1 - inside) + 0.01 * (end - start)
    owner[start:end] = np.where(score > best[start:end], w, owner[start:end])
    best[start:end] = np.maximum(best[start:end], score)
  return starts, owner


def sentence_windows(sequence_ids: Sequence[int | None], max_length: int, stride: int
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
  """One encoded sentence as windows: [(tokens [k] indices into its encoding, read [k] bool)].

  `read` marks the tokens for which this window is the one with the most
  context. A sentence of at most max_length tokens is one window of all its
  tokens; a longer one keeps the template's leading and trailing special tokens
  (sequence id None) in every window, around at most max_length minus those
  tokens of text.
  """
  length = len(sequence_ids)
  if length <= max_length:
    return [(np.arange(length), np.ones(length, bool))]
  text = [i for i, s in enumerate(sequence_ids) if s is not None]
  leading, trailing = text[0], length - 1 - text[-1]
  body = length - leading - trailing
  starts, owner = max_context_windows(body, max_length - leading - trailing, stride)
  out = []
  for w, start in enumerate(starts):
    end = min(start + max_length - leading - trailing, body)
    tokens = np.r_[0:leading, leading + start:leading + end, length - trailing:length]
    read = np.r_[np.zeros(leading, bool), owner[start:end] == w, np.zeros(trailing, bool)]
    out.append((tokens, read))
  return out


# The task ---------------------------------------------------------------------------------------

class TaggingObjective(TaskObjective):
  """Cross entropy at the first sub-token of every word: sums over labelled tokens."""

  head = "token_classification"

  @staticmethod
  def label_weights(batch) -> jax.Array:
    """[B, L] float32: the labelled tokens of the batch's real examples."""
    weights = batch["label_weights"].astype(jnp.float32)
    if "example_weights" in batch:  # a token-budget step's padding examples label nothing
      weights = weights * batch["example_weights"].astype(jnp.float32)[:, None]
    return weights

  def totals(self, batch):
    return {"task_count": jnp.sum(self.label_weights(batch))}

  def logits(self, params, batch, rng=None):
    return forward(self.model(rng), params, batch, rng).logits

  def predict(self, params, batch):
    return {"predictions": jnp.argmax(self.logits(params, batch), -1).astype(jnp.int32)}

  def sums(self, params, batch, rng):
    logits = self.logits(params, batch, rng)
    labels, weights = batch["labels"], self.label_weights(batch)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"task_loss": jnp.sum(cross_entropy(logits, labels) * weights),
            "task_correct": jnp.sum(correct * weights), "task_count": jnp.sum(weights)}


class TagTask(FinetuneTask):
  """`tag`: entity-level precision / recall / F1 (seqeval default mode) and token accuracy."""

  name = "tag"
  head = "token_classification"
  token_outputs = ("predictions",)

  def load(self, path, split, labels=None):
    """One row per window of a sentence ([rows, max_length] arrays); `extra` maps rows back to words.

    extra: tags (per sentence, the gold tags), owners [rows] (the sentence of each
    row), word_index [rows, max_length] (the word a first sub-token starts, else -1),
    max_context [rows, max_length] bool (the token whose prediction is its word's).
    """
    sentences = finetune_data.read_conll(path)
    if not sentences:
      raise ValueError(f"{path}: no sentences (expected CoNLL lines 'token ... tag', blank lines between sentences)")
    if labels is None:
      # String order, except that "O" comes first: index 0 is then the tag of untagged tokens.
      tags = sorted({t for s in sentences for t in s.tags})
      labels = finetune_data.LabelMap((["O"] if "O" in tags else []) + [t for t in tags if t != "O"])
    max_length, stride = self.config.data.max_length, self.config.data.doc_stride
    room = max_length - self.tokenizer.num_special_tokens()
    if not 0 <= stride < room:
      raise ValueError(f"config.data.doc_stride={stride}: long sentences are tagged in windows of {room} text tokens "
                       f"(data.max_length={max_length} less the special tokens) overlapping by doc_stride; expected "
                       f"0 <= doc_stride < {room}")
    texts, starts = zip(*(word_starts(s.tokens) for s in sentences))
    # Whole sentences, cut into windows here: a token is the same in every window that holds it.
    encodings = self.tokenizer.encode_batch(list(texts))
    rows = []  # (sentence, [k] ids, [k] type ids, [k] word index, [k] max context)
    for i, encoding in enumerate(encodings):
      ids, types = np.asarray(encoding.ids, np.int32), np.asarray(encoding.type_ids, np.int32)
      first = first_subtokens(encoding.offsets, encoding.special_tokens_mask, starts[i])
      for tokens, read in sentence_windows(encoding.sequence_ids, max_length, stride):
        rows.append((i, ids[tokens], types[tokens], first[tokens], read & (first[tokens] >= 0)))
    n = len(rows)
    arrays = {"input_ids": np.full((n, max_length), self.tokenizer.pad_id, np.int32),
              "attention_mask": np.zeros((n, max_length), np.int32),
              "token_type_ids": np.zeros((n, max_length), np.int32),
              "labels": np.zeros((n, max_length), np.int32), "label_weights": np.zeros((n, max_length), np.float32)}
    owners = np.zeros(n, np.int32)
    word_index = np.full((n, max_length), -1, np.int32)
    max_context = np.zeros((n, max_length), bool)
    for r, (i, ids, types, words, read) in enumerate(rows):
      k, sentence = len(ids), sentences[i]
      arrays["input_ids"][r, :k], arrays["attention_mask"][r, :k], arrays["token_type_ids"][r, :k] = ids, 1, types
      owners[r], word_index[r, :k], max_context[r, :k] = i, words, read
      # Every window trains on all the words it holds, not only those it is read for: no label goes
      # unused, and a word at a window's edge (context on one side only) is no harder than the first
      # words of any sentence, which training sees anyway. A word in an overlap so counts once per window
      # in the loss. (Hugging Face's run_ner truncates instead.)
      for t in np.flatnonzero(words >= 0):
        word = words[t]
        arrays["labels"][r, t] = labels.encode(sentence.tags[word], where=f"{path}:{sentence.line_number + word}")
        arrays["label_weights"][r, t] = 1.0
    return Dataset(arrays, tuple(arrays), arrays["attention_mask"].sum(1).astype(np.int32), path,
                   extra={"tags": [s.tags for s in sentences], "owners": owners, "word_index": word_index,
                          "max_context": max_context}, labels=labels)

  def model_config(self, cfg, labels):
    return cfg.replace(num_labels=labels.num_classes, label_names=tuple(labels.names))

  def objective(self, cfg, labels):
    return TaggingObjective(cfg)

  def word_predictions(self, dataset: Dataset, predictions: np.ndarray) -> list[list[str]]:
    """Token predictions [rows, L'] -> one tag per word of every sentence, from its max-context window.

    A word whose first sub-token lies past L' (a narrower prediction array) or
    that has no token at all (the normalizer dropped its characters) gets "O".
    """
    extra = dataset.extra
    out = [["O"] * len(tags) for tags in extra["tags"]]
    for r, t in zip(*np.nonzero(extra["max_context"][:, :predictions.shape[1]])):
      out[extra["owners"][r]][extra["word_index"][r, t]] = dataset.labels.decode(int(predictions[r, t]))
    return out

  def metrics(self, dataset, outputs):
    predicted = self.word_predictions(dataset, np.asarray(outputs["predictions"]))
    gold = dataset.extra["tags"]
    result = evaluation.entity_f1(gold, predicted)
    result["token_accuracy"] = evaluation.token_accuracy(gold, predicted)
    return result
