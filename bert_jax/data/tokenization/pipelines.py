"""Rust `tokenizers` pipelines that reproduce the reference tokenizers.

Each builder mirrors what `transformers` (5.x, whose tokenizers are all built on
the Rust library) assembles for one family, so ids, offsets and truncation are
the library's own and not a re-implementation:

- `wordpiece`: BERT and MPNet (`BertTokenizer` / `MPNetTokenizer` from vocab.txt).
- `byte_level_bpe`: RoBERTa and DeBERTa-v1 (vocab.json + merges.txt).
- `sentencepiece_unigram`: ALBERT and DeBERTa-v2/v3 (a SentencePiece .model).
- `xlm_roberta_unigram`: XLM-RoBERTa (sentencepiece.bpe.model with fairseq's id offset).

Special tokens are registered the way the reference does it: as special added
tokens matched on the raw text (`normalized=False`) so "[MASK]" inside a
sentence stays one token, in the reference's order (bos, eos, unk, sep, pad,
cls, mask) so a token missing from the vocabulary gets the same appended id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import tokenizers
from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors

# The reference registers named special tokens in this order; it decides the
# ids of tokens appended to the vocabulary (DeBERTa-v3's [MASK] = len(spm)).
SPECIAL_ROLES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")


@dataclasses.dataclass(frozen=True)
class SpecialToken:
  """A named special token and how it matches in raw text."""

  content: str
  lstrip: bool = False  # eat the whitespace on its left (DeBERTa-v1 [MASK])
  rstrip: bool = False

  def added_token(self) -> AddedToken:
    return AddedToken(self.content, lstrip=self.lstrip, rstrip=self.rstrip, normalized=False, special=True)


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
  """Special tokens by role; None where the family has no such token."""

  pad: SpecialToken | None = None
  unk: SpecialToken | None = None
  cls: SpecialToken | None = None
  sep: SpecialToken | None = None
  mask: SpecialToken | None = None
  bos: SpecialToken | None = None
  eos: SpecialToken | None = None

  @staticmethod
  def of(**roles: str | SpecialToken | None) -> SpecialTokens:
    """SpecialTokens.of(cls="[CLS]", ...): plain strings become default-flag tokens."""
    return SpecialTokens(**{role: SpecialToken(v) if isinstance(v, str) else v for role, v in roles.items()})

  def content(self, role: str) -> str | None:
    token = getattr(self, role)
    return None if token is None else token.content

  def override(self, config: Mapping[str, object]) -> SpecialTokens:
    """Applies `<role>_token` entries of a tokenizer_config.json (str or dict)."""
    changes = {}
    for role in SPECIAL_ROLES:
      value = config.get(f"{role}_token")
      current = getattr(self, role)
      if isinstance(value, str):
        # A plain name keeps the family's flags (DeBERTa-v1's [MASK] always eats its left space).
        changes[role] = current if current is not None and current.content == value else SpecialToken(value)
      elif isinstance(value, Mapping) and "content" in value:
        changes[role] = SpecialToken(
            str(value["content"]), bool(value.get("lstrip", False)), bool(value.get("rstrip", False))
        )
    return dataclasses.replace(self, **changes)


BERT_SPECIALS = SpecialTokens.of(pad="[PAD]", unk="[UNK]", cls="[CLS]", sep="[SEP]", mask="[MASK]")
ROBERTA_SPECIALS = SpecialTokens.of(
    pad="<pad>", unk="<unk>", cls="<s>", sep="</s>", mask="<mask>", bos="<s>", eos="</s>"
)
# DeBERTa-v1's mask "behaves like a word": it eats the space before it.
DEBERTA_V1_SPECIALS = SpecialTokens.of(
    pad="[PAD]", unk="[UNK]", cls="[CLS]", sep="[SEP]", bos="[CLS]", eos="[SEP]",
    mask=SpecialToken("[MASK]", lstrip=True),
)
ALBERT_SPECIALS = SpecialTokens.of(
    pad="<pad>", unk="<unk>", cls="[CLS]", sep="[SEP]", mask="[MASK]", bos="[CLS]", eos="[SEP]"
)
DEBERTA_V2_SPECIALS = SpecialTokens.of(
    pad="[PAD]", unk="[UNK]", cls="[CLS]", sep="[SEP]", mask="[MASK]", bos="[CLS]", eos="[SEP]"
)
# MPNet: a BERT WordPiece vocabulary with RoBERTa-style specials.
MPNET_SPECIALS = SpecialTokens.of(pad="<pad>", unk="[UNK]", cls="<s>", sep="</s>", bos="<s>", eos="</s>", mask="<mask>")
XLM_ROBERTA_SPECIALS = SpecialTokens.of(
    pad="<pad>", unk="<unk>", cls="<s>", sep="</s>", mask="<mask>", bos="<s>", eos="</s>"
)


def add_special_tokens(backend: tokenizers.Tokenizer, specials: SpecialTokens, *, keep_existing: bool = False) -> None:
  """Registers the named special tokens, appending any the vocabulary lacks.

  keep_existing: leave tokens already registered as added tokens untouched
    (a tokenizer.json carries its own lstrip/rstrip flags).
  """
  existing = {str(t) for t in backend.get_added_tokens_decoder().values()} if keep_existing else set()
  seen = set()
  for role in SPECIAL_ROLES:
    token = getattr(specials, role)
    if token is None or token.content in seen or token.content in existing:
      continue
    seen.add(token.content)
    backend.add_special_tokens([token.added_token()])


def bert_template(backend: tokenizers.Tokenizer, specials: SpecialTokens, *,
                  double_sep: bool = False) -> processors.TemplateProcessing:
  """`[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]` with type ids 0 then 1.

  double_sep: pairs as `<s> A </s> </s> B </s>` with every type id 0 (MPNet, as RoBERTa).
  """
  cls, sep = specials.content("cls"), specials.content("sep")
  pair = f"{cls}:0 $A:0 {sep}:0 {sep}:0 $B:0 {sep}:0" if double_sep else f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1"
  return processors.TemplateProcessing(
      single=f"{cls}:0 $A:0 {sep}:0", pair=pair,
      special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))],
  )


def wordpiece(
    vocab: Mapping[str, int],
    specials: SpecialTokens = BERT_SPECIALS,
    *,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    tokenize_chinese_chars: bool = True,
    double_sep: bool = False,
) -> tokenizers.Tokenizer:
  """BERT's pipeline: clean text, (lowercase + strip accents), CJK split, WordPiece `##`.

  strip_accents: None follows `lowercase`, as in the original BERT.
  double_sep: MPNet's pair template (see `bert_template`).
  """
  backend = tokenizers.Tokenizer(tokenizers.models.WordPiece(dict(vocab), unk_token=specials.content("unk")))
  backend.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=tokenize_chinese_chars, strip_accents=strip_accents, lowercase=lowercase
  )
  backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  backend.decoder = decoders.WordPiece(prefix="##")
  add_special_tokens(backend, specials)
  backend.post_processor = bert_template(backend, specials, double_sep=double_sep)
  return backend


def byte_level_bpe(
    vocab: Mapping[str, int],
    merges: list[tuple[str, str]],
    specials: SpecialTokens = ROBERTA_SPECIALS,
    *,
    roberta_template: bool = True,
    add_prefix_space: bool = False,
    trim_offsets: bool = True,
) -> tokenizers.Tokenizer:
  """GPT-2 byte-level BPE (`Ġ` marks a preceding space).

  roberta_template: `<s> A </s></s> B </s>` with all type ids 0 (RoBERTa has
    one token type); otherwise DeBERTa-v1's `[CLS] A [SEP] B [SEP]`, types 0/1.
  """
  backend = tokenizers.Tokenizer(
      tokenizers.models.BPE(
          vocab=dict(vocab), merges=merges, dropout=None, continuing_subword_prefix="",
          end_of_word_suffix="", fuse_unk=False,
      )
  )
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
  backend.decoder = decoders.ByteLevel()
  add_special_tokens(backend, specials)
  if roberta_template:
    sep, cls = specials.content("sep"), specials.content("cls")
    backend.post_processor = processors.RobertaProcessing(
        (sep, backend.token_to_id(sep)), (cls, backend.token_to_id(cls)), trim_offsets, add_prefix_space
    )
  else:
    backend.post_processor = bert_template(backend, specials)
  return backend


@dataclasses.dataclass(frozen=True)
class SentencePieceModel:
  """What the pipeline needs from a SentencePiece `ModelProto`."""

  pieces: list[tuple[str, float]]  # (piece, score) in id order
  unk_id: int
  control: list[str]  # type CONTROL: special tokens ([CLS], <pad>, ...)
  user_defined: list[str]  # type USER_DEFINED: always emitted whole, not special
  precompiled_charsmap: bytes  # SentencePiece's own normalization table (may be empty)
  is_unigram: bool

  @classmethod
  def from_bytes(cls, data: bytes) -> SentencePieceModel:
    # Deferred: the protobuf module is only needed for SentencePiece folders.
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(data)
    control_type, user_defined_type = 3, 4
    return cls(
        pieces=[(p.piece, p.score) for p in proto.pieces],
        unk_id=proto.trainer_spec.unk_id,
        control=[p.piece for p in proto.pieces if p.type == control_type],
        user_defined=[p.piece for p in proto.pieces if p.type == user_defined_type],
        precompiled_charsmap=bytes(proto.normalizer_spec.precompiled_charsmap),
        is_unigram=proto.trainer_spec.model_type == 1,
    )


def albert_normalizer(spm: SentencePieceModel, *, lowercase: bool, keep_accents: bool) -> normalizers.Normalizer:
  """ALBERT: LaTeX quotes to `"`, NFKD + strip accents, lowercase, then SentencePiece's charsmap."""
  steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
  if not keep_accents:
    steps += [normalizers.NFKD(), normalizers.StripAccents()]
  if lowercase:
    steps.append(normalizers.Lowercase())
  if spm.precompiled_charsmap:
    steps.append(normalizers.Precompiled(spm.precompiled_charsmap))
  return normalizers.Sequence(steps)


def deberta_v2_normalizer(lowercase: bool) -> normalizers.Normalizer:
  """DeBERTa-v2/v3 as `transformers` 5 does it: whitespace runs to one space, NFC, strip right.

  The reference does not apply the model's precompiled charsmap, so neither do we.
  """
  steps = [normalizers.Lowercase()] if lowercase else []
  steps += [
      normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "),
      normalizers.NFC(),
      normalizers.Strip(left=False, right=True),
  ]
  return normalizers.Sequence(steps)


def sentencepiece_unigram(
    spm: SentencePieceModel,
    specials: SpecialTokens,
    *,
    albert: bool,
    lowercase: bool,
    keep_accents: bool = False,
    split_by_punct: bool = False,
    add_prefix_space: bool = True,
) -> tokenizers.Tokenizer:
  """A SentencePiece unigram model run by the Rust `Unigram` (ALBERT or DeBERTa-v2/v3 flavour).

  Words start with `▁`. Both templates are `[CLS] A [SEP] B [SEP]` with types 0/1.
  """
  if not spm.is_unigram:
    raise ValueError("only SentencePiece unigram models are supported (the reference reads pieces as unigram)")
  backend = tokenizers.Tokenizer(tokenizers.models.Unigram(spm.pieces, unk_id=spm.unk_id, byte_fallback=False))
  if albert:
    backend.normalizer = albert_normalizer(spm, lowercase=lowercase, keep_accents=keep_accents)
    # ALBERT splits on whitespace first, so a word's offsets exclude the space before it.
    steps = [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    prepend_scheme = "always"
  else:
    backend.normalizer = deberta_v2_normalizer(lowercase)
    prepend_scheme = "always" if add_prefix_space else "first"
    steps = [pre_tokenizers.Punctuation(behavior="isolated")] if split_by_punct else []
    steps.append(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme))
  backend.pre_tokenizer = pre_tokenizers.Sequence(steps)
  backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)
  # The reference turns control and user-defined pieces into added tokens
  # matched on raw text; only control pieces are special.
  backend.add_tokens(
      [AddedToken(p, normalized=False, special=True) for p in spm.control]
      + [AddedToken(p, normalized=False, special=False) for p in spm.user_defined]
  )
  add_special_tokens(backend, specials)
  backend.post_processor = bert_template(backend, specials)
  return backend


def xlm_roberta_unigram(spm: SentencePieceModel, specials: SpecialTokens, *,
                        add_prefix_space: bool = True) -> tokenizers.Tokenizer:
  """XLM-RoBERTa: fairseq's vocabulary over SentencePiece's pieces, as `transformers` converts it.

  Ids 0-3 are <s>, <pad>, </s>, <unk>; SentencePiece's own first three pieces (<unk>, <s>, </s>)
  give way to them and every other piece moves up by one; <mask> comes last. Only the model's
  charsmap normalizes; words split on whitespace and start with `▁`.
  """
  if not spm.is_unigram:
    raise ValueError("only SentencePiece unigram models are supported (the reference reads pieces as unigram)")
  fairseq = [(specials.content(role), 0.0) for role in ("bos", "pad", "eos", "unk")]
  vocab = fairseq + list(spm.pieces[3:]) + [(specials.content("mask"), 0.0)]
  backend = tokenizers.Tokenizer(tokenizers.models.Unigram(vocab, unk_id=3, byte_fallback=False))
  if spm.precompiled_charsmap:
    backend.normalizer = normalizers.Precompiled(spm.precompiled_charsmap)
  prepend_scheme = "always" if add_prefix_space else "never"
  backend.pre_tokenizer = pre_tokenizers.Sequence(
      [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)])
  backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)
  add_special_tokens(backend, specials)
  bos, eos = specials.content("bos"), specials.content("eos")
  backend.post_processor = processors.TemplateProcessing(
      single=f"{bos}:0 $A:0 {eos}:0", pair=f"{bos}:0 $A:0 {eos}:0 {eos}:0 $B:0 {eos}:0",
      special_tokens=[(bos, backend.token_to_id(bos)), (eos, backend.token_to_id(eos))])
  return backend
