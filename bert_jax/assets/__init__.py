"""Files bert_jax ships inside the package, and the one place their paths are defined.

    data/          the public-domain pretraining corpus (austen.txt.gz, kjv.txt.gz) and the
                   movie-sentiment set (movie_sentiment.{train,dev,test}.tsv); provenance in data/README.md
    tokenizers/    WordPiece, byte-level BPE and SentencePiece tokenizers trained on that corpus
                   (wordpiece/, bpe/, spm/; how they were made in tokenizers/README.md)

Paths are found through this package, so they hold for a checkout and for an installed wheel
alike. (The checkout's top-level `data` is a link to `bert_jax/assets/data`.)
"""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.abspath(__file__))
TOKENIZER_KINDS = ("wordpiece", "bpe", "spm")
SENTIMENT_SPLITS = ("train", "dev", "test")


def data_file(name: str) -> str:
  """A file of the bundled data folder (e.g. "austen.txt.gz")."""
  return os.path.join(ROOT, "data", name)


def corpus_glob() -> str:
  """Glob of the bundled pretraining corpus: every `*.txt.gz` of the data folder."""
  return data_file("*.txt.gz")


def sentiment_file(split: str) -> str:
  """The bundled movie-sentiment TSV of a split: "train", "dev" or "test"."""
  if split not in SENTIMENT_SPLITS:
    raise ValueError(f"unknown movie-sentiment split {split!r}; expected one of {SENTIMENT_SPLITS}")
  return data_file(f"movie_sentiment.{split}.tsv")


def tokenizer_dir(kind: str) -> str:
  """Folder of a bundled tokenizer: "wordpiece", "bpe" or "spm" ("sentencepiece" is accepted for "spm")."""
  kind = {"sentencepiece": "spm"}.get(kind, kind)
  if kind not in TOKENIZER_KINDS:
    raise ValueError(f"unknown bundled tokenizer {kind!r}; expected one of {TOKENIZER_KINDS}")
  folder = os.path.join(ROOT, "tokenizers", kind)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"bundled tokenizer folder {folder} is missing (broken install?)")
  return folder
