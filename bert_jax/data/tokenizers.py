"""Tokenizers for the BERT family: load a model folder's tokenizer, train new vocabularies.

    tok = load_tokenizer("path/to/model")          # tokenizer.json, vocab.txt, vocab.json+merges.txt or *.model
    check_fits(tok, vocab_size=30522)              # ValueError if it emits ids the model lacks
    enc = tok.encode("A sentence.", "Its pair.", max_length=128)   # ids, type_ids, offsets, ...
    arrays = tok.batch(texts, max_length=128)      # int32 [batch, 128] input_ids / attention_mask / token_type_ids
    folder = bundled_tokenizer("wordpiece")        # or "bpe", "spm": trained on data/*.txt.gz

Command line (the bundled tokenizers were made this way; see bert_jax/assets/tokenizers/README.md):

    python -m bert_jax.data.tokenizers train --kind=wordpiece|bpe|sentencepiece \
        --files=data/austen.txt.gz,data/kjv.txt.gz --vocab_size=8192 --out=DIR
    python -m bert_jax.data.tokenizers encode --tokenizer=DIR "some text" ["its pair"]

Ids, offsets and truncation match the `transformers` tokenizers of each family;
tests/test_tokenizers.py pins that against goldens. Implementation in
`bert_jax.data.tokenization`.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Sequence

from bert_jax.assets import tokenizer_dir as bundled_tokenizer
from bert_jax.data.tokenization.loading import check_fits, load_tokenizer
from bert_jax.data.tokenization.tokenizer import Encoding, Tokenizer
from bert_jax.data.tokenization.training import read_lines, train_bpe, train_sentencepiece, train_wordpiece

__all__ = [
    "Encoding",
    "Tokenizer",
    "bundled_tokenizer",
    "check_fits",
    "load_tokenizer",
    "read_lines",
    "train_bpe",
    "train_sentencepiece",
    "train_wordpiece",
]


def _expand(files: str) -> list[str]:
  """Comma-separated paths or glob patterns, in the given order."""
  paths = []
  for pattern in filter(None, files.split(",")):
    matches = sorted(glob.glob(pattern))
    if not matches:
      raise FileNotFoundError(f"--files: nothing matches {pattern!r}")
    paths.extend(matches)
  return paths


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m bert_jax.data.tokenizers", description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  train = commands.add_parser("train", help="train a vocabulary from text files")
  train.add_argument("--kind", required=True, choices=("wordpiece", "bpe", "sentencepiece"))
  train.add_argument("--files", required=True, help="comma-separated text files or globs (.gz allowed)")
  train.add_argument("--vocab_size", required=True, type=int)
  train.add_argument("--out", required=True, help="output folder")
  train.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=None,
                     help="lowercase text (default: yes for wordpiece, no for sentencepiece)")
  encode = commands.add_parser("encode", help="print the tokens of a text")
  encode.add_argument("--tokenizer", required=True, help="tokenizer or model folder")
  encode.add_argument("--max_length", type=int, default=None)
  encode.add_argument("text")
  encode.add_argument("pair", nargs="?")
  return parser


def main(argv: Sequence[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  if args.command == "train":
    files = _expand(args.files)
    if args.kind == "wordpiece":
      out = train_wordpiece(files, args.vocab_size, args.out, lowercase=args.lowercase is not False)
    elif args.kind == "bpe":
      if args.lowercase:
        raise SystemExit("--lowercase is not supported for byte-level BPE (RoBERTa is cased)")
      out = train_bpe(files, args.vocab_size, args.out)
    else:
      out = train_sentencepiece(files, args.vocab_size, args.out, lowercase=bool(args.lowercase))
    tokenizer = load_tokenizer(out)
    print(f"wrote {out}: {tokenizer.vocab_size} tokens")
  else:
    tokenizer = load_tokenizer(args.tokenizer)
    encoding = tokenizer.encode(args.text, args.pair, max_length=args.max_length)
    for token, token_id, type_id, offsets in zip(encoding.tokens, encoding.ids, encoding.type_ids, encoding.offsets):
      print(f"{token_id:>7} {type_id} {offsets!s:>12} {token}")


if __name__ == "__main__":
  main(sys.argv[1:])
