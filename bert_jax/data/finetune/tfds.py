"""TFDS GLUE splits read into a `Table` through `tfds.data_source` (ArrayRecord; TensorFlow not needed).

tensorflow_datasets is imported only when `read_tfds` is called: it is slow to
import and optional.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bert_jax.data.finetune.tables import PathLike, Table


# GLUE config -> (sentence feature, pair feature or None).
_GLUE_FEATURES = {
    "cola": ("sentence", None),
    "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "mnli_matched": ("premise", "hypothesis"),
    "mnli_mismatched": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "ax": ("premise", "hypothesis"),
}


def read_tfds(name: str, split: str, *, data_dir: PathLike | None = None, require_label: bool = True) -> Table:
  """Reads a prepared TFDS GLUE split with `tfds.data_source` (ArrayRecord; TensorFlow not needed).

  Args:
    name: "glue/<config>" with an optional ":<version>", config one of cola, sst2,
      mrpc, rte, wnli, stsb, qqp, mnli (+ _matched / _mismatched), qnli, ax.
    split: e.g. "train", "validation", "validation_matched" (mnli), "test".
    data_dir: the TFDS data folder; None: TFDS's default.
    require_label: GLUE test splits store label -1 (no label). True: such a
      record is an error; False: a split with any unlabelled record gives
      `Table.labels = None`.

  Returns:
    A `Table` whose path is `tfds:<name>:<split>`, line_numbers the 0-based
    record indices; sentences / pairs map the config's text features (e.g.
    mnli: premise / hypothesis, qqp: question1 / question2). Class labels are
    the dataset's ClassLabel names ("negative", "entailment", ...); stsb labels
    are the float score as a string.

  Raises:
    ValueError: an unsupported name, a dataset that cannot be opened (not
      prepared, unknown split), a record without a label, a missing feature or
      text that is not UTF-8, naming the record.
  """
  dataset, _, config = name.split(":")[0].partition("/")
  config = config.split("/")[0]
  if dataset != "glue" or config not in _GLUE_FEATURES:
    raise ValueError(f"read_tfds: expected a name glue/<config> with config one of {sorted(_GLUE_FEATURES)}, "
                     f"found {name!r}")
  text_feature, pair_feature = _GLUE_FEATURES[config]
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import, optional path)

  origin = f"tfds:{name}:{split}"
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir)
    info = getattr(source, "dataset_info", None)
    if info is None:  # a data source that is not TFDS's own class (e.g. a test double)
      info = tfds.builder(name, data_dir=data_dir).info
  except Exception as e:  # tfds raises many kinds: not found, not prepared, bad split
    raise ValueError(f"{origin}: cannot open the TFDS dataset {name!r} split {split!r}: {e}") from e
  label_names = getattr(info.features["label"], "names", None)  # None: stsb's float score

  table = Table(path=origin, sentences=[], pairs=[] if pair_feature else None, labels=[], line_numbers=[])
  unlabelled = None  # first record without a label
  for index, record in _tfds_records(source):
    where = f"{origin}: record {index}"
    table.sentences.append(_tfds_text(record, text_feature, where))
    if pair_feature:
      table.pairs.append(_tfds_text(record, pair_feature, where))
    table.line_numbers.append(index)
    label = _tfds_label(record, label_names, where)
    if label is None:
      if require_label:
        raise ValueError(f"{where}: expected a label, found -1: split {split!r} of {name!r} has no labels "
                         f"(GLUE test splits are unlabelled; pass require_label=False to read it for prediction)")
      unlabelled = index if unlabelled is None else unlabelled
    elif unlabelled is None:
      table.labels.append(label)
  if not table.sentences:
    raise ValueError(f"{origin}: expected records, found an empty split")
  if unlabelled is not None:
    table.labels = None
  return table


def _tfds_records(source: Sequence[Any]) -> Iterable[tuple[int, dict[str, Any]]]:
  """(index, record) for every record of a data source.

  One record at a time: record decoding costs more than the ArrayRecord read,
  and `source[i]` is the one access every data source (and tfds' mock) supports.
  """
  for index in range(len(source)):
    yield index, source[index]


def _scalar(value: Any) -> Any:
  """A numpy scalar / 0-d array as the numpy scalar itself (str() of a float32 stays short: "3.8")."""
  if hasattr(value, "shape") and getattr(value, "shape", None) == ():
    return value[()]
  return value


def _tfds_text(record: dict[str, Any], feature: str, where: str) -> str:
  if feature not in record:
    raise ValueError(f"{where}: expected a {feature!r} feature, found features {sorted(record)}")
  value = _scalar(record[feature])
  if isinstance(value, bytes):
    try:
      value = value.decode("utf-8")
    except UnicodeDecodeError as e:
      raise ValueError(f"{where}: expected UTF-8 text in {feature!r}, found byte 0x{value[e.start]:02x} "
                       f"at byte offset {e.start}") from None
  if not isinstance(value, str):
    raise ValueError(f"{where}: expected text in {feature!r}, found {value!r}")
  # Empty texts are kept: a few upstream GLUE records have one, and a tokenizer handles them.
  return value


def _tfds_label(record: dict[str, Any], label_names: list[str] | None, where: str) -> str | None:
  """The label string, or None for GLUE's "no label" value -1."""
  if "label" not in record:
    raise ValueError(f"{where}: expected a 'label' feature, found features {sorted(record)}")
  value = _scalar(record["label"])
  if label_names is None:  # stsb: a float score
    number = float(value)
    return None if number == -1 else str(value)
  index = int(value)
  if index == -1:
    return None
  if not 0 <= index < len(label_names):
    raise ValueError(f"{where}: expected a class id in [0, {len(label_names)}) ({label_names}), found {index}")
  return label_names[index]
