"""Tests for bert_jax.data.finetune: tables, labels, TFDS GLUE, CoNLL and SQuAD readers.

Each error case writes a small file and checks that the message names the
file and the line (or JSON key path), since that is what a user needs to fix it.
"""

import gzip
import json
import re

import numpy as np
import pytest

from bert_jax.data import finetune as fr

BUNDLED_DEV = "/work/shared/data/movie_sentiment.dev.tsv"


def write(tmp_path, name: str, content: str | bytes):
  """Writes tmp_path/name (gzip-compressed when the name ends in .gz); returns the path as str."""
  data = content.encode("utf-8") if isinstance(content, str) else content
  path = tmp_path / name
  path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
  return str(path)


def raises_at(exc, path: str, where: str, *fragments: str):
  """pytest.raises for an error whose message names `path`, then `where` (":LINE" or a key path)."""
  pattern = re.escape(path) + r".*" + re.escape(where) + "".join(r"(.|\n)*" + re.escape(f) for f in fragments)
  return pytest.raises(exc, match=pattern)


# -- tables ------------------------------------------------------------------------------


def test_tsv_columns_pairs_and_line_numbers(tmp_path):
  path = write(tmp_path, "pairs.tsv", "score\tsentence\tsentence2\tlabel\n"
                                      "0.5\tA cat .\tA dog .\tentailment\n"
                                      "1.5\tIt's \"fine\"\t  spaced  \t 3.5 \n")
  table = fr.read_table(path)
  assert table.path == path
  assert table.sentences == ["A cat .", "It's \"fine\""]
  assert table.pairs == ["A dog .", "  spaced  "]  # text kept literally, spaces included
  assert table.labels == ["entailment", "3.5"]  # spaces around a label are formatting
  assert table.line_numbers == [2, 3]
  assert len(table) == 2 and table.where(1) == f"{path}:3"
  single = fr.read_table(path, pair_column=None)
  assert single.pairs is None and single.sentences == table.sentences


def test_bundled_movie_sentiment_dev():
  table = fr.read_table(BUNDLED_DEV)
  assert len(table) == 1055
  assert table.pairs is None
  assert table.labels.count("1") == 498 and table.labels.count("0") == 557
  assert table.line_numbers == list(range(2, 1057))
  assert table.sentences[0].startswith("The Rock is destined to be the 21st Century's new ''Conan'' and")
  assert table.sentences[0].endswith("Steven Segal.")
  labels = fr.LabelMap.from_labels(table.labels)
  assert labels.names == ["0", "1"]
  assert [labels.encode(v) for v in table.labels[:2]] == [1, 1]


def test_tsv_quotes_are_text_but_csv_quotes_are_syntax(tmp_path):
  tsv = fr.read_table(write(tmp_path, "q.tsv", 'sentence\tlabel\n"a, b"\t1\n"unclosed\t0\nsay ""hi""\t1\n'))
  assert tsv.sentences == ['"a, b"', '"unclosed', 'say ""hi""']
  csv_path = write(tmp_path, "q.csv", 'sentence,label\n"a, b",1\n"two\nlines, ""quoted""",0\nplain,1\n')
  table = fr.read_table(csv_path)
  assert table.sentences == ["a, b", 'two\nlines, "quoted"', "plain"]
  assert table.labels == ["1", "0", "1"]
  assert table.line_numbers == [2, 3, 5]  # a record's first physical line


def test_jsonl_labels_of_any_json_scalar(tmp_path):
  lines = [{"sentence": "one", "sentence2": "uno", "label": 1, "id": 7},
           {"sentence": "two", "sentence2": "dos", "label": "positive"},
           {"sentence": "three", "sentence2": "tres", "label": True},
           {"sentence": "four", "sentence2": "cuatro", "label": 2.5},
           {"sentence": "five", "sentence2": "cinco", "label": 1.0}]
  text = "".join(json.dumps(x) + "\n" for x in lines) + "\n\n"  # trailing blank lines are fine
  for name in ("t.jsonl", "t.json", "t.jsonl.gz"):
    table = fr.read_table(write(tmp_path, name, text))
    assert table.sentences == ["one", "two", "three", "four", "five"]
    assert table.pairs == ["uno", "dos", "tres", "cuatro", "cinco"]
    assert table.labels == ["1", "positive", "true", "2.5", "1.0"]
    assert table.line_numbers == [1, 2, 3, 4, 5]


def test_gzip_crlf_bom_and_other_text_columns(tmp_path):
  # The text is the last field, so a kept "\r" would show in it.
  path = write(tmp_path, "qa.tsv.gz", "\ufefflabel\tquestion\r\n0\tWho?\r\n1\tWhy?\r\n")
  table = fr.read_table(path, text_columns=("question",))
  assert table.sentences == ["Who?", "Why?"] and table.labels == ["0", "1"]
  # text_columns are alternatives, tried in order.
  assert fr.read_table(path, text_columns=("sentence", "question")).sentences == ["Who?", "Why?"]
  with raises_at(ValueError, path, ":1:", "'sentence'", "['label', 'question']"):
    fr.read_table(path)


def test_unlabelled_tables(tmp_path):
  path = write(tmp_path, "test.tsv", "sentence\nhello\n")
  assert fr.read_table(path, require_label=False).labels is None
  with raises_at(ValueError, path, ":1:", "'label'", "['sentence']"):
    fr.read_table(path)


TABLE_ERRORS = [
    # (file name, content, where, fragments that must follow in the message)
    ("cols.tsv", "text\tlabel\nhi\t1\n", ":1:", "'sentence'", "['text', 'label']"),
    ("cols.csv", "sentence,score\nhi,1\n", ":1:", "'label'", "['sentence', 'score']"),
    ("fields.tsv", "sentence\tlabel\tscore\nok\t1\t2\nno score\t1\n", ":3:", "expected 3", "found 2"),
    ("fields.tsv", "sentence\tlabel\na\tb\t1\n", ":2:", "expected 2", "found 3"),
    ("fields.csv", "sentence,label\na,b,1\n", ":2:", "expected 2", "found 3"),
    ("empty_text.tsv", "sentence\tlabel\nok\t1\n \t0\n", ":3:", "non-empty text", "'sentence'"),
    ("empty_pair.tsv", "sentence\tsentence2\tlabel\nok\t\t1\n", ":2:", "non-empty text", "'sentence2'"),
    ("no_label.tsv", "sentence\tlabel\nok\t1\nnone\t \n", ":3:", "missing label"),
    ("no_label.jsonl", '{"sentence": "a", "label": 0}\n{"sentence": "b"}\n', ":2:", "missing label", "'label'"),
    ("null_label.jsonl", '{"sentence": "a", "label": null}\n', ":1:", "number, string or boolean", "null"),
    ("not_text.jsonl", '{"sentence": 5, "label": 0}\n', ":1:", "string", "number"),
    ("no_text.jsonl", '{"sentence": "a", "label": 0}\n{"label": 1}\n', ":2:", "'sentence'", "['label']"),
    ("blank.tsv", "sentence\tlabel\na\t1\n\nb\t0\n", ":3:", "blank line"),
    ("blank.jsonl", '{"sentence": "a", "label": 0}\n  \n{"sentence": "b", "label": 1}\n', ":2:", "blank line"),
    ("blank.csv", "sentence,label\na,1\n\nb,0\n", ":3:", "blank line"),
    ("header_only.tsv", "sentence\tlabel\n\n", "", "expected records after the header"),
    ("empty.tsv", "", "", "empty"),
    ("empty.jsonl", "\n\n", "", "empty"),
    ("array.json", '[{"sentence": "a", "label": 0}]\n', ":1:", "JSON object per line", "a list"),
    ("bad.jsonl", '{"sentence": "a", "label": 0}\n{"sentence": "b" "label": 1}\n', ":2:", "invalid JSON"),
    ("quote.csv", 'sentence,label\nok,1\n"never closed,0\nmore,1\n', ":3:", "CSV"),
    ("dup.tsv", "sentence\tlabel\tlabel\na\t1\t2\n", ":1:", "distinct", "'label'"),
    ("table.txt", "sentence\tlabel\na\t1\n", "", ".tsv, .csv, .jsonl or .json", "'.txt'"),
]


@pytest.mark.parametrize("name,content,where,fragments", [(e[0], e[1], e[2], e[3:]) for e in TABLE_ERRORS],
                         ids=[f"{e[0]}-{i}" for i, e in enumerate(TABLE_ERRORS)])
def test_table_errors_name_file_and_line(tmp_path, name, content, where, fragments):
  path = write(tmp_path, name, content)
  with raises_at(ValueError, path, where, *fragments):
    fr.read_table(path)


def test_non_utf8_bytes_name_line_and_offset(tmp_path):
  path = write(tmp_path, "latin1.tsv", b"sentence\tlabel\nok\t1\ncaf\xe9 au lait\t0\n")
  # Line 3 starts at file offset 20; the bad byte is the 4th of the line.
  with raises_at(ValueError, path, ":3:", "0xe9", "at offset 3 of the line", "offset 23 of the file"):
    fr.read_table(path)
  gz = write(tmp_path, "latin1.jsonl.gz", b'{"sentence": "ok", "label": 1}\n{"sentence": "\xff", "label": 0}\n')
  with raises_at(ValueError, gz, ":2:", "0xff", "at offset 14 of the line", "decompressed file"):
    fr.read_table(gz)


def test_missing_file_and_bad_gzip(tmp_path):
  missing = str(tmp_path / "nope.tsv")
  with pytest.raises(FileNotFoundError, match=re.escape(missing)):
    fr.read_table(missing)
  path = write(tmp_path, "plain.tsv", "sentence\tlabel\na\t1\n")
  fake_gz = tmp_path / "fake.tsv.gz"
  fake_gz.write_bytes(b"sentence\tlabel\na\t1\n")
  with raises_at(ValueError, str(fake_gz), "", "gzip"):
    fr.read_table(str(fake_gz))
  assert fr.read_table(path).labels == ["1"]


# -- labels ------------------------------------------------------------------------------


def test_label_map_orders_integers_by_value():
  assert fr.LabelMap.from_labels(["1", "0", "1"]).names == ["0", "1"]
  three = fr.LabelMap.from_labels(["3", "1", "2", "3"])
  assert three.names == ["1", "2", "3"] and three.num_classes == 3
  assert [three.encode(v) for v in ("1", "2", "3")] == [0, 1, 2]  # position, not the integer itself
  assert fr.LabelMap.from_labels(["10", "9", "-1", "100"]).names == ["-1", "9", "10", "100"]  # not "10" < "9"
  # One non-integer label makes them all strings, sorted as text.
  assert fr.LabelMap.from_labels(["10", "9", "x"]).names == ["10", "9", "x"]
  assert fr.LabelMap.from_labels(["1.0", "2.0", "10.0"]).names == ["1.0", "10.0", "2.0"]
  assert fr.LabelMap.from_labels(["positive", "negative", "neutral"]).names == ["negative", "neutral", "positive"]


def test_label_map_encode_decode_and_json_round_trip():
  labels = fr.LabelMap.from_labels(["neutral", "entailment", "contradiction", "entailment"])
  assert labels.names == ["contradiction", "entailment", "neutral"]
  assert [labels.decode(labels.encode(n)) for n in labels.names] == labels.names
  assert labels.decode(np.int64(2)) == "neutral"
  with pytest.raises(ValueError, match=r"dev\.tsv:7: unknown label 'maybe'.*\['contradiction', 'entailment', 'neutral'\]"):
    labels.encode("maybe", where="dev.tsv:7")
  with pytest.raises(ValueError, match=r"\[0, 3\).*found 3"):
    labels.decode(3)
  with pytest.raises(ValueError, match="integer class id"):
    labels.decode(1.0)
  again = fr.LabelMap.from_json(labels.to_json())
  assert again == labels and again.names == labels.names and again.encode("neutral") == 2
  unicode_map = fr.LabelMap(["négatif", "positif"])
  assert fr.LabelMap.from_json(unicode_map.to_json()).names == ["négatif", "positif"]
  # The saved order wins over re-sorting: a map is restored, not rebuilt.
  assert fr.LabelMap.from_json('{"labels": ["b", "a"]}').names == ["b", "a"]
  for bad in ('{"names": []}', "[1]", "{", '{"labels": ["a", "a"]}', '{"labels": []}', '{"labels": [1]}'):
    with pytest.raises(ValueError, match="LabelMap"):
      fr.LabelMap.from_json(bad)
  with pytest.raises(ValueError, match="None"):
    fr.LabelMap.from_labels(None)


def test_parse_score():
  assert fr.parse_score("3.8", "a.tsv:2") == 3.8
  assert fr.parse_score(" 1 ", "a.tsv:2") == 1.0
  for bad in ("high", "", "nan", "inf"):
    with pytest.raises(ValueError, match=r"a\.tsv:4: expected a (finite )?number .*" + re.escape(repr(bad))):
      fr.parse_score(bad, "a.tsv:4")


# -- TFDS GLUE ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tfds():
  return pytest.importorskip("tensorflow_datasets")


def glue_source(records_by_split: dict[str, list[dict]]):
  """An `as_data_source_fn` for tfds.testing.mock_data giving these records per split."""

  def as_data_source(self, split, **kwargs):
    del kwargs
    return records_by_split[f"{self.builder_config.name}:{split}"]

  return as_data_source


def test_glue_through_mock_data_source(tfds):
  records = {
      "sst2:validation": [{"idx": np.int32(0), "sentence": b"a gem of a movie", "label": np.array(1)},
                          {"idx": np.int32(1), "sentence": "caf\u00e9 dull".encode(), "label": np.array(0)}],
      "sst2:test": [{"idx": 0, "sentence": b"unseen", "label": np.array(-1)}],
      "mrpc:train": [{"idx": 0, "sentence1": b"He said so .", "sentence2": b"So he said .", "label": np.array(1)},
                     {"idx": 1, "sentence1": b"Yes .", "sentence2": b"No .", "label": np.array(0)}],
      "stsb:validation": [{"idx": 0, "sentence1": b"a", "sentence2": b"b", "label": np.array(3.8, np.float32)},
                          {"idx": 1, "sentence1": b"c", "sentence2": b"d", "label": np.float32(0.0)}],
      "stsb:test": [{"idx": 0, "sentence1": b"a", "sentence2": b"b", "label": np.array(-1.0, np.float32)}],
      "mnli:validation_matched": [{"idx": 0, "premise": b"P", "hypothesis": b"H", "label": np.array(2)}],
      "qqp:train": [{"idx": 0, "question1": b"Q1?", "question2": b"Q2?", "label": np.array(1)}],
      "qnli:train": [{"idx": 0, "question": b"Q?", "sentence": b"S.", "label": np.array(1)}],
      "cola:train": [{"idx": 0, "sentence": b"Bad", "label": np.array(7)}],
      "sst2:train": [{"idx": 0, "sentence": b"\xffbad", "label": np.array(1)}],
  }
  with tfds.testing.mock_data(as_data_source_fn=glue_source(records)):
    sst2 = fr.read_tfds("glue/sst2", "validation", data_dir="/nonexistent")
    assert sst2.path == "tfds:glue/sst2:validation"
    assert sst2.sentences == ["a gem of a movie", "caf\u00e9 dull"] and sst2.pairs is None
    assert sst2.labels == ["positive", "negative"]  # ClassLabel names, not ids
    assert sst2.line_numbers == [0, 1]
    mrpc = fr.read_tfds("glue/mrpc", "train")
    assert mrpc.sentences == ["He said so .", "Yes ."] and mrpc.pairs == ["So he said .", "No ."]
    assert mrpc.labels == ["equivalent", "not_equivalent"]
    stsb = fr.read_tfds("glue/stsb", "validation")
    assert stsb.labels == ["3.8", "0.0"] and [fr.parse_score(v, "") for v in stsb.labels] == [3.8, 0.0]
    mnli = fr.read_tfds("glue/mnli", "validation_matched")
    assert (mnli.sentences, mnli.pairs, mnli.labels) == (["P"], ["H"], ["contradiction"])
    qqp = fr.read_tfds("glue/qqp", "train")
    assert (qqp.sentences, qqp.pairs, qqp.labels) == (["Q1?"], ["Q2?"], ["duplicate"])
    qnli = fr.read_tfds("glue/qnli", "train")
    assert (qnli.sentences, qnli.pairs, qnli.labels) == (["Q?"], ["S."], ["not_entailment"])

    with pytest.raises(ValueError, match=r"tfds:glue/sst2:test: record 0: .*split 'test' .*has no labels"):
      fr.read_tfds("glue/sst2", "test")
    with pytest.raises(ValueError, match=r"tfds:glue/stsb:test: record 0: .*no labels"):
      fr.read_tfds("glue/stsb", "test")
    unlabelled = fr.read_tfds("glue/sst2", "test", require_label=False)
    assert unlabelled.sentences == ["unseen"] and unlabelled.labels is None
    with pytest.raises(ValueError, match=r"tfds:glue/cola:train: record 0: .*\[0, 2\).*found 7"):
      fr.read_tfds("glue/cola", "train")
    with pytest.raises(ValueError, match=r"tfds:glue/sst2:train: record 0: expected UTF-8 .*0xff"):
      fr.read_tfds("glue/sst2", "train")
  for bad in ("imdb_reviews", "glue", "glue/nope", "super_glue/rte"):
    with pytest.raises(ValueError, match=r"glue/<config>.*" + re.escape(repr(bad))):
      fr.read_tfds(bad, "train")


def test_glue_through_tfds_random_mock(tfds):
  # tfds' own mock: records come through its ArrayRecordDataSource class, with the dataset_info.
  with tfds.testing.mock_data(num_examples=7):
    sst2 = fr.read_tfds("glue/sst2", "train")
    assert len(sst2) == 7 and sst2.line_numbers == list(range(7))
    assert set(sst2.labels) <= {"negative", "positive"}
    assert all(isinstance(s, str) and s for s in sst2.sentences)
    mrpc = fr.read_tfds("glue/mrpc", "validation")
    assert len(mrpc.pairs) == 7 and set(mrpc.labels) <= {"not_equivalent", "equivalent"}
    stsb = fr.read_tfds("glue/stsb", "train")
    assert all(0.0 <= fr.parse_score(v, "") <= 1.0 for v in stsb.labels)
    mnli = fr.read_tfds("glue/mnli", "validation_mismatched")
    assert set(mnli.labels) <= {"entailment", "neutral", "contradiction"}


def test_tfds_is_imported_lazily():
  import ast  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  code = "import sys, bert_jax.data.finetune; assert 'tensorflow_datasets' not in sys.modules"
  subprocess.run([sys.executable, "-c", code], check=True)
  # The readers' own top-level imports are the standard library, numpy (vectors.py's matrices), each other
  # and bert_jax.runtime.fileio (the bert_jax package __init__ imports jax).
  folder = pathlib.Path(fr.__file__).parent
  for module in sorted(folder.glob("*.py")):
    tree = ast.parse(module.read_text(encoding="utf-8"))
    top = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    ours = {name for name in top if name.split(".")[0] == "bert_jax"}
    assert {name.split(".")[0] for name in top - ours} <= set(sys.stdlib_module_names) | {"__future__", "numpy"}, module
    assert all(name.startswith("bert_jax.data.finetune") or name == "bert_jax.runtime" for name in ours), module


# -- CoNLL -------------------------------------------------------------------------------

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC


Peter NNP B-NP B-PER
-DOCSTART- -X- -X- O

Blackburn NNP B-NP B-PER
"""


def test_conll(tmp_path):
  for name in ("train.conll", "train.conll.gz"):
    sentences = fr.read_conll(write(tmp_path, name, CONLL))
    assert sentences == [
        fr.TaggedSentence(tokens=["EU", "rejects", "German"], tags=["B-ORG", "O", "B-MISC"], line_number=3),
        fr.TaggedSentence(tokens=["Peter"], tags=["B-PER"], line_number=8),
        fr.TaggedSentence(tokens=["Blackburn"], tags=["B-PER"], line_number=11),
    ]
  two_columns = fr.read_conll(write(tmp_path, "ner.txt", "John\tB-PER\nSmith  I-PER\n"))
  assert two_columns == [fr.TaggedSentence(["John", "Smith"], ["B-PER", "I-PER"], 1)]


def test_conll_errors(tmp_path):
  path = write(tmp_path, "bad.conll", "EU NNP B-ORG\nrejects\n")
  with raises_at(ValueError, path, ":2:", "2 or more", "found 1 column", "'rejects'"):
    fr.read_conll(path)
  empty = write(tmp_path, "empty.conll", "-DOCSTART- -X- -X- O\n\n")
  with raises_at(ValueError, empty, "", "found none"):
    fr.read_conll(empty)
  latin = write(tmp_path, "latin.conll", b"a O\n\nb\xe9 O\n")
  with raises_at(ValueError, latin, ":3:", "UTF-8", "0xe9", "at offset 1 of the line"):
    fr.read_conll(latin)
  with pytest.raises(FileNotFoundError):
    fr.read_conll(str(tmp_path / "missing.conll"))


# -- SQuAD -------------------------------------------------------------------------------

CONTEXT = "Normandy is a region in France. The Normans gave their name to it."


def squad(qas: list[dict], version: str = "1.1") -> str:
  return json.dumps({"version": version, "data": [
      {"title": "Other", "paragraphs": [{"context": "Short.", "qas": [
          {"id": "q0", "question": "What?", "answers": [{"text": "Short", "answer_start": 0}]}]}]},
      {"title": "Normans", "paragraphs": [{"context": "Unused.", "qas": []}, {"context": CONTEXT, "qas": qas}]},
  ]}, indent=1)


def test_squad_v1(tmp_path):
  qas = [{"id": "q1", "question": "Where is Normandy?",
          "answers": [{"text": "France", "answer_start": 24}, {"text": "in France", "answer_start": 21}]}]
  for name in ("v1.json", "v1.json.gz"):
    examples = fr.read_squad(write(tmp_path, name, squad(qas)))
    assert [e.id for e in examples] == ["q0", "q1"]
    q1 = examples[1]
    assert q1 == fr.QAExample(id="q1", question="Where is Normandy?", context=CONTEXT,
                              answers=[("France", 24), ("in France", 21)], is_impossible=False, title="Normans")


def test_squad_v2_unanswerable(tmp_path):
  qas = [{"id": "a", "question": "Who named it?", "answers": [{"text": "The Normans", "answer_start": 32}],
          "is_impossible": False},
         {"id": "u", "question": "Who named Paris?", "answers": [], "is_impossible": True,
          "plausible_answers": [{"text": "The Normans", "answer_start": 32}]}]
  examples = fr.read_squad(write(tmp_path, "v2.json", squad(qas, "v2.0")))
  answerable, impossible = examples[1], examples[2]
  assert answerable.answers == [("The Normans", 32)] and not answerable.is_impossible
  assert impossible.answers == [] and impossible.is_impossible and impossible.title == "Normans"


SQUAD_ERRORS = [
    # (qas of the second paragraph of data[1], key path and fragments the message must name)
    ([{"id": "off", "question": "Where?", "answers": [{"text": "France", "answer_start": 23}]}],
     "data[1].paragraphs[1].qas[0].answers[0] (id 'off')", "'France'", "' Franc'"),
    ([{"id": "far", "question": "Where?", "answers": [{"text": "France", "answer_start": 500}]}],
     "data[1].paragraphs[1].qas[0].answers[0] (id 'far')", "'France'", "''"),
    ([{"id": "neg", "question": "Where?", "answers": [{"text": "France", "answer_start": -1}]}],
     "data[1].paragraphs[1].qas[0].answers[0] (id 'neg').answer_start", ">= 0"),
    ([{"id": "str", "question": "Where?", "answers": [{"text": "France", "answer_start": "24"}]}],
     "data[1].paragraphs[1].qas[0].answers[0] (id 'str').answer_start", "int", "'24'"),
    ([{"id": "x", "question": "Q?", "answers": [{"text": "France", "answer_start": 24}]},
      {"id": "q0", "question": "Again?", "answers": [{"text": "France", "answer_start": 24}]}],
     "data[1].paragraphs[1].qas[1] (id 'q0')", "unique", "data[0].paragraphs[0].qas[0]"),
    ([{"id": "noq", "answers": []}], "data[1].paragraphs[1].qas[0] (id 'noq')", "'question'"),
    ([{"id": "none", "question": "Q?", "answers": []}], "data[1].paragraphs[1].qas[0] (id 'none').answers",
     "at least one answer"),
    ([{"id": "both", "question": "Q?", "answers": [{"text": "France", "answer_start": 24}], "is_impossible": True}],
     "data[1].paragraphs[1].qas[0] (id 'both').answers", "no answers"),
    (["not an object"], "data[1].paragraphs[1].qas[0]", "an object", "a string"),
]


@pytest.mark.parametrize("qas,where,fragments", [(e[0], e[1], e[2:]) for e in SQUAD_ERRORS],
                         ids=[str(i) for i in range(len(SQUAD_ERRORS))])
def test_squad_errors_name_question_and_key_path(tmp_path, qas, where, fragments):
  path = write(tmp_path, "bad.json", squad(qas))
  with raises_at(ValueError, path, where, *fragments):
    fr.read_squad(path)


def test_squad_malformed_files(tmp_path):
  bad_json = write(tmp_path, "broken.json", '{"data": [\n  {"title": "t",\n  "paragraphs": [}\n]}')
  with raises_at(ValueError, bad_json, ":3:", "invalid JSON"):
    fr.read_squad(bad_json)
  no_data = write(tmp_path, "nodata.json", '{"version": "1.1"}')
  with raises_at(ValueError, no_data, "(top level)", "'data'", "['version']"):
    fr.read_squad(no_data)
  no_context = write(tmp_path, "nocontext.json", '{"data": [{"title": "t", "paragraphs": [{"qas": []}]}]}')
  with raises_at(ValueError, no_context, "data[0].paragraphs[0]", "'context'", "['qas']"):
    fr.read_squad(no_context)
  empty = write(tmp_path, "empty.json", '{"data": []}')
  with raises_at(ValueError, empty, "", "found none"):
    fr.read_squad(empty)
  latin = write(tmp_path, "latin.json", b'{"data": [\n{"title": "caf\xe9"}]}')
  with raises_at(ValueError, latin, ":2:", "UTF-8"):
    fr.read_squad(latin)
