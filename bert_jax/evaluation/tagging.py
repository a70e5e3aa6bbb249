"""Token classification (NER) scores: entity-level precision / recall / F1 and token accuracy, as seqeval.

Entities are read from tag sequences by conlleval's chunk rules as seqeval
writes them (get_entities, default non-strict mode); tests/test_evaluation.py
checks the scores against seqeval.
"""

from __future__ import annotations

from collections.abc import Sequence


# Boundary rules of conlleval as seqeval writes them. Tags are "<tag>-<type>"
# with tag one of B I E S O (IOB1, IOB2, IOE, BIOES); "." is conlleval's
# sentence-internal separator and never starts or ends a chunk by type.


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
  if prev_tag in ("E", "S"):
    return True
  if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
    return True
  return prev_tag not in ("O", ".") and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
  if tag in ("B", "S"):
    return True
  if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
    return True
  return tag not in ("O", ".") and prev_type != type_


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
  """Entities in one tag sequence as (type, start, end), end inclusive; seqeval's get_entities.

  Follows seqeval.metrics.sequence_labeling.get_entities (default, non-strict
  mode, prefix tags), which reproduces conlleval:
    - "B-X" and "S-X" start an entity; "I-X" or "E-X" starts one after "O",
      after "E-"/"S-", or after a tag of another type (IOB1 style), and
      otherwise continues the current one;
    - "E-X" and "S-X" end their entity; "O", "B-", "S-" end a running one, and
      so does any tag of a different type.
  The type is the text after the first "-"; tags without one ("B", "I", ...)
  have type "_". A tag with an unknown letter ("X-PER", or "PER" read as tag
  "P" of type "ER") acts as seqeval makes it: it ends a running entity and
  starts one exactly when its type differs, like an "I-" tag. seqeval warns
  about such tags; this does not.

  Args:
    tags: [length] tag strings.

  Returns:
    the set of (type, start, end) with 0-based, inclusive positions.
  """
  spans = set()
  prev_tag, prev_type, begin = "O", "", 0
  for i, chunk in enumerate([*tags, "O"]):
    if not chunk:
      raise ValueError(f"empty tag at position {i}")
    tag, type_ = chunk[0], chunk[1:].split("-", maxsplit=1)[-1] or "_"
    if _end_of_chunk(prev_tag, tag, prev_type, type_):
      spans.add((prev_type, begin, i - 1))
    if _start_of_chunk(prev_tag, tag, prev_type, type_):
      begin = i
    prev_tag, prev_type = tag, type_
  return spans


def _check_sequences(true_sequences, pred_sequences) -> None:
  if len(true_sequences) != len(pred_sequences):
    raise ValueError(f"{len(true_sequences)} true sentences but {len(pred_sequences)} predicted")
  for i, (true, pred) in enumerate(zip(true_sequences, pred_sequences)):
    if len(true) != len(pred):
      raise ValueError(f"sentence {i}: {len(true)} true tags but {len(pred)} predicted")


def entity_f1(true_sequences: Sequence[Sequence[str]], pred_sequences: Sequence[Sequence[str]]) -> dict[str, float]:
  """Entity-level precision, recall and F1; matches seqeval's precision_score / recall_score / f1_score.

  seqeval's default mode (conlleval-compatible, not mode="strict"): an entity
  counts as correct when its type, start and end all match. Counts are
  micro-averaged over all sentences. As seqeval does, the sentences are joined
  with an "O" between them, so an entity never runs across a boundary and
  counts in its own sentence. Scores with a 0 denominator are 0.0.

  Args:
    true_sequences: [sentences][length] gold tags.
    pred_sequences: [sentences][length] predicted tags, each sentence as long
      as its gold one (ValueError naming the sentence otherwise).

  Returns:
    dict with precision, recall, f1.
  """
  _check_sequences(true_sequences, pred_sequences)
  joined_true = [tag for sentence in true_sequences for tag in (*sentence, "O")]
  joined_pred = [tag for sentence in pred_sequences for tag in (*sentence, "O")]
  true_spans, pred_spans = entity_spans(joined_true), entity_spans(joined_pred)
  correct = len(true_spans & pred_spans)
  precision = correct / len(pred_spans) if pred_spans else 0.0
  recall = correct / len(true_spans) if true_spans else 0.0
  score = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
  return {"precision": float(precision), "recall": float(recall), "f1": float(score)}


def token_accuracy(true_sequences: Sequence[Sequence[str]], pred_sequences: Sequence[Sequence[str]]) -> float:
  """Fraction of tokens whose tag is right, "O" included; matches seqeval.metrics.accuracy_score.

  Args:
    true_sequences: [sentences][length] gold tags.
    pred_sequences: [sentences][length] predicted tags, lengths as the gold.
  """
  _check_sequences(true_sequences, pred_sequences)
  total = sum(len(sentence) for sentence in true_sequences)
  if total == 0:
    raise ValueError("no tokens to score")
  correct = sum(t == p for true, pred in zip(true_sequences, pred_sequences) for t, p in zip(true, pred))
  return correct / total
