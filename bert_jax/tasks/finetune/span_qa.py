"""Extractive span QA (`qa`): SQuAD v1.1 / v2.0 JSON, long contexts in overlapping windows, EM and F1.

Featurization follows the reference recipe: the question (cut to
max_query_length tokens) is paired with windows of the context of at most
max_length tokens that overlap by doc_stride tokens (the tokenizer's own
overflow, so tokens never change at window edges). A window that does not hold
the whole answer, and every unanswerable question, points at the first token.
Evaluation gathers each example's windows, scores spans start + end logit over
the n_best starts and ends (answers at most max_answer_length tokens), and for
SQuAD v2 answers "" when the no-answer score (first token) beats the best span.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import tokenizers

from bert_jax import evaluation
from bert_jax.data.batching import Dataset
from bert_jax.data import finetune as finetune_data
from bert_jax.tasks.base import cross_entropy, example_count, example_mask, forward, weighted_sum
from bert_jax.tasks.finetune.base import FinetuneTask, TaskObjective

N_BEST = 20


def truncate_question(tokenizer, question: str, max_tokens: int) -> str:
  """The question cut after its first max_tokens tokens (at a token boundary, in characters)."""
  question = question.lstrip()
  encoding = tokenizer.encode(question, add_special_tokens=False)
  if len(encoding.ids) <= max_tokens:
    return question
  return question[:encoding.offsets[max_tokens - 1][1]]


def window_tokenizer(tokenizer, max_length: int, stride: int) -> tokenizers.Tokenizer:
  """A copy of the backend that cuts the second text into max_length windows overlapping by `stride` tokens."""
  backend = tokenizers.Tokenizer.from_str(tokenizer.backend.to_str())
  backend.enable_truncation(max_length, stride=stride, strategy="only_second")
  return backend


def windows(backend: tokenizers.Tokenizer, question: str, context: str) -> list[tokenizers.Encoding]:
  """[question + context window] encodings covering the whole context."""
  first = backend.encode(question, context)
  return [first] + list(first.overflowing)


def answer_tokens(offsets, sequence_ids, start_char: int, end_char: int) -> tuple[int, int]:
  """(start, end) token indices of the answer characters [start_char, end_char) in this window, or (0, 0)."""
  context = [i for i, s in enumerate(sequence_ids) if s == 1]
  if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
    return 0, 0
  start = next(i for i in context if offsets[i][1] > start_char)
  end = next(i for i in reversed(context) if offsets[i][0] < end_char)
  return start, end


class SpanObjective(TaskObjective):
  """(CE(start) + CE(end)) / 2 per window, summed over windows."""

  head = "qa"

  def sum_keys(self):
    return ["task_loss", "task_count"]

  def totals(self, batch):
    return {"task_count": example_count(batch)}

  def spans(self, params, batch, rng=None):
    out = forward(self.model(rng), params, batch, rng)
    # Padding can never be a start or an end.
    valid = example_mask(batch).astype(bool)
    low = jnp.finfo(jnp.float32).min
    return jnp.where(valid, out.start_logits, low), jnp.where(valid, out.end_logits, low)

  def predict(self, params, batch):
    start, end = self.spans(params, batch)
    return {"start_logits": start, "end_logits": end}

  def sums(self, params, batch, rng):
    start, end = self.spans(params, batch, rng)
    loss = (cross_entropy(start, batch["start_positions"]) + cross_entropy(end, batch["end_positions"])) / 2
    return {"task_loss": weighted_sum(loss, batch), "task_count": example_count(batch)}


class QATask(FinetuneTask):
  """`qa`: exact match and F1 as the official SQuAD script computes them (as fractions)."""

  name = "qa"
  head = "qa"
  token_outputs = ("start_logits", "end_logits")

  def load(self, path, split, labels=None):
    examples = finetune_data.read_squad(path)
    if not examples:
      raise ValueError(f"{path}: no questions")
    data = self.config.data
    rows, offsets, owners, starts, ends = [], [], [], [], []
    backend = window_tokenizer(self.tokenizer, data.max_length, data.doc_stride)
    for index, example in enumerate(examples):
      question = truncate_question(self.tokenizer, example.question, data.max_query_length)
      answer = example.answers[0] if example.answers and not example.is_impossible else None
      for window in windows(backend, question, example.context):
        rows.append(window)
        owners.append(index)
        offsets.append([o if s == 1 else (-1, -1) for o, s in zip(window.offsets, window.sequence_ids)])
        if answer is None:
          starts.append(0), ends.append(0)
        else:
          s, e = answer_tokens(window.offsets, window.sequence_ids, answer[1], answer[1] + len(answer[0]))
          starts.append(s), ends.append(e)
    n, length = len(rows), data.max_length
    arrays = {"input_ids": np.full((n, length), self.tokenizer.pad_id, np.int32),
              "attention_mask": np.zeros((n, length), np.int32), "token_type_ids": np.zeros((n, length), np.int32)}
    offset_array = np.full((n, length, 2), -1, np.int32)
    for i, row in enumerate(rows):
      k = len(row.ids)
      arrays["input_ids"][i, :k], arrays["attention_mask"][i, :k] = row.ids, row.attention_mask
      arrays["token_type_ids"][i, :k] = row.type_ids
      offset_array[i, :k] = offsets[i]
    arrays["start_positions"] = np.asarray(starts, np.int32)
    arrays["end_positions"] = np.asarray(ends, np.int32)
    return Dataset(arrays, ("input_ids", "attention_mask", "token_type_ids"),
                   arrays["attention_mask"].sum(1).astype(np.int32), path,
                   extra={"examples": examples, "owners": np.asarray(owners), "offsets": offset_array,
                          "version_2": any(e.is_impossible for e in examples)})

  def objective(self, cfg, labels):
    return SpanObjective(cfg)

  def answers(self, dataset: Dataset, start_logits: np.ndarray, end_logits: np.ndarray) -> dict[str, str]:
    """Best answer text per question id (windows [F, L] of logits)."""
    extra = dataset.extra
    max_answer = self.config.data.max_answer_length
    best: dict[int, tuple[float, str]] = {}
    null: dict[int, float] = {}
    for f, owner in enumerate(extra["owners"]):
      context = extra["examples"][owner].context
      offsets = extra["offsets"][f]
      s_logits, e_logits = start_logits[f], end_logits[f]
      null[owner] = min(null.get(owner, np.inf), float(s_logits[0] + e_logits[0]))
      top_starts = np.argsort(s_logits)[::-1][:N_BEST]
      top_ends = np.argsort(e_logits)[::-1][:N_BEST]
      for s in top_starts:
        if offsets[s][0] < 0:
          continue
        for e in top_ends:
          if offsets[e][0] < 0 or e < s or e - s + 1 > max_answer:
            continue
          score = float(s_logits[s] + e_logits[e])
          if owner not in best or score > best[owner][0]:
            best[owner] = (score, context[offsets[s][0]:offsets[e][1]])
    out = {}
    for index, example in enumerate(extra["examples"]):
      score, text = best.get(index, (-np.inf, ""))
      if extra["version_2"] and null.get(index, -np.inf) > score:
        text = ""
      out[example.id] = text
    return out

  def metrics(self, dataset, outputs):
    predictions = self.answers(dataset, np.asarray(outputs["start_logits"]), np.asarray(outputs["end_logits"]))
    gold = {e.id: [text for text, _ in e.answers] or [""] for e in dataset.extra["examples"]}
    return evaluation.squad_metrics(predictions, gold)
