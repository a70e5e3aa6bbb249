"""Sentence embeddings: one vector per line of a text file, from any bert_jax encoder.

    python -m bert_jax.embed --model=PATH --input=FILE --output=OUT.npy \
        [--pooling=mean|cls|max] [--normalize | --no-normalize] [--max_length=N] \
        [--long_inputs=truncate|chunk] [--batch_size=N] [--dtype=float32|bfloat16] [--allow_empty_lines]

PATH is a Hugging Face folder or a bert_jax checkpoint folder; the text is
tokenized with the model's own tokenizer (tokenizer.json / vocab.txt / spm.model
in PATH). OUT.npy is float32 [lines, hidden], row i for line i; it appears only
when complete (an existing file is replaced atomically, or left alone on error).

Defaults follow a sentence-transformers folder when PATH is one, flags override:
  pooling     1_Pooling/config.json (pooling_mode_{mean,cls,max}_tokens); else mean
  normalize   on if modules.json lists a Normalize module; else off
  max_length  sentence_bert_config.json max_seq_length; else min(512, position table)
Other sentence-transformers modules (Dense, ...) are refused rather than skipped.

--long_inputs: "truncate" (default) cuts each text at max_length tokens, as
sentence-transformers does. "chunk" embeds overlapping windows of a longer text
(each with the template's [CLS] / [SEP]; consecutive windows share a quarter of
their text tokens) and merges them weighted by each window's real tokens: for
mean pooling that is the mean over all window tokens; cls averages the windows'
first vectors; max takes the maximum. Normalization comes after merging.

Python: `embed_texts(path_or_(model, params, tokenizer), texts, ...)` -> float32
[len(texts), hidden]; the CLI is a thin layer over it.

Speed: texts are tokenized in one parallel call, then packed: several short
texts share one row of the batch, each in its own attention segment with its
own positions, so the model sees almost no padding. Row lengths are chosen from
the data (a cost model trades padding and attention against compilations), so
XLA compiles a handful of programs (3 for the 7,960 movie sentences on CPU),
concurrently and while earlier shapes run. The CLI keeps compiled programs in
a persistent cache (~/.cache/bert_jax/jax_cache, or $JAX_COMPILATION_CACHE_DIR;
--no-compilation_cache turns it off) so repeat runs skip compilation.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.runtime import caches, host_allocator
from bert_jax.data.batching import FINE, bucket_length
from bert_jax.convert.sentence_transformers import DEFAULT_MAX_LENGTH, POOLINGS, folder_defaults
from bert_jax.models.heads import l2_normalize

LONG_INPUTS = ("truncate", "chunk")
# Tokens (rows x length) per batch unless batch_size gives rows; bounds activation memory
# (attention is [rows, heads, l, l]). CPUs gain nothing from bigger batches and lose more
# to the padded last one; accelerators want them big.
TOKENS_PER_BATCH_CPU = 4096
TOKENS_PER_BATCH_ACCELERATOR = 16384
# A packed row holds at most length // 4 texts (the shortest text is [CLS] [SEP]).
TOKENS_PER_SEGMENT = 4
# Cost model for choosing shapes: a row of l tokens costs l * (1 + l / 512) tokens' worth
# (attention, [l, l] per head, grows with the row; measured ~+25% at l = 128 on CPU), and
# compiling one more shape costs as much as running this many tokens.
ATTENTION_COST_LENGTH = 512
COMPILE_COST_TOKENS_CPU = 3_000
COMPILE_COST_TOKENS_ACCELERATOR = 1_000_000
PROGRESS_MIN_TEXTS = 1000


class EmbedError(ValueError):
  """Bad input: the message names the file, line or setting at fault."""


@dataclasses.dataclass(frozen=True)
class Settings:
  pooling: str = "mean"           # mean | cls | max
  normalize: bool = False         # L2-normalize each output row
  max_length: int = DEFAULT_MAX_LENGTH  # tokens per sequence, special tokens included
  long_inputs: str = "truncate"   # truncate | chunk


def resolve_settings(defaults: dict[str, Any], model_max_length: int, **flags: Any) -> Settings:
  """Folder defaults overridden by the flags that are not None; checked against the model."""
  values = {**defaults, **{k: v for k, v in flags.items() if v is not None}}
  settings = Settings(**values)
  if settings.pooling not in POOLINGS:
    raise EmbedError(f"pooling={settings.pooling!r}: expected one of {POOLINGS}")
  if settings.long_inputs not in LONG_INPUTS:
    raise EmbedError(f"long_inputs={settings.long_inputs!r}: expected one of {LONG_INPUTS}")
  if settings.max_length < 3:
    raise EmbedError(f"max_length={settings.max_length}: need room for the special tokens and some text")
  if 0 <= model_max_length < settings.max_length:
    raise EmbedError(f"max_length={settings.max_length} is longer than the model's position table "
                     f"({model_max_length} tokens)")
  return settings


# -- input ------------------------------------------------------------------------


def read_lines(path: str, allow_empty: bool = False) -> list[str]:
  """The lines of a UTF-8 file (without "\\n" or "\\r\\n"), checked; EmbedError names the bad line."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise EmbedError(f"cannot read input {path}: {e.strerror or e}") from e
  if not data:
    raise EmbedError(f"input {path} is empty: expected one text per line")
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise EmbedError(f"{path}:{line}: not valid UTF-8 ({e.reason} at byte {e.start})") from e
  # Only "\n" ends a line: str.splitlines would also split on \x0b, \x1c, U+2028, ...
  lines = text.removeprefix("\ufeff").split("\n")
  if lines[-1] == "":
    lines.pop()
  lines = [line.removesuffix("\r") for line in lines]
  if not lines:
    raise EmbedError(f"input {path} is empty: expected one text per line")
  if not allow_empty:
    for number, line in enumerate(lines, 1):
      if not line.strip():
        raise EmbedError(f"{path}:{number}: empty line (every line is one text to embed; "
                         "pass --allow_empty_lines to embed it as an empty string)")
  return lines


# -- tokens -> windows ------------------------------------------------------------


@dataclasses.dataclass
class Windows:
  """Token sequences to run: one per text, or several per text when chunking.

  ids, type_ids: per window, int32 [window length] (special tokens included).
  owner: int [windows], the text each window belongs to.
  """

  ids: list[np.ndarray]
  type_ids: list[np.ndarray]
  owner: np.ndarray

  @property
  def lengths(self) -> np.ndarray:
    return np.fromiter((len(w) for w in self.ids), np.int64, len(self.ids))


def template_split(backend) -> tuple[int, int]:
  """(leading, trailing): special tokens the single-text template adds before and after the text."""
  sequence_ids = backend.encode("a").sequence_ids
  text = [i for i, s in enumerate(sequence_ids) if s is not None]
  if not text:
    raise EmbedError("the tokenizer encodes 'a' to no text token; cannot locate its special tokens")
  return text[0], len(sequence_ids) - 1 - text[-1]


def window_starts(body: int, room: int) -> list[int]:
  """Starts of windows of `room` text tokens over `body` tokens; neighbours overlap by room // 4."""
  stride = room - room // 4
  starts = [0]
  while starts[-1] + room < body:
    starts.append(starts[-1] + stride)
  return starts


def make_windows(encodings: Sequence, template: tuple[int, int], max_length: int, chunk: bool) -> Windows:
  """Cuts each encoding (with its special tokens) to max_length, or into windows when chunk.

  Truncation keeps the template's leading and trailing special tokens and drops
  text tokens from the end, as the reference tokenizers do for one text.
  """
  leading, trailing = template
  room = max_length - leading - trailing
  ids, type_ids, owner = [], [], []
  for index, encoding in enumerate(encodings):
    tokens = np.asarray(encoding.ids, np.int32)
    types = np.asarray(encoding.type_ids, np.int32)
    if len(tokens) <= max_length:
      ids.append(tokens)
      type_ids.append(types)
      owner.append(index)
      continue
    body = len(tokens) - leading - trailing
    for start in window_starts(body, room) if chunk else [0]:
      keep = np.r_[0:leading, leading + start:leading + min(start + room, body), len(tokens) - trailing:len(tokens)]
      ids.append(tokens[keep])
      type_ids.append(types[keep])
      owner.append(index)
  return Windows(ids, type_ids, np.asarray(owner, np.int64))


def tokenize(tokenizer, texts: Sequence[str], max_length: int, chunk: bool) -> Windows:
  """All texts in one call to the (parallel, Rust) backend, then truncated or windowed."""
  backend = tokenizer.backend
  # encode_batch_fast skips character offsets, which embedding does not need.
  encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
  return make_windows(encode(list(texts), add_special_tokens=True), template_split(backend), max_length, chunk)


# -- batches ----------------------------------------------------------------------


def pack_rows(lengths: np.ndarray, row_length: int) -> list[list[int]]:
  """Windows packed into rows of at most row_length tokens: [rows][segments] window indices.

  Each row starts from the longest window left (alone if longer than
  row_length), adds more long ones while they fit, then fills the rest with
  the shortest: O(windows), and rows come out nearly full.
  """
  order = np.argsort(lengths, kind="stable")
  sizes = lengths[order].tolist()
  low, high, rows = 0, len(order) - 1, []
  while low <= high:
    row, room = [int(order[high])], row_length - sizes[high]
    high -= 1
    while high >= low and sizes[high] <= room and len(row) < row_length // TOKENS_PER_SEGMENT:
      row.append(int(order[high]))
      room -= sizes[high]
      high -= 1
    while low <= high and sizes[low] <= room and len(row) < row_length // TOKENS_PER_SEGMENT:
      row.append(int(order[low]))
      room -= sizes[low]
      low += 1
    rows.append(row)
  return rows


def row_lengths(lengths: np.ndarray, rows: list[list[int]], max_length: int) -> np.ndarray:
  """The padded length of each row: int [rows]."""
  return np.array([bucket_length(int(lengths[row].sum()), max_length, FINE) for row in rows], np.int64)


def row_cost(length: np.ndarray) -> np.ndarray:
  """Running a row of `length` tokens, in tokens' worth: attention grows with the row."""
  return length * (1 + length / ATTENTION_COST_LENGTH)


def merge_rare_lengths(padded: np.ndarray, compile_cost: float) -> np.ndarray:
  """Pads the rows of a length up to the next longer one where that costs less than compiling it.

  padded: int [rows]. Returns the new padded lengths [rows], fewer distinct values.
  """
  padded = padded.copy()
  lengths = np.unique(padded)
  for shorter, longer in zip(lengths[:-1], lengths[1:]):
    rows = padded == shorter
    if rows.sum() * (row_cost(longer) - row_cost(shorter)) < compile_cost:
      padded[rows] = longer
  return padded


def plan_cost(lengths: np.ndarray, row_length: int, max_length: int, compile_cost: float) -> float:
  """Estimated cost of packing into rows of row_length, in token units (see choose_row_length)."""
  padded = merge_rare_lengths(row_lengths(lengths, pack_rows(lengths, row_length), max_length), compile_cost)
  return float(np.sum(row_cost(padded))) + compile_cost * len(np.unique(padded))


def choose_row_length(lengths: np.ndarray, max_length: int, compile_cost: float) -> int:
  """The packing row length that minimizes padded tokens (attention weighted) plus compilation.

  Longer rows waste less at their end but pay for attention across the
  whole row; every distinct padded length is one more program to compile.
  Decided on an evenly spaced sample of at most 2048 windows.
  """
  sample = np.sort(lengths)[np.linspace(0, len(lengths) - 1, min(len(lengths), 2048)).astype(np.int64)]
  scale = len(lengths) / len(sample)
  candidates = sorted({bucket_length(n, max_length, FINE) for n in range(16, min(max_length, 256) + 1)})
  return min(candidates, key=lambda n: plan_cost(sample, n, max_length, compile_cost / scale))


@dataclasses.dataclass(frozen=True)
class Batch:
  windows: np.ndarray      # int [rows, segments]: the window in each segment of each row; -1 = none
  shape: tuple[int, int]   # (rows, length) the batch is padded to


def plan_batches(lengths: np.ndarray, max_length: int, rows_per_batch: int | None, *, tokens_per_batch: int,
                 compile_cost: float, pack: bool = True) -> list[Batch]:
  """Windows into batches of a few static shapes.

  Windows share rows (each in its own segment) of `choose_row_length`
  tokens; a longer window gets a row to itself. Without pack (DeBERTa-v2's
  convolution would see the neighbouring texts) every window is alone in its
  row. Rows are padded to `bucket_length`; each padded length is one shape
  (rows_per_batch, or tokens_per_batch // length, at most the rows there are
  rounded up to a power of two).
  """
  row_length = choose_row_length(lengths, max_length, compile_cost) if pack else 0
  rows = pack_rows(lengths, row_length) if pack else [[int(w)] for w in np.argsort(-lengths, kind="stable")]
  padded = merge_rare_lengths(row_lengths(lengths, rows, max_length), compile_cost)
  segments = max(len(row) for row in rows)
  batches = []
  for length in sorted(set(padded.tolist()), reverse=True):
    members = [row for row, n in zip(rows, padded) if n == length]
    size = rows_per_batch or max(1, tokens_per_batch // length)
    size = min(size, 1 << (len(members) - 1).bit_length())
    for i in range(0, len(members), size):
      windows = np.full((size, segments), -1, np.int64)
      for r, row in enumerate(members[i:i + size]):
        windows[r, :len(row)] = row
      batches.append(Batch(windows, (size, length)))
  return batches


def pack(windows: Windows, batch: Batch, pad_id: int, position_offset: int) -> tuple[np.ndarray, ...]:
  """Model inputs, int32 [rows, length] each, right-padded.

  input_ids (pad_id after the last segment), segment_ids (1, 2, ... per
  window; 0 = padding), position_ids (restart at position_offset in each
  segment), token_type_ids.
  """
  ids = np.full(batch.shape, pad_id, np.int32)
  segments = np.zeros(batch.shape, np.int32)
  positions = np.full(batch.shape, position_offset, np.int32)
  types = np.zeros(batch.shape, np.int32)
  for row, row_windows in enumerate(batch.windows):
    start = 0
    for segment, window in enumerate(row_windows[row_windows >= 0], 1):
      n = len(windows.ids[window])
      ids[row, start:start + n] = windows.ids[window]
      types[row, start:start + n] = windows.type_ids[window]
      segments[row, start:start + n] = segment
      positions[row, start:start + n] = np.arange(position_offset, position_offset + n)
      start += n
  return ids, segments, positions, types


# -- compute ----------------------------------------------------------------------


def pool_segments(hidden: jax.Array, segment_ids: jax.Array, num_segments: int, pooling: str) -> jax.Array:
  """hidden [b, l, H], segment_ids [b, l] (1..S; 0 = padding) -> [b, S, H] (empty segments: junk)."""
  batch, length, width = hidden.shape
  hidden = hidden.astype(jnp.float32)
  if pooling == "max":
    flat = jnp.where(segment_ids > 0, segment_ids - 1 + num_segments * jnp.arange(batch)[:, None], batch * num_segments)
    pooled = jax.ops.segment_max(hidden.reshape(-1, width), flat.reshape(-1), batch * num_segments + 1)
    return pooled[:-1].reshape(batch, num_segments, width)
  member = (segment_ids[:, None, :] == jnp.arange(1, num_segments + 1)[None, :, None]).astype(jnp.float32)
  if pooling == "cls":
    member = member * (jnp.cumsum(member, axis=-1) == 1)  # the first token of each segment
  else:
    member = member / jnp.maximum(jnp.sum(member, axis=-1, keepdims=True), 1.0)
  # HIGHEST: accelerators would otherwise round this weighted sum to bf16/tf32 precision.
  return jnp.einsum("bsl,blh->bsh", member, hidden, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("model", "pooling", "normalize", "num_segments"))
def embed_batch(params, input_ids, segment_ids, position_ids, token_type_ids, *, model, pooling: str,
                normalize: bool, num_segments: int):
  """Encoder, pooling and normalization in one program: int32 [b, l] x4 -> float32 [b, S, H].

  Segments attend only to themselves and restart their positions, so each
  gets the vector it would get alone in a row.
  """
  if model.config.position_ids == "none":
    position_ids = None
  hidden = model.apply({"params": params}, input_ids, attention_mask=(segment_ids > 0).astype(jnp.int32),
                       token_type_ids=token_type_ids, position_ids=position_ids,
                       segment_ids=segment_ids).last_hidden_state
  pooled = pool_segments(hidden, segment_ids, num_segments, pooling)
  return l2_normalize(pooled) if normalize else pooled


class Progress:
  """"embedded 3,200/7,960 texts (410/s, ETA 12s)" on stderr, rewritten in place."""

  def __init__(self, total: int, owner: np.ndarray, enabled: bool):
    self.total, self.owner, self.enabled, self.done = total, owner, enabled, 0
    self.pending = np.bincount(owner, minlength=total) if enabled else None
    self.start = self.last = time.perf_counter()

  def update(self, windows: np.ndarray) -> None:
    """windows: int [n], the windows just finished."""
    if not self.enabled:
      return
    # A text is done when its last window is; several windows of a text may share a batch.
    texts = self.owner[windows]
    np.subtract.at(self.pending, texts, 1)
    self.done += int(np.count_nonzero(self.pending[np.unique(texts)] == 0))
    now = time.perf_counter()
    if now - self.last > 0.5 or self.done == self.total:
      self.last = now
      rate = self.done / max(now - self.start, 1e-9)
      eta = (self.total - self.done) / rate if rate else float("inf")
      sys.stderr.write(f"\rembedded {self.done:,}/{self.total:,} texts ({rate:,.0f}/s, ETA {eta:.0f}s)   ")
      sys.stderr.flush()

  def close(self) -> None:
    if self.enabled:
      sys.stderr.write("\n")


def run_batches(model, params, windows: Windows, batches: list[Batch], pad_id: int, pooling: str,
                normalize: bool, progress: Progress) -> np.ndarray:
  """float32 [windows, H]: every batch through `embed_batch`.

  Each shape is compiled in a thread pool as soon as the plan is known, so
  compilation overlaps with running the shapes before it. Results are
  fetched one batch late, keeping the device busy while the host packs.
  """
  cfg = model.config
  position_offset = cfg.pad_token_id + 1 if cfg.position_ids == "roberta" else 0
  num_segments = batches[0].windows.shape[1]
  shapes = list(dict.fromkeys(b.shape for b in batches))

  def compile_shape(shape):
    spec = jax.ShapeDtypeStruct(shape, jnp.int32)
    return embed_batch.lower(params, spec, spec, spec, spec, model=model, pooling=pooling, normalize=normalize,
                             num_segments=num_segments).compile()

  out = np.zeros((len(windows.ids), cfg.hidden_size), np.float32)
  with concurrent.futures.ThreadPoolExecutor(max(1, min(len(shapes), os.cpu_count() or 1))) as pool:
    programs = {shape: pool.submit(compile_shape, shape) for shape in shapes}
    in_flight = None
    for batch in batches:
      result = programs[batch.shape].result()(params, *pack(windows, batch, pad_id, position_offset))
      if in_flight is not None:
        _store(out, *in_flight, progress)
      in_flight = (batch, result)
    if in_flight is not None:
      _store(out, *in_flight, progress)
  return out


def _store(out: np.ndarray, batch: Batch, result: jax.Array, progress: Progress) -> None:
  used = batch.windows >= 0
  out[batch.windows[used]] = np.asarray(result)[used]
  progress.update(batch.windows[used])


def merge_windows(vectors: np.ndarray, windows: Windows, num_texts: int, pooling: str) -> np.ndarray:
  """[windows, H] -> [texts, H]; a text with one window keeps its vector bit for bit.

  mean / cls: mean of the window vectors weighted by each window's real tokens
  (for mean pooling that is the exact mean over all window tokens); max: maximum.
  """
  counts = np.bincount(windows.owner, minlength=num_texts)
  out = np.zeros((num_texts, vectors.shape[1]), np.float32)
  single = counts[windows.owner] == 1
  out[windows.owner[single]] = vectors[single]
  multi = ~single
  owner = windows.owner[multi]
  if pooling == "max":
    out[np.unique(owner)] = -np.inf
    np.maximum.at(out, owner, vectors[multi])
    return out
  weights = windows.lengths[multi].astype(np.float64)
  totals = np.zeros((num_texts, vectors.shape[1]))
  np.add.at(totals, owner, vectors[multi] * weights[:, None])
  texts = np.unique(owner)
  out[texts] = totals[texts] / np.bincount(owner, weights, minlength=num_texts)[texts, None]
  return out


def normalize_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  """As heads.l2_normalize, on the host (after windows are merged)."""
  return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)).astype(np.float32)


# -- public API -------------------------------------------------------------------


def load(path: str, dtype: str | None = None):
  """(model, params, tokenizer) of a model folder, the tokenizer checked against the vocabulary."""
  from bert_jax.data.tokenizers import check_fits, load_tokenizer
  from bert_jax.convert.pretrained import from_pretrained
  tokenizer = load_tokenizer(path)
  model, params = from_pretrained(path, **({"dtype": dtype} if dtype else {}))
  check_fits(tokenizer, model.config.vocab_size)
  return model, params, tokenizer


def embed_texts(model, texts: Sequence[str], *, pooling: str | None = None, normalize: bool | None = None,
                max_length: int | None = None, long_inputs: str = "truncate",
                batch_size: int | None = None, dtype: str | None = None,
                progress: bool = False) -> np.ndarray:
  """Embeds texts -> float32 [len(texts), hidden], row i for texts[i].

  model: a model folder (its sentence-transformers settings become the
    defaults, see the module docstring) or a (model, params, tokenizer) tuple
    (defaults: mean pooling, no normalization, max_length min(512, positions)).
  pooling / normalize / max_length: None = the default above.
  long_inputs: "truncate" or "chunk" (see the module docstring).
  dtype: compute dtype override ("bfloat16") when model is a folder.
  progress: a progress line on stderr.
  """
  if isinstance(model, (str, os.PathLike)):
    path = os.fspath(model)
    model, params, tokenizer = load(path, dtype)
    defaults = folder_defaults(path, model.config.max_length)
  else:
    model, params, tokenizer = model
    defaults = folder_defaults(None, model.config.max_length)
  settings = resolve_settings(defaults, model.config.max_length, pooling=pooling, normalize=normalize,
                              max_length=max_length, long_inputs=long_inputs)
  return _embed(model, params, tokenizer, list(texts), settings, batch_size, progress)


def _embed(model, params, tokenizer, texts: list[str], settings: Settings, batch_size: int | None,
           progress: bool) -> np.ndarray:
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"texts[{i}] must be str, got {type(text).__name__}")
  if batch_size is not None and batch_size < 1:
    raise EmbedError(f"batch_size={batch_size}: must be >= 1")
  if not texts:
    return np.zeros((0, model.config.hidden_size), np.float32)
  windows = tokenize(tokenizer, texts, settings.max_length, settings.long_inputs == "chunk")
  merged = len(windows.ids) > len(texts)
  pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else model.config.pad_token_id
  cpu = jax.default_backend() == "cpu"
  # DeBERTa-v2's convolution sees neighbouring tokens, which packing would make other texts.
  batches = plan_batches(windows.lengths, settings.max_length, batch_size,
                         tokens_per_batch=TOKENS_PER_BATCH_CPU if cpu else TOKENS_PER_BATCH_ACCELERATOR,
                         compile_cost=COMPILE_COST_TOKENS_CPU if cpu else COMPILE_COST_TOKENS_ACCELERATOR,
                         pack=not model.config.conv_kernel_size)
  meter = Progress(len(texts), windows.owner, progress)
  # Windows are normalized after merging, so the program normalizes only when nothing merges.
  vectors = run_batches(model, params, windows, batches, pad_id, settings.pooling,
                        settings.normalize and not merged, meter)
  meter.close()
  if not merged:
    return vectors
  vectors = merge_windows(vectors, windows, len(texts), settings.pooling)
  return normalize_rows(vectors) if settings.normalize else vectors


# -- output and CLI ---------------------------------------------------------------


def save_npy(path: str, array: np.ndarray) -> None:
  """np.save to a temporary file beside `path`, renamed over it only when complete."""
  folder = os.path.dirname(os.path.abspath(path))
  handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(handle, "wb") as f:
      np.save(f, array)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m bert_jax.embed", description=__doc__.split("\n")[0])
  parser.add_argument("--model", required=True, help="Hugging Face or bert_jax model folder")
  parser.add_argument("--input", required=True, help="UTF-8 text file, one text per line")
  parser.add_argument("--output", required=True, help=".npy file to write: float32 [lines, hidden]")
  parser.add_argument("--pooling", choices=POOLINGS, default=None, help="default: the folder's, else mean")
  parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                      help="L2-normalize rows (default: on if modules.json has Normalize)")
  parser.add_argument("--max_length", type=int, default=None,
                      help="tokens per sequence (default: max_seq_length, else min(512, position table))")
  parser.add_argument("--long_inputs", choices=LONG_INPUTS, default="truncate")
  parser.add_argument("--batch_size", type=int, default=None,
                      help="rows per batch (a row packs several short texts); default: ~4096 tokens per batch "
                           "on CPU, ~16384 on accelerators")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="compute dtype")
  parser.add_argument("--allow_empty_lines", action="store_true", help="embed empty lines as empty strings")
  parser.add_argument("--compilation_cache", action=argparse.BooleanOptionalAction, default=True,
                      help=f"keep compiled programs in {caches.path('jax_cache')}")
  return parser


def main(argv: Sequence[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  try:
    run(args)
  except (EmbedError, FileNotFoundError, ValueError, KeyError) as e:
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    raise SystemExit(f"bert_jax.embed: error: {message}") from e


def run(args: argparse.Namespace) -> None:
  """Checks everything that can be checked before the model is loaded, then embeds and writes."""
  if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
    raise EmbedError(f"--output {args.output}: folder {os.path.dirname(os.path.abspath(args.output))} does not exist")
  if not os.path.isdir(args.model):
    raise EmbedError(f"--model {args.model}: not a folder")
  texts = read_lines(args.input, args.allow_empty_lines)
  if args.compilation_cache:
    caches.enable_compilation_cache()
  model, params, tokenizer = load(args.model, args.dtype)
  settings = resolve_settings(folder_defaults(args.model, model.config.max_length), model.config.max_length,
                              pooling=args.pooling, normalize=args.normalize, max_length=args.max_length,
                              long_inputs=args.long_inputs)
  show = len(texts) > PROGRESS_MIN_TEXTS or sys.stderr.isatty()
  vectors = _embed(model, params, tokenizer, texts, settings, args.batch_size, show)
  save_npy(args.output, vectors)
