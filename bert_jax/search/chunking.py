"""Documents into chunks: windows of model tokens cut where words start, neighbours overlapping.

A document longer than chunk_tokens model tokens (its title's tokens
included) is split into windows of at most chunk_tokens tokens, cut where a
whitespace-separated word starts (found from the model tokenizer's character
offsets), neighbours sharing at least chunk_overlap tokens (only a word longer
than half a window is cut inside). `indexed_text` is what BM25 and the encoder
see of a chunk: its document's title in front of its text.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence

import numpy as np

from bert_jax.search.documents import Document, SearchError

DEFAULT_CHUNK_TOKENS = 200
DEFAULT_CHUNK_OVERLAP = 50
# Documents tokenized per call when chunking (bounds the memory held by offsets).
TOKENIZE_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class Chunk:
  """A window of one document: text == document.text[start:end]."""
  doc: str
  index: int  # position among its document's chunks
  start: int
  end: int
  text: str


def word_starts(text: str, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
  """bool [tokens]: token i begins a whitespace-separated word of `text`.

  offsets: (start, end) characters of each token. A token starts a word when
  it is the first one, when whitespace lies between it and the previous token,
  or when its own span begins with whitespace (byte-level / metaspace
  tokenizers may count the space into the token).
  """
  starts = np.zeros(len(offsets), bool)
  if len(offsets):
    starts[0] = True
  for i in range(1, len(offsets)):
    begin, previous_end = offsets[i][0], offsets[i - 1][1]
    gap = text[previous_end:begin] if begin > previous_end else ""
    starts[i] = any(c.isspace() for c in gap) or text[begin:begin + 1].isspace()
  return starts


def token_windows(starts: np.ndarray, chunk_tokens: int, overlap: int) -> list[tuple[int, int]]:
  """Token windows [s, e) over a text whose word starts are `starts` (bool [tokens]).

  Each window has at most chunk_tokens tokens and ends just before a word start
  (or at the end); the next one begins at the last word start that leaves at
  least `overlap` tokens shared, or at the first word start after that if
  none does. Only a word longer than half a window is cut inside (a cut before
  it would leave a window of a few tokens).
  """
  n = len(starts)
  if n <= chunk_tokens:
    return [(0, n)]
  boundaries = np.flatnonzero(starts).tolist()  # sorted token indices where a word begins
  windows = []
  s = 0
  while True:
    e = min(s + chunk_tokens, n)
    if e < n:
      # The last word start in (s, e]: the window then ends with a whole word.
      i = bisect.bisect_right(boundaries, e) - 1
      if boundaries[i] > s + chunk_tokens // 2:
        e = boundaries[i]
    windows.append((s, e))
    if e == n:
      return windows
    i = bisect.bisect_right(boundaries, e - overlap) - 1
    if i >= 0 and boundaries[i] > s:
      s = boundaries[i]
    else:
      # No word start leaves `overlap` shared tokens and moves on: take the
      # first one after s (more overlap), or cut inside an over-long word.
      i = bisect.bisect_right(boundaries, s)
      s = boundaries[i] if i < len(boundaries) and boundaries[i] < e else max(s + 1, e - overlap)


def chunk_spans(text: str, offsets: Sequence[tuple[int, int]], chunk_tokens: int,
                overlap: int) -> list[tuple[int, int]]:
  """Character spans [start, end) of the chunks of one text (see token_windows).

  A text of at most chunk_tokens tokens is one chunk spanning all of it;
  otherwise each span runs from its first token's start to its last token's
  end, less any whitespace at either side.
  """
  if len(offsets) <= chunk_tokens:
    return [(0, len(text))]
  spans = []
  for s, e in token_windows(word_starts(text, offsets), chunk_tokens, overlap):
    start, end = offsets[s][0], offsets[e - 1][1]
    while start < end and text[start].isspace():
      start += 1
    while end > start and text[end - 1].isspace():
      end -= 1
    spans.append((start, end))
  return spans


def chunk_documents(tokenizer, documents: Sequence[Document], chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                    overlap: int = DEFAULT_CHUNK_OVERLAP) -> list[Chunk]:
  """Chunks of every document, in document order, with the model tokenizer's offsets.

  tokenizer: a bert_jax.data.tokenizers.Tokenizer (encode_batch gives offsets).
  A title's tokens count against chunk_tokens, since the title is embedded
  with every chunk; a title of more than half the window is refused.
  """
  check_chunking(chunk_tokens, overlap)
  titles = [d.title for d in documents if d.title]
  title_tokens = {}
  for start in range(0, len(titles), TOKENIZE_BATCH):
    batch = titles[start:start + TOKENIZE_BATCH]
    for title, encoding in zip(batch, tokenizer.encode_batch(batch, add_special_tokens=False)):
      title_tokens[title] = len(encoding.ids)
  chunks = []
  for start in range(0, len(documents), TOKENIZE_BATCH):
    batch = documents[start:start + TOKENIZE_BATCH]
    encodings = tokenizer.encode_batch([d.text for d in batch], add_special_tokens=False)
    for doc, encoding in zip(batch, encodings):
      room = chunk_tokens
      if doc.title:
        room -= title_tokens[doc.title]
        if room < chunk_tokens - chunk_tokens // 2:
          raise SearchError(f"{doc.source or doc.id}: the title of document {doc.id!r} has "
                            f"{title_tokens[doc.title]} tokens, more than half of chunk_tokens={chunk_tokens}")
      # The overlap shrinks with the room a title leaves, keeping windows moving forward.
      spans = chunk_spans(doc.text, encoding.offsets, room, min(overlap, room - 1))
      chunks.extend(Chunk(doc.id, i, s, e, doc.text[s:e]) for i, (s, e) in enumerate(spans))
  return chunks


def check_chunking(chunk_tokens: int, overlap: int) -> None:
  if not isinstance(chunk_tokens, int) or chunk_tokens < 2:
    raise SearchError(f"chunk_tokens={chunk_tokens}: must be an integer >= 2")
  if not isinstance(overlap, int) or not 0 <= overlap < chunk_tokens:
    raise SearchError(f"chunk_overlap={overlap}: must be an integer in [0, chunk_tokens={chunk_tokens})")


def indexed_text(chunk: Chunk, title: str | None) -> str:
  """What BM25 and the encoder see for a chunk: the document's title gives each chunk its context."""
  return f"{title}\n{chunk.text}" if title else chunk.text
