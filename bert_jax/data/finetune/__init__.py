"""Fine-tuning data: labelled files (and TFDS GLUE) read into plain Python records.

Nothing here tokenizes or imports jax: a reader returns strings and the line
each record came from, so the task code can tokenize and report errors by
line. Every reader checks its input and raises `ValueError` (a missing file:
`FileNotFoundError`) whose message starts with `FILE:LINE:` (or the TFDS
record / JSON key path) and says what was expected and what was found.

  tables   read_table: .tsv / .csv / .jsonl / .json (JSON lines), `.gz` allowed -> Table;
           read_json_lines: [(line number, object)]
  labels   LabelMap: training label strings <-> class ids, saved beside checkpoints as JSON;
           parse_score: a label string -> float, for regression targets (STS-B)
  tfds     read_tfds: a TFDS GLUE config through `tfds.data_source` (no TensorFlow) -> Table
  conll    read_conll: CoNLL-2003 style token/tag columns -> list[TaggedSentence]
  squad    read_squad: SQuAD v1.1 / v2.0 JSON -> list[QAExample]
  vectors  read_vectors: a fixed tower's .npy embeddings [N, D]; read_captions: texts naming their row

Files are read through bert_jax.runtime.fileio.read_lines: as bytes, decoded
as UTF-8 one line at a time, so a bad byte is reported with its line (and its
offset); a leading byte-order mark is dropped. The table format rules (TSV
quotes, blank lines) are in tables.py.
"""

from bert_jax.data.finetune.conll import TaggedSentence, read_conll
from bert_jax.data.finetune.labels import LabelMap, parse_score
from bert_jax.data.finetune.squad import QAExample, read_squad
from bert_jax.data.finetune.tables import Table, read_json_lines, read_table
from bert_jax.data.finetune.tfds import read_tfds
from bert_jax.data.finetune.vectors import Captions, read_captions, read_vectors

__all__ = ["Captions", "LabelMap", "QAExample", "Table", "TaggedSentence", "parse_score", "read_captions",
           "read_conll", "read_json_lines", "read_squad", "read_table", "read_tfds", "read_vectors"]
