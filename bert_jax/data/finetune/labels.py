"""Label strings -> training targets: `LabelMap` (class ids, saved beside checkpoints) and `parse_score`.

  LabelMap     training label strings <-> class ids 0..num_classes-1; to_json / from_json
  parse_score  a label string -> float, for regression targets (STS-B)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence

# Integer labels as written in files: "0", "1", "-1" (not "1.0", not " 1", not "١").
_INT_LABEL = re.compile(r"[+-]?[0-9]+")


class LabelMap:
  """Label strings <-> class ids 0..num_classes-1, fixed by the training labels.

  `from_labels` orders the distinct labels: when every label is an integer
  ("0", "-1", "+2"; not "1.0") by integer value, else as strings. So {"0", "1"}
  gives ids 0, 1 and {"1", "2", "3"} gives 0, 1, 2: the id of a label is its
  position in the sorted list, not the integer itself. Save the map with the
  checkpoint (`to_json`) so that predictions decode to the training labels.
  """

  def __init__(self, names: Sequence[str]):
    """names [num_classes]: the label of each class id; distinct, non-empty strings."""
    names = list(names)
    if not names:
      raise ValueError("LabelMap: expected at least one label, found none")
    for n in names:
      if not isinstance(n, str) or not n:
        raise ValueError(f"LabelMap: expected non-empty label strings, found {n!r} in {names}")
    if len(set(names)) != len(names):
      duplicates = sorted({n for n in names if names.count(n) > 1})
      raise ValueError(f"LabelMap: expected distinct labels, found {duplicates} more than once in {names}")
    self._names = names
    self._ids = {n: i for i, n in enumerate(names)}

  @classmethod
  def from_labels(cls, labels: Iterable[str]) -> LabelMap:
    """The map of the distinct training labels, ordered as the class docstring says."""
    if labels is None:
      raise ValueError("LabelMap.from_labels: expected label strings, found None (was the data read without labels?)")
    distinct = set()
    for label in labels:
      if not isinstance(label, str):
        raise ValueError(f"LabelMap.from_labels: expected label strings, found {label!r} ({type(label).__name__})")
      distinct.add(label)
    if all(_INT_LABEL.fullmatch(label) for label in distinct):
      # Ties ("01" vs "1") are ordered by their text, so the order never depends on set iteration.
      return cls(sorted(distinct, key=lambda label: (int(label), label)))
    return cls(sorted(distinct))

  @property
  def names(self) -> list[str]:
    """[num_classes] the label of each class id."""
    return list(self._names)

  @property
  def num_classes(self) -> int:
    return len(self._names)

  def encode(self, label: str, *, where: str = "") -> int:
    """The class id of `label`; `where` (e.g. `FILE:LINE`) starts the error for an unseen label."""
    try:
      return self._ids[label]
    except (KeyError, TypeError):
      prefix = f"{where}: " if where else ""
      raise ValueError(f"{prefix}unknown label {label!r}: expected one of the training labels {self._names}") from None

  def decode(self, index: int) -> str:
    """The label of class id `index` (an int or numpy integer)."""
    if isinstance(index, bool) or not hasattr(index, "__index__"):
      raise ValueError(f"LabelMap.decode: expected an integer class id, found {index!r}")
    i = index.__index__()
    if not 0 <= i < len(self._names):
      raise ValueError(f"LabelMap.decode: expected a class id in [0, {len(self._names)}), found {i}")
    return self._names[i]

  def to_json(self) -> str:
    """JSON text `{"labels": [name of id 0, name of id 1, ...]}`."""
    return json.dumps({"labels": self._names}, ensure_ascii=False)

  @classmethod
  def from_json(cls, text: str | bytes) -> LabelMap:
    """The map written by `to_json`."""
    try:
      value = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"LabelMap.from_json: expected JSON text, found invalid JSON: {e}") from None
    if not isinstance(value, dict) or not isinstance(value.get("labels"), list):
      raise ValueError(f"LabelMap.from_json: expected an object with a 'labels' list, found {str(text)[:200]!r}")
    return cls(value["labels"])

  def __eq__(self, other: object) -> bool:
    return isinstance(other, LabelMap) and self._names == other._names

  def __hash__(self) -> int:
    return hash(tuple(self._names))

  def __repr__(self) -> str:
    return f"LabelMap({self._names!r})"


def parse_score(label: str, where: str) -> float:
  """A regression target (e.g. an STS-B similarity) from its label string; `where` starts the error."""
  try:
    value = float(label)
  except (TypeError, ValueError):
    raise ValueError(f"{where}: expected a number as the regression score, found {label!r}") from None
  if not math.isfinite(value):
    raise ValueError(f"{where}: expected a finite number as the regression score, found {label!r}")
  return value
