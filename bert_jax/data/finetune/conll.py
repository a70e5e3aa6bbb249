"""CoNLL-2003 style tagging data (token ... tag columns, blank lines between sentences) -> TaggedSentence list."""

from __future__ import annotations

import dataclasses
import os

from bert_jax.data.finetune.tables import PathLike
from bert_jax.runtime import fileio


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
  """One CoNLL sentence: tokens [n] and their tags [n]; line_number = 1-based line of the first token."""

  tokens: list[str]
  tags: list[str]
  line_number: int


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
  name = os.fspath(path)
  sentences = []
  tokens, tags, first = [], [], 0

  def close() -> None:
    nonlocal tokens, tags
    if tokens:
      sentences.append(TaggedSentence(tokens=tokens, tags=tags, line_number=first))
    tokens, tags = [], []

  for number, line in enumerate(fileio.read_lines(name), start=1):
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
