"""Documents and queries: their records, and reading them from JSONL or TSV files.

The file formats are in the bert_jax.search docstring. Ids are checked
(present, strings or integers, no tab or line break, unique) and every bad
row is a SearchError (a ValueError) naming its file:line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

from bert_jax.runtime import fileio


class SearchError(ValueError):
  """Bad input or index: the message names the file and line, document or setting at fault."""


@dataclasses.dataclass(frozen=True)
class Document:
  id: str
  text: str
  title: str | None = None
  source: str = dataclasses.field(default="", compare=False)  # "file:line" for messages


@dataclasses.dataclass(frozen=True)
class Query:
  id: str
  text: str
  relevant: tuple[str, ...] | None = None
  source: str = dataclasses.field(default="", compare=False)


def numbered_lines(path: str, what: str) -> list[tuple[int, str]]:
  """(line number, line) for the non-blank lines of a UTF-8 file; SearchError names the bad line."""
  # decode_lines ends a line at "\n" only: str.splitlines would also split inside a text on \x0b, U+2028, ...
  try:
    with open(path, "rb") as f:
      lines = [(number, line) for number, line in fileio.decode_lines(f, path, SearchError) if line.strip()]
  except OSError as e:
    raise SearchError(f"cannot read {what} {path}: {e.strerror or e}") from e
  if not lines:
    raise SearchError(f"{what} {path} is empty")
  return lines


def _is_jsonl(path: str, first_line: str) -> bool:
  ext = os.path.splitext(path)[1].lower()
  if ext in (".jsonl", ".json", ".ndjson"):
    return True
  if ext in (".tsv", ".tab"):
    return False
  return first_line.lstrip().startswith("{")


def json_object(line: str, where: str) -> dict:
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise SearchError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e
  if not isinstance(record, dict):
    raise SearchError(f"{where}: expected a JSON object, got {type(record).__name__}")
  return record


def _check_id(value: Any, where: str, field: str = "id") -> str:
  if value is None:
    raise SearchError(f"{where}: missing {field!r}")
  if isinstance(value, bool) or not isinstance(value, (str, int)):
    raise SearchError(f"{where}: {field!r} must be a string (or integer), got {type(value).__name__}")
  value = str(value)
  if not value.strip():
    raise SearchError(f"{where}: empty {field!r}")
  if any(c in value for c in "\t\n\r"):
    raise SearchError(f"{where}: {field!r} {value!r} contains a tab or line break")
  return value


def make_document(id: Any, text: Any, title: Any = None, where: str = "<document>") -> Document:
  """A checked Document; SearchError(`where`: ...) for a missing id, empty text, wrong types."""
  doc_id = _check_id(id, where)
  if text is None:
    raise SearchError(f"{where}: document {doc_id!r} has no 'text'")
  if not isinstance(text, str):
    raise SearchError(f"{where}: document {doc_id!r}: 'text' must be a string, got {type(text).__name__}")
  if not text.strip():
    raise SearchError(f"{where}: document {doc_id!r} has empty text")
  if title is not None and not isinstance(title, str):
    raise SearchError(f"{where}: document {doc_id!r}: 'title' must be a string, got {type(title).__name__}")
  return Document(doc_id, text, (title.strip() or None) if title is not None else None, where)


def _check_unique(items: Sequence, what: str) -> None:
  seen: dict[str, str] = {}
  for item in items:
    if item.id in seen:
      raise SearchError(f"{item.source}: duplicate {what} id {item.id!r} (first at {seen[item.id]})")
    seen[item.id] = item.source


def _tsv_header(path: str, number: int, line: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> list[str]:
  names = line.split("\t")
  unknown = [n for n in names if n not in allowed]
  missing = [n for n in required if n not in names]
  if unknown or missing or len(set(names)) != len(names):
    raise SearchError(f"{path}:{number}: TSV header must name the columns {' and '.join(required)} "
                      f"(optional: {', '.join(n for n in allowed if n not in required)}), tab-separated; "
                      f"got {line!r}")
  return names


def _tsv_row(path: str, number: int, line: str, names: list[str]) -> dict[str, str]:
  fields = line.split("\t")
  if len(fields) != len(names):
    raise SearchError(f"{path}:{number}: expected {len(names)} tab-separated fields ({', '.join(names)}), "
                      f"got {len(fields)}")
  return dict(zip(names, fields))


def read_documents(path: str) -> list[Document]:
  """Documents of a JSONL or TSV file (see the bert_jax.search docstring), checked, in file order."""
  path = os.fspath(path)
  lines = numbered_lines(path, "documents")
  docs = []
  if _is_jsonl(path, lines[0][1]):
    for number, line in lines:
      where = f"{path}:{number}"
      record = json_object(line, where)
      docs.append(make_document(record.get("id"), record.get("text"), record.get("title"), where))
  else:
    names = _tsv_header(path, *lines[0], allowed=("id", "text", "title"), required=("id", "text"))
    for number, line in lines[1:]:
      row = _tsv_row(path, number, line, names)
      docs.append(make_document(row["id"], row["text"], row.get("title") or None, f"{path}:{number}"))
  if not docs:
    raise SearchError(f"documents {path} has a header but no documents")
  _check_unique(docs, "document")
  return docs


def as_documents(documents) -> tuple[list[Document], str]:
  """(documents, source): from a file path, or from Documents / dicts / (id, text) pairs."""
  if isinstance(documents, (str, os.PathLike)):
    return read_documents(documents), os.path.abspath(documents)
  docs = []
  for i, item in enumerate(documents):
    where = f"documents[{i}]"
    if isinstance(item, Document):
      docs.append(make_document(item.id, item.text, item.title, item.source or where))
    elif isinstance(item, dict):
      docs.append(make_document(item.get("id"), item.get("text"), item.get("title"), where))
    elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
      docs.append(make_document(*item, where=where))
    else:
      raise SearchError(f"{where}: expected a Document, a dict with 'id' and 'text', or an (id, text) pair")
  if not docs:
    raise SearchError("no documents to index")
  _check_unique(docs, "document")
  return docs, "<memory>"


def _relevant_ids(value: Any, where: str) -> tuple[str, ...]:
  if isinstance(value, (str, int)) and not isinstance(value, bool):
    value = [value]
  if not isinstance(value, list):
    raise SearchError(f"{where}: 'relevant' must be a list of document ids, got {type(value).__name__}")
  return tuple(dict.fromkeys(_check_id(v, where, "relevant") for v in value))


def read_queries(path: str, require_relevant: bool = False) -> list[Query]:
  """Queries of a JSONL or TSV file (see the bert_jax.search docstring), checked, in file order.

  require_relevant: every query must list at least one relevant document (evaluate).
  """
  path = os.fspath(path)
  lines = numbered_lines(path, "queries")
  queries = []
  jsonl = _is_jsonl(path, lines[0][1])
  if not jsonl and lines[0][1].split("\t") in (["id", "query"], ["id", "query", "relevant"]):
    lines = lines[1:]
  for number, line in lines:
    where = f"{path}:{number}"
    if jsonl:
      record = json_object(line, where)
      query_id, text, relevant = record.get("id"), record.get("query"), record.get("relevant")
      relevant = None if relevant is None else _relevant_ids(relevant, where)
    else:
      fields = line.split("\t")
      if len(fields) not in (2, 3):
        raise SearchError(f"{where}: expected 2 or 3 tab-separated fields (id, query[, relevant]), got {len(fields)}")
      query_id, text = fields[:2]
      relevant = None
      if len(fields) == 3:
        relevant = tuple(dict.fromkeys(_check_id(v.strip(), where, "relevant")
                                       for v in fields[2].split(",") if v.strip()))
    query_id = _check_id(query_id, where)
    if not isinstance(text, str) or not text.strip():
      raise SearchError(f"{where}: query {query_id!r} has no query text")
    if require_relevant and not relevant:
      raise SearchError(f"{where}: query {query_id!r} lists no relevant document ids")
    queries.append(Query(query_id, text, relevant, where))
  if not queries:
    raise SearchError(f"queries {path} has a header but no queries")
  _check_unique(queries, "query")
  return queries

