"""Texts paired with rows of a fixed embedding matrix (alignment to another encoder's space).

  read_vectors   an `.npy` file of float rows [N, D] -> float32 [N, D], checked (2-D, finite, non-zero rows)
  read_captions  a TSV / CSV / JSON-lines table of texts, each naming its row -> Captions [n records]

The other tower (an image encoder, an older text encoder) is fixed: its embeddings are
given once as the rows of an `.npy` matrix, and each text names the row it belongs with.
Several texts may name one row (the captions of one image); a row nobody names is
simply never used. Errors start with `FILE` or `FILE:LINE` and say what was expected.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np

from bert_jax.data.finetune.tables import read_json_lines, read_table
from bert_jax.runtime import fileio

TEXT_COLUMNS = ("text", "sentence", "caption")  # tried in order after the configured one
ROW_COLUMNS = ("row", "vector")
_ROW_INDEX = re.compile(r"[+-]?[0-9]+")  # as written: "3", not "3.0" or " 3"


@dataclasses.dataclass
class Captions:
  """Texts and the vector row each names, in file order; n = number of records.

  Attributes:
    path: the file read.
    texts: [n] the text column as written.
    rows: int64 [n] the row of the vectors file each text names.
    line_numbers: [n] 1-based line where each record starts.
  """

  path: str
  texts: list[str]
  rows: np.ndarray
  line_numbers: list[int]

  def __len__(self) -> int:
    return len(self.texts)


def read_vectors(path: str) -> np.ndarray:
  """float32 [N, D] from an `.npy` file of N rows of D numbers (any float or integer dtype).

  Raises:
    FileNotFoundError: no such file.
    ValueError: `FILE: ...` for a file that is not a NumPy array (pickled objects are refused),
      an array that is not 2-D or is empty, a non-numeric dtype, a NaN / infinity (the first one's
      row and column named), or a row of zeros (it has no direction to align to).
  """
  name = os.fspath(path)
  if not (fileio.resolve(name).exists() if fileio.is_remote(name) else os.path.isfile(name)):
    raise FileNotFoundError(f"{name}: no such file (expected an .npy file of the fixed embeddings [rows, dim])")
  try:
    with fileio.open_binary(name) as stream:
      array = np.load(stream, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise ValueError(f"{name}: expected a NumPy .npy file of embeddings [rows, dim], could not read it: {e}") from None
  if not isinstance(array, np.ndarray):  # an .npz archive
    raise ValueError(f"{name}: expected one array in .npy format, found an archive of {sorted(array.files)}")
  if array.ndim != 2 or 0 in array.shape:
    raise ValueError(f"{name}: expected a 2-D array [rows, dim] with at least one row and column, "
                     f"found shape {array.shape}")
  if array.dtype.kind not in "fiu":
    raise ValueError(f"{name}: expected float (or integer) values, found dtype {array.dtype}")
  vectors = array.astype(np.float32)
  bad = ~np.isfinite(vectors)
  if bad.any():
    row, column = np.argwhere(bad)[0]
    value = array[row, column].item()
    what = f"{value!r}" + (" (beyond float32)" if np.isfinite(value) else "")
    raise ValueError(f"{name}: expected finite values, found {what} at row {row}, column {column} "
                     f"({int(bad.sum())} non-finite values in {int(bad.any(1).sum())} rows)")
  zero = ~vectors.any(1)
  if zero.any():
    raise ValueError(f"{name}: row {int(np.argmax(zero))} is all zeros: expected every row to have a direction "
                     f"({int(zero.sum())} zero rows)")
  return vectors


def _columns(name: str) -> list[str]:
  """The header (or the first JSON object's keys) of a table, for the message about a missing column."""
  stem = name[:-3] if name.endswith(".gz") else name
  if stem.endswith((".jsonl", ".json")):
    return list(read_json_lines(name)[0][1])
  first = fileio.read_lines(name)[0]
  return [c.strip() for c in first.split("\t" if stem.endswith(".tsv") else ",")]


def _parse_row(value: str, where: str, column: str, num_rows: int, vectors: str) -> int:
  if not _ROW_INDEX.fullmatch(value):
    raise ValueError(f"{where}: expected {column!r} to be a row index (an integer in 0..{num_rows - 1}), "
                     f"found {value!r}")
  row = int(value)
  if not 0 <= row < num_rows:
    raise ValueError(f"{where}: {column!r} = {row} is out of range: {vectors} has {num_rows} rows "
                     f"(expected 0..{num_rows - 1})")
  return row


def read_captions(path: str, num_rows: int, *, text_columns: Sequence[str] = TEXT_COLUMNS,
                  row_columns: Sequence[str] = ROW_COLUMNS, vectors: str = "the vectors file") -> Captions:
  """Reads texts and the row each names; `.tsv` / `.csv` with a header row, or JSON lines (`.gz` allowed).

  Args:
    path: the file (format rules as `read_table`: TSV fields literal, CSV quoted).
    num_rows: the rows of the vectors file; every row index must be below it.
    text_columns / row_columns: names each column may have, tried in order (the first in the header wins).
    vectors: how the vectors file is named in messages (its path).

  Raises:
    FileNotFoundError: no such file.
    ValueError: `FILE:LINE: ...` for the errors of `read_table` (empty text, wrong field count,
      bad UTF-8, ...), a missing text or row column (the header found is listed), a row that is
      not an integer ("3.0", "", "three") or is outside 0..num_rows - 1.
  """
  name = os.fspath(path)
  text_columns, row_columns = tuple(dict.fromkeys(text_columns)), tuple(dict.fromkeys(row_columns))
  table = None
  for column in row_columns:  # read_table takes one label column: try each name the row may have
    table = read_table(name, text_columns=text_columns, pair_column=None, label_column=column, require_label=False)
    if table.labels is not None:
      break
  if table.labels is None:
    names = " or ".join(repr(c) for c in row_columns)
    raise ValueError(f"{name}:1: expected a row column {names} (each text's row in {vectors}), "
                     f"found columns {_columns(name)}")
  rows = np.array([_parse_row(value, table.where(i), column, num_rows, vectors)
                   for i, value in enumerate(table.labels)], np.int64)
  return Captions(path=name, texts=table.sentences, rows=rows, line_numbers=table.line_numbers)
