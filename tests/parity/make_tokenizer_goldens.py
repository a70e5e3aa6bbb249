#!/usr/bin/env python
"""Writes the tokenizer goldens under tests/testdata/tokenizers/.

    pip install -e ".[parity]" && python tests/parity/make_tokenizer_goldens.py [--retrain]

For every entry of FOLDERS below this trains a small vocabulary on the bundled
corpus with the raw `tokenizers` / `sentencepiece` libraries (not with
bert_jax, so the goldens do not depend on the code they check), writes it with
the settings files the reference reads (tokenizer_config.json / config.json; a
tokenizer.json only as transformers itself writes it, or for ModernBERT's layout), loads it with the `transformers` class of that family
and writes golden.json: every case of `cases()` with the reference's ids,
type_ids, offsets, special_tokens_mask, word_ids and decoded text, or the
error it raises. tests/test_tokenizers.py loads bert_jax's tokenizer from the
same folder and must reproduce golden.json exactly.

Vocabularies are trained only when missing (or with --retrain), so re-running
after a library upgrade refreshes the expectations against the same files.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sentencepiece  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import normalizers, pre_tokenizers, trainers  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "tests" / "testdata" / "tokenizers"
DATA = REPO / "bert_jax" / "assets" / "data"

# Text the corpus lacks, so the small vocabularies hold some accents, CJK and emoji.
EXTRA_TRAINING_TEXT = [
    "Café crème, naïve façade, résumé, déjà vu, São Paulo, Zürich, Straße, Ærø, Øresund, İstanbul.",
    "中文字符 日本語のテキスト 한국어 문장 Ελληνικά русский язык العربية עברית हिन्दी",
    "Emoji 😀 😂 👍 🏽 ❤️ and symbols © ® ™ € £ ¥ § ¶ † ‡ • … – —",
] * 50


def corpus_lines(per_file: int = 4000) -> list[str]:
  """The first paragraphs of each bundled corpus plus EXTRA_TRAINING_TEXT."""
  lines = []
  for name in ("austen.txt.gz", "kjv.txt.gz"):
    with gzip.open(DATA / name, "rt", encoding="utf-8") as f:
      lines += [line.rstrip("\n") for line in f if line.strip()][:per_file]
  return lines + EXTRA_TRAINING_TEXT


# -- vocabularies -------------------------------------------------------------


def train_bert_cased(folder: Path, lines: list[str]) -> None:
  backend = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
  backend.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
  backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  backend.train_from_iterator(lines, trainers.WordPieceTrainer(
      vocab_size=2000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
  vocab = backend.get_vocab()
  (folder / "vocab.txt").write_text("".join(t + "\n" for t in sorted(vocab, key=vocab.get)), encoding="utf-8")
  write_json(folder / "tokenizer_config.json", {"tokenizer_class": "BertTokenizer", "do_lower_case": False})


def _train_byte_bpe(folder: Path, lines: list[str], specials: list[str], vocab_size: int) -> None:
  backend = tokenizers.Tokenizer(tokenizers.models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.train_from_iterator(lines, trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=specials, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  backend.model.save(str(folder))


def train_roberta(folder: Path, lines: list[str]) -> None:
  # No settings files at all: vocab.json + merges.txt alone mean RoBERTa; <mask> is appended.
  _train_byte_bpe(folder, lines, ["<s>", "<pad>", "</s>", "<unk>"], 1000)


def train_deberta_v1(folder: Path, lines: list[str]) -> None:
  _train_byte_bpe(folder, lines, ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], 1000)
  write_json(folder / "config.json", {"model_type": "deberta"})


def _train_spm(folder: Path, filename: str, lines: list[str], **options) -> None:
  with tempfile.TemporaryDirectory() as tmp:
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=f"{tmp}/m", vocab_size=1000, model_type="unigram",
        character_coverage=1.0, num_threads=1, minloglevel=2, **options)
    shutil.copy(f"{tmp}/m.model", folder / filename)


def train_albert(folder: Path, lines: list[str]) -> None:
  # ALBERT's layout; "<br>" is a user-defined piece (matched whole, not special).
  _train_spm(folder, "spiece.model", lines, pad_id=0, pad_piece="<pad>", unk_id=1, unk_piece="<unk>",
             bos_id=-1, eos_id=-1, control_symbols=["[CLS]", "[SEP]", "[MASK]"], user_defined_symbols=["<br>"])
  write_json(folder / "config.json", {"model_type": "albert"})


def train_deberta_v3(folder: Path, lines: list[str]) -> None:
  # DeBERTa-v3's layout: [MASK] is not in spm.model, the tokenizer appends it.
  _train_spm(folder, "spm.model", lines, pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]",
             eos_id=2, eos_piece="[SEP]", unk_id=3, unk_piece="[UNK]")
  write_json(folder / "tokenizer_config.json", {"tokenizer_class": "DebertaV2Tokenizer"})


def train_xlm_roberta(folder: Path, lines: list[str]) -> None:
  # XLM-R's sentencepiece.bpe.model layout: <unk>=0, <s>=1, </s>=2 (fairseq's ids are added on top).
  _train_spm(folder, "sentencepiece.bpe.model", lines, unk_id=0, unk_piece="<unk>", bos_id=1, bos_piece="<s>",
             eos_id=2, eos_piece="</s>", pad_id=-1)
  write_json(folder / "tokenizer_config.json", {"tokenizer_class": "XLMRobertaTokenizer"})


def train_mpnet(folder: Path, lines: list[str]) -> None:
  # MPNet's vocab.txt: RoBERTa-style specials first, then a BERT WordPiece vocabulary with [UNK].
  backend = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
  backend.normalizer = normalizers.BertNormalizer(lowercase=True)
  backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  backend.train_from_iterator(lines, trainers.WordPieceTrainer(
      vocab_size=2000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>"], show_progress=False))
  vocab = backend.get_vocab()
  (folder / "vocab.txt").write_text("".join(t + "\n" for t in sorted(vocab, key=vocab.get)), encoding="utf-8")
  write_json(folder / "tokenizer_config.json", {"tokenizer_class": "MPNetTokenizer", "do_lower_case": True})


def train_modernbert(folder: Path, lines: list[str]) -> None:
  # A tokenizer.json laid out like ModernBERT's: byte-level BPE, [CLS] A [SEP] B [SEP] (types 0 / 1),
  # a [MASK] that eats the space before it.
  specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
  backend = tokenizers.Tokenizer(tokenizers.models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
  backend.decoder = tokenizers.decoders.ByteLevel()
  backend.train_from_iterator(lines, trainers.BpeTrainer(
      vocab_size=1000, special_tokens=[], show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  backend.add_special_tokens([tokenizers.AddedToken(t, lstrip=t == "[MASK]", normalized=False, special=True)
                              for t in specials])
  cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
  backend.post_processor = tokenizers.processors.TemplateProcessing(
      single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
      special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
  backend.save(str(folder / "tokenizer.json"))
  write_json(folder / "tokenizer_config.json", {
      "tokenizer_class": "PreTrainedTokenizerFast", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
      "unk_token": "[UNK]", "mask_token": "[MASK]", "model_max_length": 8192})
  write_json(folder / "config.json", {"model_type": "modernbert"})


def _as_saved_by_transformers(folder: Path, class_name: str, slow_files: list[str]) -> None:
  """The folder as the Hub ships it: transformers' own tokenizer.json (converted from the slow files,
  which are then removed so the tokenizer.json is what gets read) and its tokenizer_config.json."""
  tokenizer = getattr(transformers, class_name).from_pretrained(str(folder))
  tokenizer.save_pretrained(str(folder))
  for name in slow_files:
    (folder / name).unlink()


def train_xlm_roberta_json(folder: Path, lines: list[str]) -> None:
  # multilingual-e5 / BGE-M3 style: the XLM-R vocabulary as a Unigram tokenizer.json.
  train_xlm_roberta(folder, lines)
  _as_saved_by_transformers(folder, "XLMRobertaTokenizer", ["sentencepiece.bpe.model"])


def train_mpnet_json(folder: Path, lines: list[str]) -> None:
  # all-mpnet-base-v2 style: MPNet's WordPiece as a tokenizer.json.
  train_mpnet(folder, lines)
  _as_saved_by_transformers(folder, "MPNetTokenizer", ["vocab.txt"])
  write_json(folder / "config.json", {"model_type": "mpnet"})


# name -> (train function, transformers class, the vocabulary files it writes)
FOLDERS = {
    "bert_cased": (train_bert_cased, "BertTokenizer", ["vocab.txt"]),
    "roberta_bpe": (train_roberta, "RobertaTokenizer", ["vocab.json", "merges.txt"]),
    "deberta_v1_bpe": (train_deberta_v1, "DebertaTokenizer", ["vocab.json", "merges.txt"]),
    "albert_spm": (train_albert, "AlbertTokenizer", ["spiece.model"]),
    "deberta_v3_spm": (train_deberta_v3, "DebertaV2Tokenizer", ["spm.model"]),
    "xlm_roberta_spm": (train_xlm_roberta, "XLMRobertaTokenizer", ["sentencepiece.bpe.model"]),
    "mpnet_wordpiece": (train_mpnet, "MPNetTokenizer", ["vocab.txt"]),
    "modernbert_json": (train_modernbert, "PreTrainedTokenizerFast", ["tokenizer.json"]),
    "xlm_roberta_json": (train_xlm_roberta_json, "XLMRobertaTokenizer", ["tokenizer.json"]),
    "mpnet_json": (train_mpnet_json, "MPNetTokenizer", ["tokenizer.json"]),
}


# -- cases --------------------------------------------------------------------

TEXTS = [
    "Hello world",
    "hello, world!",
    " leading space",
    "trailing space ",
    "  several   inner    spaces  ",
    "tabs\tand\nnew\r\nlines\n",
    "",
    "   ",
    "Café crème, naïve résumé — déjà vu.",
    "e\u0301 combining accent vs é precomposed",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ and ﬁ ligature and ½",
    "Straße İstanbul ǅemal ΣΊΣΥΦΟΣ",
    "中文字符 and 日本語のテキスト and 한국어",
    "Emoji 😀👍🏽 ❤️ in text",
    "control\x00chars\x07and\x1bescape\u200bzero\u200cwidth\ufeffbom",
    "non\u00a0breaking\u2003em space",
    "[CLS] [SEP] [MASK] [PAD] [UNK]",
    "The [MASK] sat on the x[MASK]y mat [MASK].",
    "[mask] lower and [ MASK ] spaced",
    "<s> </s> <mask> <pad> <unk>",
    "A <mask> here and x<mask>y there <mask>",
    " <mask>",
    "line <br> break<br>here",
    "``LaTeX quotes'' and ''Conan'' and \"plain\"",
    "9, 10,000 and 3.14159 and 1st 2nd -5",
    "Mr. Darcy's--well!--it's e-mail@example.com at https://example.org/a?b=c#d",
    "antidisestablishmentarianism " + "x" * 120,
    "UPPER lower MiXeD cAsE",
    "...!!!???;;;:::",
]

LONG = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
    "want of a wife. However little known the feelings or views of such a man may be on his first entering "
    "a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is "
    "considered the rightful property of some one or other of their daughters. In the beginning God created "
    "the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of "
    "the deep. Café, naïve, 中文, 😀, [MASK], <mask>."
)


def movie_sentences(n: int = 30) -> list[str]:
  with (DATA / "movie_sentiment.dev.tsv").open(encoding="utf-8", newline="") as f:
    rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  return [row["sentence"] for row in rows[:n]]


def cases() -> list[dict]:
  """Single texts, pairs and every truncation strategy, long inputs included."""
  out = []

  def add(text, pair=None, max_length=None, truncation=None, add_special_tokens=True):
    out.append(dict(text=text, pair=pair, max_length=max_length, truncation=truncation,
                    add_special_tokens=add_special_tokens))

  for text in TEXTS + movie_sentences() + [LONG]:
    add(text)
  for text in TEXTS[:6] + [LONG]:
    add(text, add_special_tokens=False)
  for max_length in (2, 3, 8, 16, 64):
    add(LONG, max_length=max_length, truncation="longest_first")
    add(LONG, max_length=max_length, truncation="only_first")
  add(LONG, max_length=16, truncation="longest_first", add_special_tokens=False)
  movies = movie_sentences(8)
  pairs = [(movies[0], movies[1]), (LONG, movies[2]), (movies[3], LONG), (LONG, LONG), ("", movies[4]),
           (movies[5], ""), (TEXTS[8], TEXTS[12]), (TEXTS[17], TEXTS[20])]
  for text, pair in pairs:
    add(text, pair)
    for max_length in (4, 5, 9, 33):
      for truncation in ("longest_first", "only_first", "only_second"):
        add(text, pair, max_length=max_length, truncation=truncation)
  add(LONG, LONG, max_length=20, truncation="longest_first", add_special_tokens=False)
  return out


# -- reference ----------------------------------------------------------------


def encode_reference(tokenizer, case: dict) -> dict:
  kwargs = dict(
      add_special_tokens=case["add_special_tokens"], return_offsets_mapping=True, return_token_type_ids=True,
      return_special_tokens_mask=True, return_attention_mask=True,
  )
  if case["max_length"] is not None:
    kwargs.update(max_length=case["max_length"], truncation=case["truncation"])
  # The batch call, as data pipelines use it: the single-text call drops an
  # empty pair text (`if text_pair:`) while the batch call encodes it.
  pairs = None if case["pair"] is None else [case["pair"]]
  try:
    encoding = tokenizer([case["text"]], pairs, **kwargs)
  except Exception as e:  # noqa: BLE001 - the reference raises a bare Exception on impossible truncation
    return {"error": f"{type(e).__name__}: {e}"}
  ids = encoding["input_ids"][0]
  return dict(
      ids=ids,
      type_ids=encoding["token_type_ids"][0],
      attention_mask=encoding["attention_mask"][0],
      special_tokens_mask=encoding["special_tokens_mask"][0],
      offsets=[list(o) for o in encoding["offset_mapping"][0]],
      word_ids=encoding.word_ids(0),
      tokens=tokenizer.convert_ids_to_tokens(ids),
      decoded=tokenizer.decode(ids, skip_special_tokens=True),
  )


def write_json(path: Path, value: object) -> None:
  path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def deberta_v1_agrees(case: dict) -> bool:
  """Cases where transformers 5's DebertaTokenizer still behaves like the original DeBERTa.

  transformers 5 builds pairs as `[CLS] A [SEP] [SEP] B [SEP]` with all type
  ids 0 and no longer lets [MASK] eat the space on its left; the original
  model (and transformers 4) use `[CLS] A [SEP] B [SEP]`, types 0/1, and an
  lstrip [MASK]. bert_jax follows the original, so only single texts without
  [MASK] are compared here; tests/test_tokenizers.py pins the rest.
  """
  return case["pair"] is None and "[MASK]" not in case["text"]


def write_golden(name: str, folder: Path, class_name: str) -> None:
  tokenizer = getattr(transformers, class_name).from_pretrained(str(folder))
  special = {role: getattr(tokenizer, f"{role}_token_id") for role in ("pad", "unk", "cls", "sep", "mask")}
  results = []
  for case in cases():
    if name == "deberta_v1_bpe" and not deberta_v1_agrees(case):
      continue
    results.append({**case, "expected": encode_reference(tokenizer, case)})
  golden = {
      "reference": f"transformers.{class_name}.from_pretrained (transformers {transformers.__version__}, "
                   f"tokenizers {tokenizers.__version__}, sentencepiece {sentencepiece.__version__})",
      "vocab_size": len(tokenizer),
      "special_ids": special,
      "cases": results,
  }
  # One case per line keeps the file diffable.
  lines = [json.dumps({k: v for k, v in golden.items() if k != "cases"}, ensure_ascii=False)[:-1] + ', "cases": [']
  lines += [json.dumps(r, ensure_ascii=False) + ("," if i + 1 < len(results) else "") for i, r in enumerate(results)]
  (folder / "golden.json").write_text("\n".join(lines) + "\n]}\n", encoding="utf-8")
  errors = sum("error" in r["expected"] for r in results)
  print(f"{name}: {len(results)} cases ({errors} reference errors), vocab {len(tokenizer)}, specials {special}")


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--retrain", action="store_true", help="retrain the vocabularies even if present")
  parser.add_argument("--only", default="", help="comma-separated folder names (default: all)")
  args = parser.parse_args(argv)
  lines = corpus_lines()
  for name, (train, class_name, files) in FOLDERS.items():
    if args.only and name not in args.only.split(","):
      continue
    folder = OUT_DIR / name
    if args.retrain or not all((folder / f).is_file() for f in files):
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir(parents=True)
      train(folder, lines)
    write_golden(name, folder, class_name)


if __name__ == "__main__":
  main(sys.argv[1:])
