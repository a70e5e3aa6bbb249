"""Pretraining examples from tokenized documents: sentence pairs (NSP, SOP) and packed sentences.

A document is a list of sentences, a sentence a list of token ids without
special tokens. Every builder yields `Example`s whose ids already hold the
tokenizer's special tokens, at most max_length of them:

  nsp_examples     BERT: document-aware A/B pairs; B is the true continuation
                   (label 0) or, with random_next_prob, a span of another
                   document (label 1) and the unused sentences go back
                   (google-research/bert create_pretraining_data.py).
  sop_examples     ALBERT: A/B are consecutive spans of one document; swapped
                   with probability 0.5 (label 1).
  sentence_examples  RoBERTa/DeBERTa FULL-SENTENCES: whole sentences packed up to
                   max_length, crossing document boundaries with the separator
                   token between documents; with cross_documents=False
                   (DOC-SENTENCES) an example ends with its document.
  document_rows    padding-free rows (data.packing): documents back to back, one
                   segment each, split where a row ends.

All randomness comes from the `random.Random` passed in, so a shard of
documents always gives the same examples.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Sequence

Document = Sequence[Sequence[int]]

# Packed rows store segment ids as uint8.
MAX_SEGMENTS = 255


@dataclasses.dataclass(frozen=True)
class Example:
  """One row: ids/type_ids [n <= max_length]; segment_ids [n] when packed; pair_label or -1."""

  ids: list[int]
  type_ids: list[int]
  pair_label: int = -1
  segment_ids: list[int] | None = None


@dataclasses.dataclass(frozen=True)
class Template:
  """How a tokenizer frames one text or a pair, read off a probe encoding.

  Each part is ("special", id, type_id) or ("text", which, type_id) where
  which is 0 for the first text and 1 for the pair text: BERT's pair is
  [CLS] A [SEP] B [SEP] with types 0 0 0 1 1, RoBERTa's <s> A </s></s> B </s>
  with all types 0.
  """

  single: tuple[tuple[str, int, int], ...]
  pair: tuple[tuple[str, int, int], ...]
  separator_id: int  # between documents in FULL-SENTENCES ([SEP] / </s>)

  @classmethod
  def from_tokenizer(cls, tokenizer) -> Template:
    if tokenizer.sep_id is None:
      raise ValueError(f"tokenizer from {tokenizer.source} has no separator token ([SEP] / </s>)")
    return cls(_parts(tokenizer.encode("a")), _parts(tokenizer.encode("a", "b")), tokenizer.sep_id)

  def num_specials(self, pair: bool) -> int:
    return sum(kind == "special" for kind, _, _ in (self.pair if pair else self.single))

  def frame(self, first: Sequence[int], second: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """(ids, type_ids) of one text or a pair with the special tokens in place."""
    texts = (first, second)
    ids: list[int] = []
    type_ids: list[int] = []
    for kind, value, type_id in self.pair if second is not None else self.single:
      part = [value] if kind == "special" else texts[value]
      ids.extend(part)
      type_ids.extend([type_id] * len(part))
    return ids, type_ids


def _parts(encoding) -> tuple[tuple[str, int, int], ...]:
  parts = []
  for token_id, type_id, which in zip(encoding.ids, encoding.type_ids, encoding.sequence_ids):
    if which is None:
      parts.append(("special", token_id, type_id))
    elif not parts or parts[-1][:2] != ("text", which):
      parts.append(("text", which, type_id))
  texts = [value for kind, value, _ in parts if kind == "text"]
  if texts not in ([0], [0, 1]):
    raise ValueError(f"cannot read a template from the probe encoding {encoding.tokens}")
  return tuple(parts)


def _flatten(sentences: Sequence[Sequence[int]]) -> list[int]:
  return [token for sentence in sentences for token in sentence]


def _truncate_pair(first: list[int], second: list[int], max_tokens: int, rng: random.Random) -> None:
  """Trims the longer list, from the front or back at random (BERT's truncate_seq_pair)."""
  while len(first) + len(second) > max_tokens:
    longer = first if len(first) > len(second) else second
    if rng.random() < 0.5:
      del longer[0]
    else:
      longer.pop()


def _chunks(document: Document, max_tokens: int, short_seq_prob: float, rng: random.Random):
  """BERT's accumulation: yields (sentences, target length) per chunk; send() back how many went unused."""
  target = max_tokens
  if rng.random() < short_seq_prob:
    target = rng.randint(2, max_tokens)
  chunk: list[Sequence[int]] = []
  length = 0
  i = 0
  while i < len(document):
    chunk.append(document[i])
    length += len(document[i])
    if i == len(document) - 1 or length >= target:
      # The consumer may push sentences back by returning how many it left unused.
      unused = yield chunk, target
      i -= unused or 0
      chunk, length = [], 0
    i += 1


def nsp_examples(
    documents: Sequence[Document], template: Template, max_length: int, rng: random.Random,
    *, short_seq_prob: float = 0.1, random_next_prob: float = 0.5,
) -> Iterator[Example]:
  """BERT next-sentence pairs; pair_label 0 = B continues A, 1 = B from another document."""
  if len(documents) < 2:
    raise ValueError("next-sentence prediction needs at least 2 documents to draw random segments from")
  max_tokens = max_length - template.num_specials(pair=True)
  for doc_index, document in enumerate(documents):
    chunks = _chunks(document, max_tokens, short_seq_prob, rng)
    unused = None
    while True:
      try:
        chunk, target = chunks.send(unused)
      except StopIteration:
        break
      unused = 0
      a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
      first = _flatten(chunk[:a_end])
      if len(chunk) == 1 or rng.random() < random_next_prob:
        label = 1
        # Unlike the reference (10 tries that may hit the same document), never the same one.
        other = rng.randint(0, len(documents) - 2)
        other += other >= doc_index
        random_document = documents[other]
        second: list[int] = []
        for sentence in random_document[rng.randint(0, len(random_document) - 1):]:
          second.extend(sentence)
          if len(second) >= target - len(first):
            break
        unused = len(chunk) - a_end
      else:
        label = 0
        second = _flatten(chunk[a_end:])
      _truncate_pair(first, second, max_tokens, rng)
      yield Example(*template.frame(first, second), pair_label=label)


def sop_examples(
    documents: Sequence[Document], template: Template, max_length: int, rng: random.Random,
    *, short_seq_prob: float = 0.1, swap_prob: float = 0.5,
) -> Iterator[Example]:
  """ALBERT sentence-order pairs; pair_label 0 = original order, 1 = swapped.

  A chunk of one sentence is cut inside the sentence (ALBERT's code instead
  borrows B from another document there, which would mix NSP into SOP).
  """
  max_tokens = max_length - template.num_specials(pair=True)
  for document in documents:
    for chunk, _ in _chunks(document, max_tokens, short_seq_prob, rng):
      if len(chunk) >= 2:
        a_end = rng.randint(1, len(chunk) - 1)
        first, second = _flatten(chunk[:a_end]), _flatten(chunk[a_end:])
      else:
        tokens = list(chunk[0])
        if len(tokens) < 2:
          continue
        cut = rng.randint(1, len(tokens) - 1)
        first, second = tokens[:cut], tokens[cut:]
      _truncate_pair(first, second, max_tokens, rng)
      label = int(rng.random() < swap_prob)
      if label:
        first, second = second, first
      yield Example(*template.frame(first, second), pair_label=label)


def sentence_examples(
    documents: Sequence[Document], template: Template, max_length: int, *, cross_documents: bool = True,
) -> Iterator[Example]:
  """Whole sentences packed up to max_length (FULL-SENTENCES; DOC-SENTENCES without crossing).

  A sentence longer than the room left starts a new example; one longer than a
  whole example is cut into pieces. When crossing, the separator token sits
  between the last sentence of a document and the first of the next.
  """
  room = max_length - template.num_specials(pair=False)
  if room < 1:
    raise ValueError(f"max_length={max_length} leaves no room for text")
  body: list[int] = []
  for document in documents:
    for index, sentence in enumerate(document):
      piece = list(sentence)
      separate = cross_documents and index == 0 and bool(body)
      if body and len(body) + separate + len(piece) > room:
        yield Example(*template.frame(body))
        body, separate = [], False  # an example never starts with the separator
      if separate:
        body.append(template.separator_id)
      while not body and len(piece) > room:
        yield Example(*template.frame(piece[:room]))
        piece = piece[room:]
      body.extend(piece)
    if body and not cross_documents:
      yield Example(*template.frame(body))
      body = []
  if body:
    yield Example(*template.frame(body))


# The shortest piece of a document that opens a packed row (document_rows).
MIN_PIECE = 8


def document_rows(documents: Sequence[Document], template: Template, max_length: int, *,
                  min_piece: int = MIN_PIECE) -> Iterator[Example]:
  """Rows filled to the brim with documents back to back (padding-free packing; segment_ids 1, 2, ...).

  Each document's tokens (its sentences in order) are one segment of a row, framed by the
  special tokens; where the row ends, the rest of the document continues as the first segment
  of the next row (ModernBERT's sequence packing: a row never waits for a sentence that would
  fit the next one). A row closes when less than a piece of min_piece tokens (plus its special
  tokens) is left, or at 255 segments, so at most min_piece + specials - 1 slots of a row are empty.
  """
  specials = template.num_specials(pair=False)
  if max_length - specials < max(min_piece, 1):
    raise ValueError(f"data.max_length={max_length} is too short: packed rows need >= {specials + min_piece} "
                     f"tokens ({specials} special and a {min_piece}-token piece of text)")
  row: Example | None = None
  for document in documents:
    tokens = [t for sentence in document for t in sentence]
    while tokens:
      if row is None:
        row = Example([], [], -1, [])
      room = max_length - len(row.ids) - specials
      piece, tokens = tokens[:room], tokens[room:]
      ids, type_ids = template.frame(piece)
      segment = row.segment_ids[-1] + 1 if row.segment_ids else 1
      row.ids.extend(ids)
      row.type_ids.extend(type_ids)
      row.segment_ids.extend([segment] * len(ids))
      if max_length - len(row.ids) - specials < min_piece or segment >= MAX_SEGMENTS:
        yield row
        row = None
  if row is not None:
    yield row
