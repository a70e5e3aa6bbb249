"""Pretraining text: document streams from text files or a TFDS dataset, and which process reads what.

A corpus spec (the `data.train` / `data.validation` config value) is either

  * comma-separated globs of text files (`.gz` read compressed): one sentence or
    paragraph per line, documents separated by one or more blank lines, every
    file ending a document. Remote paths (gs://bucket/dir/*.txt: wildcards in
    the file name only) go through etils.epath and need its backend (gcsfs).
    Lines are decoded by bert_jax.runtime.fileio.decode_lines (a bad byte
    names its line; a byte-order mark opening a file is dropped) and
    stripped of surrounding whitespace; or
  * `tfds:<name>[/<config>][:<split>]`: a TFDS dataset read with
    `tfds.data_source` (ArrayRecord, no TensorFlow); each record is one
    document whose `text_key` field is split into lines. The split defaults
    to the one being prepared ("train" / "validation").

Documents are numbered in corpus order (files in the order of the patterns,
each pattern's matches sorted). `select_documents` gives a process its share:
process i of n takes documents i, i+n, ...; a held-out tail (the last
`holdout` documents) goes to validation, whole, on every process.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import os
from collections.abc import Callable, Iterator

from etils import epath

from bert_jax.runtime import fileio

Lines = list[str]
# A document that is read only if a process needs it (TFDS records are decoded lazily).
LazyDocument = Callable[[], Lines]


def _expand(pattern: str, what: str) -> list[str]:
  """Files matching a glob; remote (gs://...) patterns may use wildcards in the file name only."""
  if not fileio.is_remote(pattern):
    return sorted(p for p in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(p))
  folder, name = pattern.rsplit("/", 1)
  if any(c in folder for c in "*?["):
    raise ValueError(f"{what}: {pattern!r}: remote patterns may use wildcards only in the file name")
  try:
    return sorted(str(p) for p in epath.Path(folder).glob(name))
  except Exception as e:  # the filesystem backends raise their own kinds
    raise ValueError(f"{what}: cannot list {pattern!r} ({e}); remote files need a backend such as gcsfs") from e


def _size_and_mtime(path: str) -> tuple[int, int]:
  if fileio.is_remote(path):
    stat = epath.Path(path).stat()
    return stat.length, int(stat.mtime)
  stat = os.stat(path)
  return stat.st_size, stat.st_mtime_ns


@dataclasses.dataclass
class TextFiles:
  """Documents of plain-text files; `paths` are expanded already."""

  spec: str
  paths: list[str]
  what: str  # the config key, for error messages
  bytes_read: int = 0

  @property
  def total_bytes(self) -> int:
    return sum(_size_and_mtime(p)[0] for p in self.paths)

  def fingerprint(self) -> dict:
    files = [[p if fileio.is_remote(p) else os.path.abspath(p), *_size_and_mtime(p)] for p in self.paths]
    return {"files": files}

  def documents(self) -> Iterator[LazyDocument]:
    self.bytes_read = 0
    for path in self.paths:
      done_before = self.bytes_read
      for lines in self._file_documents(path, done_before):
        yield (lambda lines=lines: lines)

  def _file_documents(self, path: str, done_before: int) -> Iterator[Lines]:
    with fileio.open_binary(path) as stream:
      # Progress counts bytes of the file as stored (total_bytes): of a .gz file, the compressed bytes
      # its GzipFile has taken from the raw file.
      raw = stream.fileobj if isinstance(stream, gzip.GzipFile) else stream
      lines: Lines = []
      try:
        for _, text in fileio.decode_lines(stream, f"{self.what}: {path}"):
          line = text.strip()
          if line:
            lines.append(line)
          elif lines:
            self.bytes_read = done_before + raw.tell()
            yield lines
            lines = []
      except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{self.what}: cannot read {path}: {e}") from e
      self.bytes_read = done_before + raw.tell()
      if lines:
        yield lines


@dataclasses.dataclass
class TfdsSource:
  """Documents of a TFDS dataset's text field, via `tfds.data_source` (no TensorFlow)."""

  spec: str
  name: str
  split: str
  text_key: str
  what: str
  bytes_read: int = 0  # records here, for progress

  def __post_init__(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import, optional path)

    try:
      self._source = tfds.data_source(self.name, split=self.split)
    except Exception as e:  # tfds raises many kinds: not found, not prepared, bad split
      raise ValueError(f"{self.what}: cannot open TFDS dataset {self.name!r} split {self.split!r}: {e}") from e

  @property
  def total_bytes(self) -> int:
    return len(self._source)

  def fingerprint(self) -> dict:
    info = getattr(self._source, "dataset_info", None)
    full_name = getattr(info, "full_name", self.name)
    return {"tfds": full_name, "split": self.split, "text_key": self.text_key, "records": len(self._source)}

  def documents(self) -> Iterator[LazyDocument]:
    for index in range(len(self._source)):
      self.bytes_read = index + 1
      yield lambda index=index: self._read(index)

  def _read(self, index: int) -> Lines:
    record = self._source[index]
    if self.text_key not in record:
      raise KeyError(f"{self.what}: TFDS record {index} of {self.name!r} has no {self.text_key!r} field "
                     f"(fields: {sorted(record)}); set data.text_key")
    text = record[self.text_key]
    if hasattr(text, "item"):  # numpy scalar / 0-d array
      text = text.item()
    if isinstance(text, bytes):
      try:
        text = text.decode("utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(f"{self.what}: TFDS {self.name!r} record {index}: text is not valid UTF-8 ({e})") from None
    return [line.strip() for line in str(text).split("\n") if line.strip()]


def open_corpus(spec: str, *, split: str, text_key: str = "text", what: str = "data.train") -> TextFiles | TfdsSource:
  """Parses a corpus spec (see the module docstring); raises if it names nothing."""
  spec = spec.strip()
  if not spec:
    raise ValueError(f"{what} is empty: give text-file globs or tfds:<name>")
  if spec.startswith("tfds:"):
    name, _, tfds_split = spec[len("tfds:"):].partition(":")
    if not name:
      raise ValueError(f"{what}={spec!r}: expected tfds:<name>[/<config>][:<split>]")
    return TfdsSource(spec, name, tfds_split or split, text_key, what)
  paths = []
  for pattern in filter(None, (p.strip() for p in spec.split(","))):
    if pattern.startswith("tfds:"):
      raise ValueError(f"{what}={spec!r}: a tfds: source cannot be combined with other sources")
    matches = _expand(pattern, what)
    if not matches:
      raise FileNotFoundError(f"{what}: {pattern!r} matches no files")
    paths.extend(matches)
  return TextFiles(spec, paths, what)


def select_documents(
    corpus: TextFiles | TfdsSource, *, holdout: int, role: str, process_index: int = 0, process_count: int = 1,
) -> Iterator[tuple[int, Lines]]:
  """Yields (document index, lines) for one process.

  role "train": every document except the last `holdout`, taking indices
  i, i+n, ... for process i of n. role "heldout": exactly the last `holdout`
  documents, whole (validation is small and every process evaluates it all).
  Raises ValueError when the corpus has no document for the role.
  """
  if role not in ("train", "heldout"):
    raise ValueError(f"role must be 'train' or 'heldout', got {role!r}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")
  # Holding back `holdout` documents until the stream ends tells which are the last ones
  # without counting first.
  delayed: collections.deque[tuple[int, LazyDocument]] = collections.deque()
  total = 0
  found = 0
  for index, document in enumerate(corpus.documents()):
    total += 1
    delayed.append((index, document))
    if len(delayed) > holdout:
      index, document = delayed.popleft()
      if role == "train" and index % process_count == process_index:
        lines = document()
        if lines:
          found += 1
          yield index, lines
  if role == "heldout":
    for index, document in delayed:
      lines = document()
      if lines:
        found += 1
        yield index, lines
  if not total:
    raise ValueError(f"{corpus.what}={corpus.spec!r} holds no documents (no non-blank line)")
  if not found and role == "train" and total <= holdout:
    raise ValueError(f"{corpus.what}={corpus.spec!r} has {total} documents, all held out for validation "
                     f"(data.validation_documents={holdout}); add text or lower validation_documents")
