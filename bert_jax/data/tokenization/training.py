"""Train new vocabularies (WordPiece, byte-level BPE, SentencePiece) from text files.

Input files hold one paragraph per line with blank lines between documents
(the format of data/*.txt.gz); `.gz` files are read compressed. Each trainer
writes a folder that `load_tokenizer` reads back, with the special-token
layout of the family it imitates:

  wordpiece      [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4          (vocab.txt)
  bpe            <s>=0 <pad>=1 </s>=2 <unk>=3 ... <mask>=vocab_size-1  (RoBERTa)
  sentencepiece  [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3 [MASK]=4          (DeBERTa-v3 order,
                 with [MASK] inside the model so every id is < vocab_size)
"""

from __future__ import annotations

import collections
import io
import itertools
import json
import os
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import sentencepiece
import tokenizers
from tokenizers import decoders, normalizers, pre_tokenizers, trainers

from bert_jax.data.tokenization import pipelines
from bert_jax.runtime import fileio

PathLike = str | os.PathLike

WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BPE_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # <mask> goes last, as in RoBERTa


def read_lines(files: PathLike | Sequence[PathLike]) -> Iterator[str]:
  """Yields the non-blank lines (paragraphs) of text files, `.gz` decompressed, streaming.

  Lines are decoded by fileio.decode_lines: they end at "\\n" (a trailing "\\r"
  dropped), and a byte that is not UTF-8 raises ValueError naming FILE:LINE.
  """
  paths = [files] if isinstance(files, (str, os.PathLike)) else list(files)
  if not paths:
    raise ValueError("no training files given")
  for path in map(Path, paths):
    if not path.is_file():
      raise FileNotFoundError(f"training file {path} does not exist")
  for path in map(os.fspath, paths):
    with fileio.open_binary(path) as stream:
      for _, line in fileio.decode_lines(stream, path):
        if line.strip():
          yield line


def _write_json(path: Path, value: object) -> None:
  path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _tokenizer_config(tokenizer_class: str, specials: pipelines.SpecialTokens, **settings) -> dict:
  named = {f"{role}_token": specials.content(role) for role in pipelines.SPECIAL_ROLES if specials.content(role)}
  return {"tokenizer_class": tokenizer_class, **settings, **named}


def _by_usage(backend: tokenizers.Tokenizer, files, first: Sequence[str]) -> list[str]:
  """The trained vocabulary ordered by how often each token occurs in the corpus.

  The trainer breaks ties between equally frequent merges in hash order, so
  its ids change from run to run; WordPiece does not depend on id order, and
  sorting by (-usage, token) makes the written vocab.txt reproducible.
  """
  counts = collections.Counter()
  batch = []
  for line in itertools.chain(read_lines(files), [None]):
    if line is not None:
      batch.append(line)
    if len(batch) == 4096 or (line is None and batch):
      for encoding in backend.encode_batch(batch, add_special_tokens=False):
        counts.update(encoding.ids)
      batch = []
  vocab = backend.get_vocab()
  rest = sorted((t for t in vocab if t not in first), key=lambda t: (-counts[vocab[t]], t))
  return list(first) + rest


def train_wordpiece(
    files: PathLike | Sequence[PathLike], vocab_size: int, out_dir: PathLike, lowercase: bool = True,
    *, min_frequency: int = 2, limit_alphabet: int = 1000,
) -> str:
  """Trains BERT's WordPiece; writes vocab.txt, tokenizer.json, tokenizer_config.json. Returns out_dir."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  backend = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
  backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None)
  backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(WORDPIECE_SPECIALS),
      limit_alphabet=limit_alphabet, continuing_subword_prefix="##", show_progress=False,
  )
  backend.train_from_iterator(read_lines(files), trainer)
  tokens = _by_usage(backend, files, first=WORDPIECE_SPECIALS)
  vocab = {token: i for i, token in enumerate(tokens)}
  (out / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
  pipelines.wordpiece(vocab, lowercase=lowercase).save(str(out / "tokenizer.json"))
  _write_json(
      out / "tokenizer_config.json",
      _tokenizer_config("BertTokenizer", pipelines.BERT_SPECIALS, do_lower_case=lowercase,
                        tokenize_chinese_chars=True, strip_accents=None),
  )
  return str(out)


def train_bpe(
    files: PathLike | Sequence[PathLike], vocab_size: int, out_dir: PathLike, *, min_frequency: int = 2
) -> str:
  """Trains RoBERTa's byte-level BPE; writes vocab.json, merges.txt, tokenizer_config.json. Returns out_dir."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  backend = tokenizers.Tokenizer(tokenizers.models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size - 1,  # leaves the last id for <mask>
      min_frequency=min_frequency, special_tokens=list(BPE_SPECIALS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
  )
  backend.train_from_iterator(read_lines(files), trainer)
  backend.model.save(str(out))  # vocab.json + merges.txt ("#version" header, as RoBERTa's)
  vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
  vocab["<mask>"] = len(vocab)
  (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
  _write_json(
      out / "tokenizer_config.json",
      _tokenizer_config("RobertaTokenizer", pipelines.ROBERTA_SPECIALS, add_prefix_space=False, trim_offsets=True),
  )
  return str(out)


def train_sentencepiece(
    files: PathLike | Sequence[PathLike], vocab_size: int, out_dir: PathLike, model_type: str = "unigram",
    *, lowercase: bool = False, character_coverage: float = 0.9995,
) -> str:
  """Trains a SentencePiece unigram model with DeBERTa-v3's layout; writes spm.model and
  tokenizer_config.json (DebertaV2Tokenizer, cased unless `lowercase`). Returns out_dir.

  The model is trained without SentencePiece's own NFKC table ("identity"
  rule) on NFC text, because the DeBERTa-v2 pipeline normalizes with NFC and
  never applies that table: training sees text as encoding will.
  """
  if model_type != "unigram":
    raise ValueError(f"model_type={model_type!r}: only 'unigram' is supported (the loaders read unigram pieces)")
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)

  def sentences() -> Iterable[str]:
    for line in read_lines(files):
      line = unicodedata.normalize("NFC", line)
      yield line.lower() if lowercase else line

  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences()), model_writer=model, vocab_size=vocab_size, model_type="unigram",
      pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]",
      unk_id=3, unk_piece="[UNK]", control_symbols=["[MASK]"],
      normalization_rule_name="identity", character_coverage=character_coverage,
      max_sentence_length=1 << 16, num_threads=os.cpu_count() or 1, minloglevel=2,
  )
  (out / "spm.model").write_bytes(model.getvalue())
  _write_json(
      out / "tokenizer_config.json",
      _tokenizer_config("DebertaV2Tokenizer", pipelines.DEBERTA_V2_SPECIALS, do_lower_case=lowercase,
                        split_by_punct=False),
  )
  return str(out)
