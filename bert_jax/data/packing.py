"""Padding-free batches for fine-tuning and evaluation: several examples per row, unpacked for the head.

A batch in example layout holds token arrays [M, u] (input_ids, attention_mask, token_type_ids;
each row one example, right-padded). `pack_batch` moves every example's real tokens into rows of
`row_length` tokens, first-fit by decreasing length:

    input_ids / attention_mask / token_type_ids  [R, row_length]   the examples back to back (then 0)
    segment_ids                                  [R, row_length]   1, 2, ... per example, 0 = padding
    unpack                                       [M, u]            flat index (row * row_length + offset)
                                                                   of each example token, -1 past its end

The model attends within segments, restarts positions per segment, and gathers the encoder's
output back to [M, u] with `unpack` (bert_jax.models.model.EncoderModel), so heads, losses and
metrics run on exactly the arrays of the padded computation, and every other array of the batch
(labels, [M] or [M, u]) is left as it is. Only the encoder stops computing on padding.

The row count R is rounded up a short ladder (1, 2, 3, 4, 6, 8, 12, ...: at most a third
of a batch's rows are padding) so a run compiles a handful of shapes. `parts` packs
consecutive groups of examples into rows of their own (R / parts each, indices local to the
group): gradient accumulation splits a batch along its first axis, and a micro-batch then
holds its examples' rows.
"""

from __future__ import annotations

import numpy as np

from bert_jax.data.batching import take

TOKEN_FIELDS = ("input_ids", "attention_mask", "token_type_ids")


def row_bucket(rows: int) -> int:
  """The ladder 1, 2, 3, 4, 6, 8, 12, 16, 24, ...: the smallest step >= rows."""
  step = 1
  while True:
    for candidate in (step, step * 3 // 2) if step >= 2 else (step,):
      if candidate >= rows:
        return candidate
    step *= 2


def first_fit(lengths: np.ndarray, row_length: int) -> tuple[np.ndarray, np.ndarray, int]:
  """Assigns sequences of `lengths` [n] to rows of row_length tokens, longest first, each into the
  first row with room. -> (row [n], offset in the row [n], rows used)."""
  if lengths.size and int(lengths.max()) > row_length:
    raise ValueError(f"a sequence of {int(lengths.max())} tokens does not fit rows of {row_length}")
  row = np.zeros(len(lengths), np.int64)
  offset = np.zeros(len(lengths), np.int64)
  used: list[int] = []
  for i in np.argsort(-lengths, kind="stable"):
    n = int(lengths[i])
    for r, filled in enumerate(used):
      if filled + n <= row_length:
        break
    else:
      r = len(used)
      used.append(0)
    row[i], offset[i] = r, used[r]
    used[r] += n
  return row, offset, len(used)


def greedy_batches(order, lengths: dict[str, np.ndarray], row_length: int, rows: int, examples: int) -> list[list[int]]:
  """The examples in `order`, cut into batches greedily: a batch takes the next example while it
  holds fewer than `examples` and `first_fit` still packs each input's sequences (lengths: prefix ->
  [N] or [N, G] tokens) into `rows` rows of row_length. An example that fits no batch alone raises.

  Each candidate is tested by first-fit decreasing on plain sorted lists (the row count depends on the
  sorted lengths alone, so this decides as `first_fit` does, without numpy's cost per call).
  """
  sequences = {p: np.asarray(v).reshape(len(v), -1).tolist() for p, v in lengths.items()}
  budget = rows * row_length
  fits = lambda within: all(sum(v) <= budget and _first_fit_within(v, row_length, rows) for v in within.values())
  batches, current, within = [], [], {p: [] for p in sequences}   # within: the batch's lengths, longest first
  for i in order:
    i = int(i)
    candidate = {p: sorted(within[p] + sequences[p][i], reverse=True) for p in sequences}
    if current and (len(current) == examples or not fits(candidate)):
      batches.append(current)
      current, candidate = [], {p: sorted(sequences[p][i], reverse=True) for p in sequences}
    if not current and not fits(candidate):
      raise ValueError(f"example {i} does not fit {rows} rows of {row_length} tokens")
    current.append(i)
    within = candidate
  if current:
    batches.append(current)
  return batches


def _first_fit_within(longest_first: list[int], row_length: int, rows: int) -> bool:
  """Whether first-fit of lengths sorted longest first (`first_fit`'s order) needs at most `rows` rows
  of row_length tokens; it stops at the first row too many."""
  used: list[int] = []
  for n in longest_first:
    for r, filled in enumerate(used):
      if filled + n <= row_length:
        used[r] = filled + n
        break
    else:
      if len(used) == rows or n > row_length:
        return False
      used.append(n)
  return True


def packed_rows(lengths: np.ndarray, row_length: int, parts: int = 1) -> int:
  """Rows per part that `pack_batch` gives examples of `lengths` [M] (before padding to other seeds)."""
  groups = np.array_split(lengths, parts)
  return row_bucket(max(first_fit(g, row_length)[2] for g in groups))


def pack_batch(arrays: dict[str, np.ndarray], row_length: int, *, prefix: str = "", parts: int = 1,
               rows: int | None = None) -> dict[str, np.ndarray]:
  """The example-layout batch `arrays` with its `{prefix}` token arrays [*lead, u] packed (see module doc).

  lead: any leading shape (a listwise group [B, G]); examples are taken in row-major order and
  `unpack` keeps the leading shape, [*lead, u]. parts: groups of examples packed apart (the
  first axis must divide by it). rows: rows per part (at least what the examples need;
  `packed_rows`), so several batches can share one shape.
  """
  ids = arrays[f"{prefix}input_ids"]
  lead, width = ids.shape[:-1], ids.shape[-1]
  if lead[0] % parts:
    raise ValueError(f"{lead[0]} examples do not split into {parts} packed parts")
  mask = arrays[f"{prefix}attention_mask"].reshape(-1, width)
  lengths = mask.sum(axis=1).astype(np.int64)
  if np.any(mask[np.arange(width)[None, :] >= lengths[:, None]]):
    raise ValueError("packing needs right-padded rows (attention_mask 1...1 0...0)")
  per_part = len(lengths) // parts
  plans = [first_fit(lengths[p * per_part:(p + 1) * per_part], row_length) for p in range(parts)]
  needed = max(plan[2] for plan in plans)
  if rows is None:
    rows = row_bucket(needed)
  elif rows < needed:
    raise ValueError(f"rows={rows} per part is fewer than the {needed} these examples need")

  fields = [f for f in TOKEN_FIELDS if f"{prefix}{f}" in arrays]
  flat = {f: arrays[f"{prefix}{f}"].reshape(-1, width) for f in fields}
  out_rows = {f: np.zeros((parts * rows, row_length), flat[f].dtype) for f in fields}
  segments = np.zeros((parts * rows, row_length), np.int32)
  unpack = np.full((len(lengths), width), -1, np.int32)
  for p, (row, offset, _) in enumerate(plans):
    segment_count = np.zeros(rows, np.int32)
    for j in range(per_part):
      i = p * per_part + j
      n, r = int(lengths[i]), p * rows + int(row[j])
      start = int(offset[j])
      for f in fields:
        out_rows[f][r, start:start + n] = flat[f][i, :n]
      segment_count[row[j]] += 1
      segments[r, start:start + n] = segment_count[row[j]]
      # Indices local to the part's rows: a micro-batch gathers from its own rows only.
      unpack[i, :n] = (int(row[j]) * row_length + start) + np.arange(n)
  out = dict(arrays)
  for f in fields:
    out[f"{prefix}{f}"] = out_rows[f]
  out[f"{prefix}segment_ids"] = segments
  out[f"{prefix}unpack"] = unpack.reshape(lead + (width,))
  return out


def pad_examples(arrays: dict[str, np.ndarray], examples: int, prefixes: tuple[str, ...], copy_tokens: bool = False
                 ) -> dict[str, np.ndarray]:
  """Packed `arrays` with their example axis (unpack and every example array) grown to `examples`:
  the added examples copy example 0's arrays and have no tokens (unpack -1), or, with copy_tokens,
  example 0's tokens too (a duplicate read from the same rows: finite outputs a weighted loss can
  multiply by 0, where an example of no tokens would max-pool to -inf)."""
  row_keys = {f"{p}{f}" for p in prefixes for f in TOKEN_FIELDS + ("segment_ids",)}
  out = {}
  for key, value in arrays.items():
    missing = examples - value.shape[0]
    if key in row_keys or missing <= 0:
      out[key] = value
    elif key.endswith("unpack") and not copy_tokens:
      out[key] = np.concatenate([value, np.full((missing,) + value.shape[1:], -1, value.dtype)])
    else:
      out[key] = np.concatenate([value, np.repeat(value[:1], missing, axis=0)])
  return out


def sequence_lengths(arrays: dict[str, np.ndarray], prefix: str) -> np.ndarray:
  """[N, ...] tokens of every `{prefix}` sequence (a listwise group has G per example)."""
  return arrays[f"{prefix}attention_mask"].sum(axis=-1).astype(np.int64)


class StepPacker:
  """Packs a training step's examples ([B, ...], or [seeds, B, ...] under vmap) into rows.

  Every seed's rows share one shape (the largest need); the row count divides by `shards` (the
  devices the batch axis is split over) and by `parts` (gradient accumulation's micro-batches,
  each packed apart). keep: the tokens per example the head reads (1 for CLS pooling), else all.
  """

  def __init__(self, row_length: int, prefixes: tuple[str, ...] = ("",), parts: int = 1, shards: int = 1,
               keep: int | None = None):
    self.row_length, self.prefixes, self.parts, self.shards, self.keep = row_length, prefixes, parts, shards, keep

  def rows_for(self, needed: int) -> int:
    """Rows per part: `needed` on the ladder, grown until parts * rows divides by shards."""
    rows = row_bucket(needed)
    while (rows * self.parts) % self.shards:
      rows += 1
    return rows

  def __call__(self, arrays: dict[str, np.ndarray], seeds: int = 1) -> dict[str, np.ndarray]:
    if seeds > 1:
      per_seed = [{k: v[s] for k, v in arrays.items()} for s in range(seeds)]
      rows = {p: max(self._needed(a, p) for a in per_seed) for p in self.prefixes}
      packed = [self._pack(a, rows) for a in per_seed]
      return {k: np.stack([p[k] for p in packed]) for k in packed[0]}
    return self._pack(arrays, {p: self._needed(arrays, p) for p in self.prefixes})

  def _needed(self, arrays, prefix: str) -> int:
    if f"{prefix}input_ids" not in arrays:
      return 0
    lengths = sequence_lengths(arrays, prefix)
    return max(first_fit(part.reshape(-1), self.row_length)[2] for part in np.array_split(lengths, self.parts))

  def _pack(self, arrays, rows: dict[str, int]) -> dict[str, np.ndarray]:
    for prefix in self.prefixes:
      if f"{prefix}input_ids" in arrays:
        arrays = pack_batch(arrays, self.row_length, prefix=prefix, parts=self.parts,
                            rows=self.rows_for(rows[prefix]))
        if self.keep is not None:
          arrays[f"{prefix}unpack"] = arrays[f"{prefix}unpack"][..., :self.keep]
    return arrays


class EvalPacker(StepPacker):
  """Evaluation batches of a fixed token budget: `rows` rows of every input (one compiled shape)
  holding up to `examples` examples, filled in length order."""

  def __init__(self, row_length: int, rows: int, examples: int, prefixes: tuple[str, ...] = ("",),
               keep: int | None = None):
    super().__init__(row_length, prefixes, keep=keep)
    self.rows, self.examples = rows, examples

  def batches(self, dataset) -> list[tuple[np.ndarray, int]]:
    """[(indices [examples], real)] in length order; padding entries repeat the first index."""
    order = np.argsort(dataset.lengths, kind="stable")
    lengths = {p: sequence_lengths(dataset.arrays, p) for p in self.prefixes if f"{p}input_ids" in dataset.arrays}
    batches = greedy_batches(order, lengths, self.row_length, self.rows, self.examples)
    return [(np.array(b + [b[0]] * (self.examples - len(b))), len(b)) for b in batches]

  def arrays(self, dataset, indices: np.ndarray, real: int) -> dict[str, np.ndarray]:
    arrays = take(dataset, indices[:real], length=dataset.arrays[dataset.token_keys[0]].shape[-1])
    packed = self._pack(arrays, {p: self.rows for p in self.prefixes})
    return pad_examples(packed, self.examples, self.prefixes)

  def rows_for(self, needed: int) -> int:
    return needed


def real_token_fraction(arrays: dict[str, np.ndarray], prefix: str = "") -> float:
  """Real tokens / row tokens of the (packed or padded) `{prefix}` rows of a batch."""
  mask = arrays[f"{prefix}attention_mask"]
  return float(mask.sum()) / max(mask.size, 1)
