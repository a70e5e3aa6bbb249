"""SQuAD v1.1 / v2.0 JSON -> one `QAExample` per question, every answer checked against its context."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from typing import Any

from bert_jax.data.finetune.tables import PathLike, json_type
from bert_jax.runtime import fileio


@dataclasses.dataclass(frozen=True)
class QAExample:
  """One SQuAD question.

  Attributes:
    id: the question id (unique in the file).
    question: the question text.
    context: the paragraph the answers are taken from.
    answers: [(text, answer_start)] with context[answer_start:answer_start + len(text)] == text;
      empty when `is_impossible`. SQuAD dev files give several answers per question.
    is_impossible: SQuAD v2.0 unanswerable question (always False for v1.1).
    title: the article title ("" when the file has none).
  """

  id: str
  question: str
  context: str
  answers: list[tuple[str, int]]
  is_impossible: bool
  title: str


def read_squad(path: PathLike) -> list[QAExample]:
  """Reads SQuAD v1.1 / v2.0 JSON (`.gz` allowed) into one `QAExample` per question, in file order.

  Expected layout: {"data": [{"title", "paragraphs": [{"context", "qas": [{"id",
  "question", "answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}.
  v2.0 unanswerable questions have `is_impossible: true` and no answers (their
  "plausible_answers" are ignored); every other question needs an answer.

  Raises:
    FileNotFoundError: no such file.
    ValueError: `FILE: data[i].paragraphs[j].qas[k]...: ...` for a missing or
      mistyped key, an answer whose `answer_start` does not point at its text in
      the context (naming the question id), or a question id used twice; bad
      UTF-8 or JSON name the line.
  """
  name = os.fspath(path)
  text = "\n".join(fileio.read_lines(name))
  try:
    root = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{name}:{e.lineno}: expected SQuAD JSON, found invalid JSON: {e.msg} at column {e.colno}") from None

  def get(obj: Any, key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in obj:
      if default is not ...:
        return default
      raise ValueError(f"{name}: {where}: expected key {key!r}, found keys {list(obj)}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
      names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
      raise ValueError(f"{name}: {where}.{key}: expected {names}, found {json_type(value)}")
    return value

  def objects(values: list[Any], where: str) -> Iterable[tuple[str, dict[str, Any]]]:
    for i, value in enumerate(values):
      if not isinstance(value, dict):
        raise ValueError(f"{name}: {where}[{i}]: expected an object, found {json_type(value)}")
      yield f"{where}[{i}]", value

  if not isinstance(root, dict):
    raise ValueError(f"{name}: expected a JSON object with a 'data' list, found {json_type(root)}")
  examples = []
  seen: dict[str, str] = {}  # question id -> key path
  for article_at, article in objects(get(root, "data", list, "(top level)"), "data"):
    title = get(article, "title", str, article_at, default="")
    for paragraph_at, paragraph in objects(get(article, "paragraphs", list, article_at), f"{article_at}.paragraphs"):
      context = get(paragraph, "context", str, paragraph_at)
      for qa_at, qa in objects(get(paragraph, "qas", list, paragraph_at), f"{paragraph_at}.qas"):
        qid = get(qa, "id", str, qa_at)
        where = f"{qa_at} (id {qid!r})"
        if qid in seen:
          raise ValueError(f"{name}: {where}: expected a unique question id, found it already at {seen[qid]}")
        seen[qid] = qa_at
        question = get(qa, "question", str, where)
        if not question.strip():
          raise ValueError(f"{name}: {where}.question: expected a question, found {question!r}")
        impossible = get(qa, "is_impossible", bool, where, default=False)
        answers = []
        for answer_at, answer in objects(get(qa, "answers", list, where), f"{qa_at}.answers"):
          answer_where = f"{answer_at} (id {qid!r})"
          answer_text = get(answer, "text", str, answer_where)
          start = get(answer, "answer_start", int, answer_where)
          if not answer_text:
            raise ValueError(f"{name}: {answer_where}.text: expected the answer text, found ''")
          if start < 0:
            raise ValueError(f"{name}: {answer_where}.answer_start: expected a character offset >= 0, found {start}")
          found = context[start:start + len(answer_text)]
          if found != answer_text:
            raise ValueError(f"{name}: {answer_where}: expected context[{start}:{start + len(answer_text)}] to be "
                             f"the answer text {answer_text!r}, found {found!r} (context has {len(context)} "
                             f"characters)")
          answers.append((answer_text, start))
        if impossible and answers:
          raise ValueError(f"{name}: {where}.answers: expected no answers for an is_impossible question, "
                           f"found {len(answers)}")
        if not impossible and not answers:
          raise ValueError(f"{name}: {where}.answers: expected at least one answer (or is_impossible: true), "
                           f"found none")
        examples.append(QAExample(id=qid, question=question, context=context, answers=answers,
                                  is_impossible=impossible, title=title))
  if not examples:
    raise ValueError(f"{name}: expected questions under data[i].paragraphs[j].qas, found none")
  return examples
