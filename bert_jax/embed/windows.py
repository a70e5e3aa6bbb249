"""Texts to token windows: one window per text, cut to max_length, or several per long text when chunking.

A window keeps the tokenizer template's special tokens ([CLS] ... [SEP]);
chunked windows of one text share a quarter of their text tokens with their
neighbours (see the package docstring, --long_inputs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from bert_jax.embed.settings import EmbedError


@dataclasses.dataclass
class Windows:
  """Token sequences to run: one per text, or several per text when chunking.

  ids, type_ids: per window, int32 [window length] (special tokens included).
  owner: int [windows], the text each window belongs to.
  """

  ids: list[np.ndarray]
  type_ids: list[np.ndarray]
  owner: np.ndarray

  @property
  def lengths(self) -> np.ndarray:
    return np.fromiter((len(w) for w in self.ids), np.int64, len(self.ids))


def template_split(backend) -> tuple[int, int]:
  """(leading, trailing): special tokens the single-text template adds before and after the text."""
  sequence_ids = backend.encode("a").sequence_ids
  text = [i for i, s in enumerate(sequence_ids) if s is not None]
  if not text:
    raise EmbedError("the tokenizer encodes 'a' to no text token; cannot locate its special tokens")
  return text[0], len(sequence_ids) - 1 - text[-1]


def window_starts(body: int, room: int) -> list[int]:
  """Starts of windows of `room` text tokens over `body` tokens; neighbours overlap by room // 4."""
  stride = room - room // 4
  starts = [0]
  while starts[-1] + room < body:
    starts.append(starts[-1] + stride)
  return starts


def make_windows(encodings: Sequence, template: tuple[int, int], max_length: int, chunk: bool) -> Windows:
  """Cuts each encoding (with its special tokens) to max_length, or into windows when chunk.

  Truncation keeps the template's leading and trailing special tokens and drops
  text tokens from the end, as the reference tokenizers do for one text.
  """
  leading, trailing = template
  room = max_length - leading - trailing
  ids, type_ids, owner = [], [], []
  for index, encoding in enumerate(encodings):
    tokens = np.asarray(encoding.ids, np.int32)
    types = np.asarray(encoding.type_ids, np.int32)
    if len(tokens) <= max_length:
      ids.append(tokens)
      type_ids.append(types)
      owner.append(index)
      continue
    body = len(tokens) - leading - trailing
    for start in window_starts(body, room) if chunk else [0]:
      keep = np.r_[0:leading, leading + start:leading + min(start + room, body), len(tokens) - trailing:len(tokens)]
      ids.append(tokens[keep])
      type_ids.append(types[keep])
      owner.append(index)
  return Windows(ids, type_ids, np.asarray(owner, np.int64))


def tokenize(tokenizer, texts: Sequence[str], max_length: int, chunk: bool) -> Windows:
  """All texts in one call to the (parallel, Rust) backend, then truncated or windowed."""
  backend = tokenizer.backend
  # encode_batch_fast skips character offsets, which embedding does not need.
  encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
  return make_windows(encode(list(texts), add_special_tokens=True), template_split(backend), max_length, chunk)
