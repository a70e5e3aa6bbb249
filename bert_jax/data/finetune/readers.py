"""Fine-tuning data: labelled files (and TFDS GLUE) read into plain Python records.

Nothing here tokenizes or imports jax: a reader returns strings and the line
each record came from, so the task code can tokenize and report errors by
line. Every reader checks its input and raises `ValueError` (a missing file:
`FileNotFoundError`) whose message starts with `FILE:LINE:` (or the TFDS
record / JSON key path) and says what was expected and what was found.

  read_table    .tsv / .csv / .jsonl / .json (JSON lines), `.gz` allowed -> Table
  read_tfds     a TFDS GLUE config through `tfds.data_source` (no TensorFlow) -> Table
  LabelMap      training label strings <-> class ids; saved beside checkpoints as JSON
  parse_score   a label string -> float, for regression targets (STS-B)
  read_conll    CoNLL-2003 style token/tag columns -> list[TaggedSentence]
  read_squad    SQuAD v1.1 / v2.0 JSON -> list[QAExample]

Format rules that callers rely on:

  * TSV fields are split on tab only, with no quote processing: a `"` or `''`
    is part of the text (the bundled movie_sentiment files have `''Conan''`).
    CSV uses the `csv` module's standard quoting (a quoted field may hold
    commas, doubled quotes and newlines).
  * Files are read as bytes and decoded as UTF-8 one line at a time, so a bad
    byte is reported with its line; a leading byte-order mark is dropped.
  * Blank lines at the end of a file are ignored; a blank line between records
    of a TSV / CSV / JSON-lines file is an error (it usually means a record was
    split or the file was concatenated badly).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

PathLike = str | os.PathLike

_TABLE_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
_BOM = "\ufeff"
# Integer labels as written in files: "0", "1", "-1" (not "1.0", not " 1", not "١").
_INT_LABEL = re.compile(r"[+-]?[0-9]+")


# -- records ---------------------------------------------------------------------------


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


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
  """One CoNLL sentence: tokens [n] and their tags [n]; line_number = 1-based line of the first token."""

  tokens: list[str]
  tags: list[str]
  line_number: int


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


# -- reading bytes ---------------------------------------------------------------------


def _read_bytes(path: PathLike) -> tuple[str, bytes]:
  """(path as str, file bytes), decompressed when the name ends in `.gz`."""
  name = os.fspath(path)
  if not os.path.exists(name):
    raise FileNotFoundError(f"{name}: no such file")
  try:
    with open(name, "rb") as f:
      data = f.read()
  except OSError as e:  # a directory, no permission, ...
    raise ValueError(f"{name}: cannot read the file: {e}") from e
  if name.endswith(".gz"):
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a truncated file an EOFError
      raise ValueError(f"{name}: expected gzip-compressed data (the name ends in .gz), found: {e}") from e
  return name, data


def _decoded_lines(name: str, data: bytes) -> list[str]:
  """The file's lines decoded as UTF-8, without line endings (`\\n` or `\\r\\n`).

  Decoding one line at a time lets a bad byte be reported with its line. A
  final newline does not start another line.
  """
  raw_lines = data.split(b"\n")
  if raw_lines and raw_lines[-1] == b"":
    raw_lines.pop()
  lines = []
  file_offset = 0
  for number, raw in enumerate(raw_lines, start=1):
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise ValueError(
          f"{name}:{number}: expected UTF-8 text, found byte 0x{raw[e.start]:02x} that is not valid UTF-8 "
          f"at byte offset {e.start} of the line (offset {file_offset + e.start} in the "
          f"{'decompressed ' if name.endswith('.gz') else ''}file)") from None
    file_offset += len(raw) + 1
    if text.endswith("\r"):
      text = text[:-1]
    if number == 1 and text.startswith(_BOM):
      text = text[len(_BOM):]
    lines.append(text)
  return lines


def _table_format(name: str) -> str:
  stem = name[:-len(".gz")] if name.endswith(".gz") else name
  ext = os.path.splitext(stem)[1].lower()
  if ext not in _TABLE_FORMATS:
    raise ValueError(f"{name}: expected a file name ending in .tsv, .csv, .jsonl or .json (optionally + .gz), "
                     f"found {ext or 'no extension'!r}")
  return _TABLE_FORMATS[ext]


# -- tables ------------------------------------------------------------------------------


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
  name, data = _read_bytes(path)
  kind = _table_format(name)
  lines = _decoded_lines(name, data)
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
                       f"found {_json_type(value)}")
    rows.append((number, value))
  return rows, list(rows[0][1])


def read_json_lines(path: PathLike) -> list[tuple[int, dict[str, Any]]]:
  """[(line number, object)] of a JSON-lines file (.gz allowed), with the errors of read_table."""
  name, data = _read_bytes(path)
  return _jsonl_rows(name, _decoded_lines(name, data))[0]


def _json_type(value: Any) -> str:
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
    raise ValueError(f"{where}: expected {column!r} to be a string, found {_json_type(value)}")
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
                     f"found {_json_type(value)}")
  label = value.strip()
  if not label:
    raise ValueError(f"{where}: missing label: expected a value in {'key' if kind == 'jsonl' else 'column'} "
                     f"{column!r}, found {value!r}")
  return label


# -- labels ------------------------------------------------------------------------------


class LabelMap:
  """Label strings <-> class ids 0..num_classes-1, fixed by the training labels.

  `from_labels` orders the distinct labels: when every label is an integer
  ("0", "-1", "+2"; not "1.0") by integer value, else as strings. So {"0", "1"}
  gives ids 0, 1 and {"1", "2", "3"} gives 0, 1, 2: the id of a label is its
  position in the sorted list, not the integer itself. Save the map with the
  checkpoint (`to_json`) so that predictions decode to the training labels.
  """

  def __init__(self, names: Sequence[str]):
    """names [num_classes]: the label of each class id; distinct, non-empty strings."""
    names = list(names)
    if not names:
      raise ValueError("LabelMap: expected at least one label, found none")
    for n in names:
      if not isinstance(n, str) or not n:
        raise ValueError(f"LabelMap: expected non-empty label strings, found {n!r} in {names}")
    if len(set(names)) != len(names):
      duplicates = sorted({n for n in names if names.count(n) > 1})
      raise ValueError(f"LabelMap: expected distinct labels, found {duplicates} more than once in {names}")
    self._names = names
    self._ids = {n: i for i, n in enumerate(names)}

  @classmethod
  def from_labels(cls, labels: Iterable[str]) -> LabelMap:
    """The map of the distinct training labels, ordered as the class docstring says."""
    if labels is None:
      raise ValueError("LabelMap.from_labels: expected label strings, found None (was the data read without labels?)")
    distinct = set()
    for label in labels:
      if not isinstance(label, str):
        raise ValueError(f"LabelMap.from_labels: expected label strings, found {label!r} ({type(label).__name__})")
      distinct.add(label)
    if all(_INT_LABEL.fullmatch(label) for label in distinct):
      # Ties ("01" vs "1") are ordered by their text, so the order never depends on set iteration.
      return cls(sorted(distinct, key=lambda label: (int(label), label)))
    return cls(sorted(distinct))

  @property
  def names(self) -> list[str]:
    """[num_classes] the label of each class id."""
    return list(self._names)

  @property
  def num_classes(self) -> int:
    return len(self._names)

  def encode(self, label: str, *, where: str = "") -> int:
    """The class id of `label`; `where` (e.g. `FILE:LINE`) starts the error for an unseen label."""
    try:
      return self._ids[label]
    except (KeyError, TypeError):
      prefix = f"{where}: " if where else ""
      raise ValueError(f"{prefix}unknown label {label!r}: expected one of the training labels {self._names}") from None

  def decode(self, index: int) -> str:
    """The label of class id `index` (an int or numpy integer)."""
    if isinstance(index, bool) or not hasattr(index, "__index__"):
      raise ValueError(f"LabelMap.decode: expected an integer class id, found {index!r}")
    i = index.__index__()
    if not 0 <= i < len(self._names):
      raise ValueError(f"LabelMap.decode: expected a class id in [0, {len(self._names)}), found {i}")
    return self._names[i]

  def to_json(self) -> str:
    """JSON text `{"labels": [name of id 0, name of id 1, ...]}`."""
    return json.dumps({"labels": self._names}, ensure_ascii=False)

  @classmethod
  def from_json(cls, text: str | bytes) -> LabelMap:
    """The map written by `to_json`."""
    try:
      value = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"LabelMap.from_json: expected JSON text, found invalid JSON: {e}") from None
    if not isinstance(value, dict) or not isinstance(value.get("labels"), list):
      raise ValueError(f"LabelMap.from_json: expected an object with a 'labels' list, found {str(text)[:200]!r}")
    return cls(value["labels"])

  def __eq__(self, other: object) -> bool:
    return isinstance(other, LabelMap) and self._names == other._names

  def __hash__(self) -> int:
    return hash(tuple(self._names))

  def __repr__(self) -> str:
    return f"LabelMap({self._names!r})"


def parse_score(label: str, where: str) -> float:
  """A regression target (e.g. an STS-B similarity) from its label string; `where` starts the error."""
  try:
    value = float(label)
  except (TypeError, ValueError):
    raise ValueError(f"{where}: expected a number as the regression score, found {label!r}") from None
  if not math.isfinite(value):
    raise ValueError(f"{where}: expected a finite number as the regression score, found {label!r}")
  return value


# -- TFDS GLUE ---------------------------------------------------------------------------

# GLUE config -> (sentence feature, pair feature or None).
_GLUE_FEATURES = {
    "cola": ("sentence", None),
    "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "mnli_matched": ("premise", "hypothesis"),
    "mnli_mismatched": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "ax": ("premise", "hypothesis"),
}


def read_tfds(name: str, split: str, *, data_dir: PathLike | None = None, require_label: bool = True) -> Table:
  """Reads a prepared TFDS GLUE split with `tfds.data_source` (ArrayRecord; TensorFlow not needed).

  Args:
    name: "glue/<config>" with an optional ":<version>", config one of cola, sst2,
      mrpc, rte, wnli, stsb, qqp, mnli (+ _matched / _mismatched), qnli, ax.
    split: e.g. "train", "validation", "validation_matched" (mnli), "test".
    data_dir: the TFDS data folder; None: TFDS's default.
    require_label: GLUE test splits store label -1 (no label). True: such a
      record is an error; False: a split with any unlabelled record gives
      `Table.labels = None`.

  Returns:
    A `Table` whose path is `tfds:<name>:<split>`, line_numbers the 0-based
    record indices; sentences / pairs map the config's text features (e.g.
    mnli: premise / hypothesis, qqp: question1 / question2). Class labels are
    the dataset's ClassLabel names ("negative", "entailment", ...); stsb labels
    are the float score as a string.

  Raises:
    ValueError: an unsupported name, a dataset that cannot be opened (not
      prepared, unknown split), a record without a label, a missing feature or
      text that is not UTF-8, naming the record.
  """
  dataset, _, config = name.split(":")[0].partition("/")
  config = config.split("/")[0]
  if dataset != "glue" or config not in _GLUE_FEATURES:
    raise ValueError(f"read_tfds: expected a name glue/<config> with config one of {sorted(_GLUE_FEATURES)}, "
                     f"found {name!r}")
  text_feature, pair_feature = _GLUE_FEATURES[config]
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import, optional path)

  origin = f"tfds:{name}:{split}"
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir)
    info = getattr(source, "dataset_info", None)
    if info is None:  # a data source that is not TFDS's own class (e.g. a test double)
      info = tfds.builder(name, data_dir=data_dir).info
  except Exception as e:  # tfds raises many kinds: not found, not prepared, bad split
    raise ValueError(f"{origin}: cannot open the TFDS dataset {name!r} split {split!r}: {e}") from e
  label_names = getattr(info.features["label"], "names", None)  # None: stsb's float score

  table = Table(path=origin, sentences=[], pairs=[] if pair_feature else None, labels=[], line_numbers=[])
  unlabelled = None  # first record without a label
  for index, record in _tfds_records(source):
    where = f"{origin}: record {index}"
    table.sentences.append(_tfds_text(record, text_feature, where))
    if pair_feature:
      table.pairs.append(_tfds_text(record, pair_feature, where))
    table.line_numbers.append(index)
    label = _tfds_label(record, label_names, where)
    if label is None:
      if require_label:
        raise ValueError(f"{where}: expected a label, found -1: split {split!r} of {name!r} has no labels "
                         f"(GLUE test splits are unlabelled; pass require_label=False to read it for prediction)")
      unlabelled = index if unlabelled is None else unlabelled
    elif unlabelled is None:
      table.labels.append(label)
  if not table.sentences:
    raise ValueError(f"{origin}: expected records, found an empty split")
  if unlabelled is not None:
    table.labels = None
  return table


def _tfds_records(source: Sequence[Any]) -> Iterable[tuple[int, dict[str, Any]]]:
  """(index, record) for every record of a data source.

  One record at a time: record decoding costs more than the ArrayRecord read,
  and `source[i]` is the one access every data source (and tfds' mock) supports.
  """
  for index in range(len(source)):
    yield index, source[index]


def _scalar(value: Any) -> Any:
  """A numpy scalar / 0-d array as the numpy scalar itself (str() of a float32 stays short: "3.8")."""
  if hasattr(value, "shape") and getattr(value, "shape", None) == ():
    return value[()]
  return value


def _tfds_text(record: dict[str, Any], feature: str, where: str) -> str:
  if feature not in record:
    raise ValueError(f"{where}: expected a {feature!r} feature, found features {sorted(record)}")
  value = _scalar(record[feature])
  if isinstance(value, bytes):
    try:
      value = value.decode("utf-8")
    except UnicodeDecodeError as e:
      raise ValueError(f"{where}: expected UTF-8 text in {feature!r}, found byte 0x{value[e.start]:02x} "
                       f"at byte offset {e.start}") from None
  if not isinstance(value, str):
    raise ValueError(f"{where}: expected text in {feature!r}, found {value!r}")
  # Empty texts are kept: a few upstream GLUE records have one, and a tokenizer handles them.
  return value


def _tfds_label(record: dict[str, Any], label_names: list[str] | None, where: str) -> str | None:
  """The label string, or None for GLUE's "no label" value -1."""
  if "label" not in record:
    raise ValueError(f"{where}: expected a 'label' feature, found features {sorted(record)}")
  value = _scalar(record["label"])
  if label_names is None:  # stsb: a float score
    number = float(value)
    return None if number == -1 else str(value)
  index = int(value)
  if index == -1:
    return None
  if not 0 <= index < len(label_names):
    raise ValueError(f"{where}: expected a class id in [0, {len(label_names)}) ({label_names}), found {index}")
  return label_names[index]


# -- CoNLL -------------------------------------------------------------------------------


def read_conll(path: PathLike) -> list[TaggedSentence]:
  """Reads CoNLL-2003 style tagging data (`.gz` allowed).

  One token per line as whitespace-separated columns: the token first, its tag
  in the last column (CoNLL-2003: token POS chunk NER). Blank lines separate
  sentences (several in a row are fine); `-DOCSTART-` lines are skipped.

  Raises:
    FileNotFoundError: no such file.
    ValueError: `FILE:LINE: ...` for bytes that are not UTF-8, a line with one
      column (no tag), or a file without sentences.
  """
  name, data = _read_bytes(path)
  sentences = []
  tokens, tags, first = [], [], 0

  def close() -> None:
    nonlocal tokens, tags
    if tokens:
      sentences.append(TaggedSentence(tokens=tokens, tags=tags, line_number=first))
    tokens, tags = [], []

  for number, line in enumerate(_decoded_lines(name, data), start=1):
    columns = line.split()
    if not columns:
      close()
      continue
    if columns[0] == "-DOCSTART-":
      close()  # a document boundary is a sentence boundary, even without the blank line
      continue
    if len(columns) == 1:
      raise ValueError(f"{name}:{number}: expected a token and a tag (2 or more whitespace-separated columns), "
                       f"found 1 column: {line!r}")
    if not tokens:
      first = number
    tokens.append(columns[0])
    tags.append(columns[-1])
  close()
  if not sentences:
    raise ValueError(f"{name}: expected tagged sentences (token ... tag lines), found none")
  return sentences


# -- SQuAD -------------------------------------------------------------------------------


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
  name, data = _read_bytes(path)
  text = "\n".join(_decoded_lines(name, data))
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
      raise ValueError(f"{name}: {where}.{key}: expected {names}, found {_json_type(value)}")
    return value

  def objects(values: list[Any], where: str) -> Iterable[tuple[str, dict[str, Any]]]:
    for i, value in enumerate(values):
      if not isinstance(value, dict):
        raise ValueError(f"{name}: {where}[{i}]: expected an object, found {_json_type(value)}")
      yield f"{where}[{i}]", value

  if not isinstance(root, dict):
    raise ValueError(f"{name}: expected a JSON object with a 'data' list, found {_json_type(root)}")
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
