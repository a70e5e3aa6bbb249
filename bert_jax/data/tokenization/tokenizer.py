"""`Tokenizer`: text to ids with the reference's truncation, plus what the data pipeline needs.

A thin, typed layer over a Rust `tokenizers.Tokenizer` (the "backend"). The
backend does normalization, splitting, the model, special tokens and
truncation, so results are those of the reference `transformers` tokenizers;
this class adds input checks, a numpy batch helper and `is_word_start` for
whole-word masking.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Literal

import numpy as np
import tokenizers

from bert_jax.data.tokenization.pipelines import SpecialTokens

Truncation = Literal["longest_first", "only_first", "only_second"]
TRUNCATIONS = ("longest_first", "only_first", "only_second")
Kind = Literal["wordpiece", "bpe", "sentencepiece"]

# Backend copies kept for distinct (max_length, truncation) settings.
_MAX_TRUNCATING_COPIES = 16

# How each family marks word boundaries inside its vocabulary.
_CONTINUATION_PREFIX = {"wordpiece": "##"}  # "##ing" continues a word
_WORD_START_PREFIX = {"bpe": "Ġ", "sentencepiece": "▁"}  # "Ġthe" / "▁the" starts one


@dataclasses.dataclass(frozen=True)
class Encoding:
  """One encoded text (or text pair); every field has one entry per token: [length].

  offsets are character offsets (start, end) into the text the token came from
  (the first text, or the pair text where `sequence_ids` is 1); (0, 0) for
  special tokens. word_ids count words within each text; None for specials.
  """

  ids: list[int]
  type_ids: list[int]
  attention_mask: list[int]
  special_tokens_mask: list[int]  # 1 for tokens added by the template ([CLS], [SEP], ...)
  offsets: list[tuple[int, int]]
  word_ids: list[int | None]
  sequence_ids: list[int | None]  # 0 first text, 1 pair text, None specials
  tokens: list[str]  # as the backend reports them: an unknown SentencePiece piece shows its text

  def __len__(self) -> int:
    return len(self.ids)

  @classmethod
  def from_backend(cls, encoding: tokenizers.Encoding) -> Encoding:
    return cls(
        ids=list(encoding.ids),
        type_ids=list(encoding.type_ids),
        attention_mask=list(encoding.attention_mask),
        special_tokens_mask=list(encoding.special_tokens_mask),
        offsets=[tuple(o) for o in encoding.offsets],
        word_ids=list(encoding.word_ids),
        sequence_ids=list(encoding.sequence_ids),
        tokens=list(encoding.tokens),
    )


def _check_text(value: object, what: str) -> None:
  if not isinstance(value, str):
    raise TypeError(f"{what} must be str, got {type(value).__name__}: {value!r:.80}")


class Tokenizer:
  """Encodes text for one model family; build it with `load_tokenizer(folder)`.

  Attributes:
    kind: "wordpiece" (BERT), "bpe" (byte-level: RoBERTa, DeBERTa-v1) or
      "sentencepiece" (ALBERT, DeBERTa-v2/v3); decides `is_word_start`.
    source: the folder it was loaded from, for error messages.
  """

  def __init__(self, backend: tokenizers.Tokenizer, *, kind: Kind, specials: SpecialTokens, source: str = "<memory>"):
    if kind not in ("wordpiece", "bpe", "sentencepiece"):
      raise ValueError(f"unknown tokenizer kind {kind!r}")
    # Truncation and padding are per call here; a tokenizer.json may carry its own.
    backend.no_truncation()
    backend.no_padding()
    self._backend = backend
    self.kind = kind
    self.specials = specials
    self.source = source
    self._init_caches()

  def _init_caches(self) -> None:
    # One backend copy per truncation setting: mutating a shared backend per
    # call would race between threads (grain workers) and is not cheaper.
    self._truncating: dict[tuple[int, str], tokenizers.Tokenizer] = {}
    self._lock = threading.Lock()
    self._word_tables: tuple[np.ndarray, np.ndarray] | None = None

  def __getstate__(self) -> dict:
    state = self.__dict__.copy()
    for key in ("_truncating", "_lock", "_word_tables"):
      del state[key]
    return state

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._init_caches()

  def __repr__(self) -> str:
    return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, source={self.source!r})"

  # -- vocabulary -------------------------------------------------------------

  @property
  def backend(self) -> tokenizers.Tokenizer:
    """The underlying Rust tokenizer (no truncation or padding configured)."""
    return self._backend

  @property
  def vocab_size(self) -> int:
    """Number of tokens, added special tokens included."""
    return self._backend.get_vocab_size(with_added_tokens=True)

  @property
  def max_id(self) -> int:
    """The largest id this tokenizer can emit; a model needs vocab_size > max_id."""
    return max(self._backend.get_vocab(with_added_tokens=True).values())

  def token_to_id(self, token: str) -> int | None:
    return self._backend.token_to_id(token)

  def id_to_token(self, token_id: int) -> str | None:
    return self._backend.id_to_token(int(token_id))

  def _special_id(self, role: str) -> int | None:
    content = self.specials.content(role)
    return None if content is None else self._backend.token_to_id(content)

  pad_id = property(lambda self: self._special_id("pad"), doc="Id of the padding token.")
  unk_id = property(lambda self: self._special_id("unk"), doc="Id of the unknown token.")
  cls_id = property(lambda self: self._special_id("cls"), doc="Id that starts a sequence ([CLS] / <s>).")
  sep_id = property(lambda self: self._special_id("sep"), doc="Id that ends a segment ([SEP] / </s>).")
  mask_id = property(lambda self: self._special_id("mask"), doc="Id of the MLM mask token.")
  bos_id = property(lambda self: self._special_id("bos"), doc="Beginning-of-sequence id (None for BERT).")
  eos_id = property(lambda self: self._special_id("eos"), doc="End-of-sequence id (None for BERT).")

  @property
  def special_ids(self) -> list[int]:
    """Ids of all special tokens (named ones and any the vocabulary marks special)."""
    return sorted(i for i, t in self._backend.get_added_tokens_decoder().items() if t.special)

  def num_special_tokens(self, pair: bool = False) -> int:
    """How many tokens the template adds: 2 for one text, 3 or 4 for a pair."""
    processor = self._backend.post_processor
    return 0 if processor is None else processor.num_special_tokens_to_add(pair)

  # -- encoding ---------------------------------------------------------------

  def _backend_for(self, max_length: int | None, truncation: Truncation | None) -> tokenizers.Tokenizer:
    if max_length is None or truncation is None:
      return self._backend
    if truncation not in TRUNCATIONS:
      raise ValueError(f"truncation must be one of {TRUNCATIONS} or None, got {truncation!r}")
    key = (max_length, truncation)
    with self._lock:
      if key not in self._truncating:
        if len(self._truncating) >= _MAX_TRUNCATING_COPIES:  # many lengths: bound the memory
          self._truncating.clear()
        backend = tokenizers.Tokenizer.from_str(self._backend.to_str())
        backend.enable_truncation(max_length, strategy=truncation)
        self._truncating[key] = backend
      return self._truncating[key]

  def _check_max_length(self, max_length: int | None, truncation: Truncation | None, pair: bool, add_special: bool):
    if max_length is None or truncation is None:
      return
    if not isinstance(max_length, int) or isinstance(max_length, bool):
      raise TypeError(f"max_length must be int, got {type(max_length).__name__}")
    needed = self.num_special_tokens(pair) if add_special else 0
    # The Rust library silently skips truncation here; a too-long output would be worse.
    if max_length < max(needed, 1):
      raise ValueError(
          f"max_length={max_length} leaves no room for text: the {'pair' if pair else 'single'} template "
          f"adds {needed} special tokens"
      )

  def encode(
      self,
      text: str,
      pair: str | None = None,
      *,
      max_length: int | None = None,
      truncation: Truncation | None = "longest_first",
      add_special_tokens: bool = True,
  ) -> Encoding:
    """Encodes one text or a text pair; every Encoding field is [length].

    max_length counts special tokens. truncation (used only with max_length):
    "longest_first" trims the longer text one token at a time, "only_first"
    or "only_second" trim that text and raise ValueError if it is too short
    to reach max_length. An empty text gives only the special tokens.
    """
    _check_text(text, "text")
    if pair is not None:
      _check_text(pair, "pair")
    self._check_max_length(max_length, truncation, pair is not None, add_special_tokens)
    backend = self._backend_for(max_length, truncation)
    try:
      encoding = backend.encode(text, pair, add_special_tokens=add_special_tokens)
    except Exception as e:  # the Rust library raises a bare Exception
      raise ValueError(f"cannot truncate to max_length={max_length} with {truncation!r}: {e}") from e
    return Encoding.from_backend(encoding)

  def encode_batch(
      self,
      texts: Sequence[str],
      pairs: Sequence[str] | None = None,
      *,
      max_length: int | None = None,
      truncation: Truncation | None = "longest_first",
      add_special_tokens: bool = True,
  ) -> list[Encoding]:
    """`encode` over [batch] texts (and [batch] pairs), in parallel in Rust."""
    if isinstance(texts, str) or (pairs is not None and isinstance(pairs, str)):
      raise TypeError("encode_batch takes a sequence of texts, not a str; use encode for one text")
    texts = list(texts)
    for i, text in enumerate(texts):
      _check_text(text, f"texts[{i}]")
    if pairs is not None:
      pairs = list(pairs)
      if len(pairs) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(pairs)} pairs")
      for i, text in enumerate(pairs):
        _check_text(text, f"pairs[{i}]")
    self._check_max_length(max_length, truncation, pairs is not None, add_special_tokens)
    backend = self._backend_for(max_length, truncation)
    inputs = texts if pairs is None else list(zip(texts, pairs))
    try:
      encodings = backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
    except Exception as e:
      raise ValueError(f"cannot truncate to max_length={max_length} with {truncation!r}: {e}") from e
    return [Encoding.from_backend(e) for e in encodings]

  def batch(
      self,
      texts: Sequence[str],
      pairs: Sequence[str] | None = None,
      *,
      max_length: int,
      pad_to: int | Literal["longest"] | None = None,
      truncation: Truncation = "longest_first",
  ) -> dict[str, np.ndarray]:
    """Encodes, truncates and pads a batch into model inputs.

    pad_to: None pads to max_length (static shapes for jit), "longest" to the
      longest sequence in the batch, an int to that length (>= max_length).
    Returns: input_ids, attention_mask, token_type_ids, each int32 [batch, length],
      padded with pad_id / 0 / 0.
    """
    if self.pad_id is None:
      raise ValueError(f"tokenizer from {self.source} has no pad token")
    encodings = self.encode_batch(texts, pairs, max_length=max_length, truncation=truncation)
    longest = max((len(e) for e in encodings), default=0)
    if pad_to is None:
      length = max_length
    elif pad_to == "longest":
      length = longest
    elif isinstance(pad_to, int) and pad_to >= max_length:
      length = pad_to
    else:
      raise ValueError(f"pad_to must be None, 'longest' or an int >= max_length={max_length}, got {pad_to!r}")
    arrays = {
        "input_ids": np.full((len(encodings), length), self.pad_id, np.int32),
        "attention_mask": np.zeros((len(encodings), length), np.int32),
        "token_type_ids": np.zeros((len(encodings), length), np.int32),
    }
    for row, e in enumerate(encodings):
      arrays["input_ids"][row, : len(e)] = e.ids
      arrays["attention_mask"][row, : len(e)] = e.attention_mask
      arrays["token_type_ids"][row, : len(e)] = e.type_ids
    return arrays

  def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = True) -> str:
    """Ids [length] back to text (WordPiece joins `##`, byte-level and `▁` restore spaces)."""
    return self._backend.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=skip_special_tokens)

  # -- word boundaries ----------------------------------------------------------

  def _word_tables_once(self) -> tuple[np.ndarray, np.ndarray]:
    """Two bool [max_id + 1] tables: entry begins a word on its own; entry is an added token."""
    if self._word_tables is None:
      starts = np.zeros(self.max_id + 1, dtype=bool)
      vocab = self._backend.get_vocab(with_added_tokens=True)
      if self.kind in _CONTINUATION_PREFIX:
        prefix = _CONTINUATION_PREFIX[self.kind]
        for token, i in vocab.items():
          starts[i] = not token.startswith(prefix)
      else:
        prefix = _WORD_START_PREFIX[self.kind]
        for token, i in vocab.items():
          starts[i] = token.startswith(prefix)
      added = np.zeros_like(starts)
      added[list(self._backend.get_added_tokens_decoder())] = True
      # Added tokens ([CLS], [MASK], user-defined pieces) are whole words.
      self._word_tables = (starts | added, added)
    return self._word_tables

  def is_word_start(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Whether each token starts a new word, for whole-word masking.

    ids: [..., length] token ids. Returns bool [..., length]. A token starts a
    word if its vocabulary entry says so (WordPiece: no `##`; SentencePiece:
    `▁`; byte-level BPE: `Ġ`), if it is a special/added token, or if it follows
    one: RoBERTa's first word has no `Ġ` but is still a word of its own.
    """
    ids = np.asarray(ids)
    if ids.ndim == 0 or not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f"ids must be an integer array [..., length], got shape {ids.shape} dtype {ids.dtype}")
    starts_table, added_table = self._word_tables_once()
    if ids.size and (ids.min() < 0 or ids.max() >= len(starts_table)):
      raise ValueError(f"ids must lie in [0, {len(starts_table)}), got range [{ids.min()}, {ids.max()}]")
    starts = starts_table[ids]
    starts[..., 1:] |= added_table[ids[..., :-1]]
    if ids.shape[-1]:
      starts[..., 0] = True
    return starts
