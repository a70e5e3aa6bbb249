"""Labelled tables: `.tsv`, `.csv` and JSON lines (`.jsonl` / `.json`, `.gz` allowed) read into a `Table`.

  read_table       a sentence (or sentence-pair) file with a label column -> Table [n records]
  read_json_lines  [(line number, object)] of a JSON-lines file, checked the same way
  json_type        how a JSON value is named in error messages ("null", "a number (5)", ...)

Format rules that callers rely on:

  * TSV fields are split on tab only, with no quote processing: a `"` or `''`
    is part of the text (the bundled movie_sentiment files have `''Conan''`).
    CSV uses the `csv` module's standard quoting (a quoted field may hold
    commas, doubled quotes and newlines).
  * Blank lines at the end of a file are ignored; a blank line between records
    of a TSV / CSV / JSON-lines file is an error (it usually means a record was
    split or the file was concatenated badly).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from bert_jax.runtime import fileio

PathLike = str | os.PathLike

_TABLE_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


@dataclasses.dataclass
class Table:
  """Sentence (or sentence-pair) records with their labels, in file order; n = number of records.

  Attributes:
    path: the file read, or `tfds:<name>:<split>` for `read_tfds`.
    sentences: [n] the text column, exactly as written (TSV) or parsed (CSV / JSON).
    pairs: [n] the pair column when the file has one, else None.
    labels: [n] label strings as written ("1", "positive", "3.5"; JSON numbers via
      `str`, JSON booleans as "true" / "false"), surrounding spaces removed; None
      when the file has no label column and `require_label=False`. Map them with
      `LabelMap` or `parse_score`.
    line_numbers: [n] 1-based physical line where each record starts (for TFDS:
      the 0-based record index), for error messages downstream.
  """

  path: str
  sentences: list[str]
  pairs: list[str] | None
  labels: list[str] | None
  line_numbers: list[int]

  def __len__(self) -> int:
    return len(self.sentences)

  def where(self, index: int) -> str:
    """`FILE:LINE` of record `index` (0-based), for messages about that record."""
    return f"{self.path}:{self.line_numbers[index]}"


def _table_format(name: str) -> str:
  stem = name[:-len(".gz")] if name.endswith(".gz") else name
  ext = os.path.splitext(stem)[1].lower()
  if ext not in _TABLE_FORMATS:
    raise ValueError(f"{name}: expected a file name ending in .tsv, .csv, .jsonl or .json (optionally + .gz), "
                     f"found {ext or 'no extension'!r}")
  return _TABLE_FORMATS[ext]


def read_table(path: PathLike,
               *,
               text_columns: Sequence[str] = ("sentence",),
               pair_column: str | None = "sentence2",
               label_column: str = "label",
               require_label: bool = True) -> Table:
  """Reads a labelled table: `.tsv`, `.csv` (header row required) or JSON lines (`.jsonl` / `.json`).

  The format comes from the extension; `NAME.tsv.gz` etc. are read through gzip.

  Args:
    path: the file.
    text_columns: names the sentence column may have, tried in order; the first
      one in the header is used (e.g. ("sentence", "text") or ("question",)).
    pair_column: the second text of a sentence pair; read when the header (for
      JSON lines: the first object) has it, else `Table.pairs` is None. None: never.
    label_column: the label column.
    require_label: whether a file without the label column is an error; when
      False such a file gives `Table.labels = None` (unlabelled test data). A
      file that has the column needs a label on every record either way.

  Returns:
    A `Table` with one entry per record. Other columns (e.g. `score`) are ignored.

  Raises:
    FileNotFoundError: no such file.
    ValueError: `FILE:LINE: ...` for a bad extension or gzip data, bytes that are
      not UTF-8, an empty file or one with a header but no records, a missing
      column (the header found is listed), a line with the wrong number of fields,
      an empty or whitespace-only sentence, a missing label, a blank line between
      records, or (JSON lines) a line that is not a JSON object.
  """
  if isinstance(text_columns, str):  # ("sentence") without the comma
    text_columns = (text_columns,)
  if not text_columns:
    raise ValueError("read_table: text_columns is empty: expected at least one column name")
  name = os.fspath(path)
  lines = fileio.read_lines(name)
  kind = _table_format(name)
  if kind == "jsonl":
    rows, columns = _jsonl_rows(name, lines)
  else:
    rows, columns = _delimited_rows(name, lines, kind)

  def find(wanted: Iterable[str]) -> str | None:
    return next((c for c in wanted if c in columns), None)

  shown = f"{'first object keys' if kind == 'jsonl' else 'header'} {list(columns)}"
  text_column = find(text_columns)
  if text_column is None:
    names = " or ".join(repr(c) for c in text_columns)
    raise ValueError(f"{name}:1: expected a text column {names}, found {shown}")
  has_pair = pair_column is not None and pair_column in columns
  has_label = label_column in columns
  if require_label and not has_label:
    raise ValueError(f"{name}:1: expected a label column {label_column!r}, found {shown} "
                     f"(pass require_label=False to read unlabelled data)")

  table = Table(path=name, sentences=[], pairs=[] if has_pair else None, labels=[] if has_label else None,
                line_numbers=[])
  for line, row in rows:
    where = f"{name}:{line}"
    table.sentences.append(_text_field(row, text_column, where, kind))
    if has_pair:
      table.pairs.append(_text_field(row, pair_column, where, kind))
    if has_label:
      table.labels.append(_label_field(row, label_column, where, kind))
    table.line_numbers.append(line)
  return table


def _without_trailing_blanks(blank: list[bool]) -> int:
  """How many items to keep so that trailing blank ones are dropped; blank [n]: whether item i is blank."""
  end = len(blank)
  while end and blank[end - 1]:
    end -= 1
  return end


def _delimited_rows(name: str, lines: list[str], kind: str) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
  """TSV / CSV lines -> ([(start line, {column: field})], header columns)."""
  if kind == "tsv":
    # Literal fields: split on tab only; quotes are text (a public contract, see the module docstring).
    records = [(number, line.split("\t"), not line.strip()) for number, line in enumerate(lines, start=1)]
  else:
    records = []
    reader = csv.reader((line + "\n" for line in lines), strict=True)
    start = 1
    try:
      for row in reader:
        records.append((start, row, not row or (len(row) == 1 and not row[0].strip())))
        start = reader.line_num + 1
    except csv.Error as e:
      # `start` is where the bad record begins: an unclosed quote runs on to the end of the file.
      raise ValueError(f"{name}:{start}: expected well-formed CSV (standard quoting), found: {e} "
                       f"(in the record starting on this line)") from None
  end = _without_trailing_blanks([blank for _, _, blank in records])
  records = records[:end]
  if not records:
    raise ValueError(f"{name}: the file is empty: expected a header row and at least one record")
  for number, _, blank in records:
    if blank:
      what = "the header row" if number == records[0][0] else "a record"
      raise ValueError(f"{name}:{number}: expected {what}, found a blank line (blank lines are allowed only "
                       f"at the end of the file)")
  header_line, header, _ = records[0]
  header = [c.strip() for c in header]
  seen = set()
  for column in header:
    if not column:
      raise ValueError(f"{name}:{header_line}: expected a column name in every header field, found an empty one "
                       f"in {header}")
    if column in seen:
      raise ValueError(f"{name}:{header_line}: expected distinct column names, found {column!r} twice in {header}")
    seen.add(column)
  if len(records) == 1:
    raise ValueError(f"{name}: expected records after the header {header}, found none")
  separator = "tab-separated" if kind == "tsv" else "comma-separated"
  rows = []
  for number, fields, _ in records[1:]:
    if len(fields) != len(header):
      raise ValueError(f"{name}:{number}: expected {len(header)} {separator} fields ({', '.join(header)}), "
                       f"found {len(fields)}: {fields!r}")
    rows.append((number, dict(zip(header, fields))))
  return rows, header


def _jsonl_rows(name: str, lines: list[str]) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
  """JSON lines -> ([(line, object)], keys of the first object)."""
  end = _without_trailing_blanks([not line.strip() for line in lines])
  lines = lines[:end]
  if not lines:
    raise ValueError(f"{name}: the file is empty: expected one JSON object per line")
  rows = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      raise ValueError(f"{name}:{number}: expected a JSON object, found a blank line (blank lines are allowed "
                       f"only at the end of the file)")
    try:
      value = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{name}:{number}: expected one JSON object per line (JSON lines), found invalid JSON: "
                       f"{e.msg} at column {e.colno}") from None
    if not isinstance(value, dict):
      raise ValueError(f"{name}:{number}: expected a JSON object per line (JSON lines), "
                       f"found {json_type(value)}")
    rows.append((number, value))
  return rows, list(rows[0][1])


def read_json_lines(path: PathLike) -> list[tuple[int, dict[str, Any]]]:
  """[(line number, object)] of a JSON-lines file (.gz allowed), with the errors of read_table."""
  name = os.fspath(path)
  return _jsonl_rows(name, fileio.read_lines(name))[0]


def json_type(value: Any) -> str:
  """How a JSON value is named in an error message: "null", "a boolean (true)", "a number (5)", "a list", ..."""
  if value is None:
    return "null"
  if isinstance(value, bool):
    return f"a boolean ({json.dumps(value)})"
  if isinstance(value, (int, float)):
    return f"a number ({value!r})"
  if isinstance(value, str):
    return f"a string ({value!r})"
  return "a list" if isinstance(value, list) else "an object"


def _text_field(row: dict[str, Any], column: str, where: str, kind: str) -> str:
  if column not in row:  # JSON lines only: a TSV / CSV row always has every header column
    raise ValueError(f"{where}: expected key {column!r}, found keys {list(row)}")
  value = row[column]
  if not isinstance(value, str):
    raise ValueError(f"{where}: expected {column!r} to be a string, found {json_type(value)}")
  if not value.strip():
    raise ValueError(f"{where}: expected non-empty text in {'key' if kind == 'jsonl' else 'column'} "
                     f"{column!r}, found {value!r}")
  return value


def _label_field(row: dict[str, Any], column: str, where: str, kind: str) -> str:
  if column not in row:
    raise ValueError(f"{where}: missing label: expected key {column!r}, found keys {list(row)}")
  value = row[column]
  if isinstance(value, bool):  # before int: bool is an int subclass
    value = json.dumps(value)
  elif isinstance(value, (int, float)):
    value = str(value)
  elif not isinstance(value, str):
    raise ValueError(f"{where}: expected label {column!r} to be a number, string or boolean, "
                     f"found {json_type(value)}")
  label = value.strip()
  if not label:
    raise ValueError(f"{where}: missing label: expected a value in {'key' if kind == 'jsonl' else 'column'} "
                     f"{column!r}, found {value!r}")
  return label
