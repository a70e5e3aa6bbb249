"""Running the encoder: batches packed into arrays, one jitted program per shape, windows merged per text.

`embed_texts` is the Python entry point (a model folder or a loaded
(model, params, tokenizer) -> float32 [texts, hidden]); `embed_with_settings`
is the same once the settings are resolved, which the CLI calls.

Every device runs: the rows of each batch are split over a data-parallel mesh
of all devices of all processes (`sharding.data_parallel_mesh`), the params
replicated. Every process tokenizes all texts and makes the same plan (the
programs of a multi-process run must match), but packs, runs and fetches only
the rows of its own devices; the window vectors are gathered at the end, so
every process returns the whole [texts, hidden] in text order.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import sharding
from bert_jax.embed.planning import (COMPILE_COST_TOKENS_ACCELERATOR, COMPILE_COST_TOKENS_CPU,
                                     TOKENS_PER_BATCH_ACCELERATOR, TOKENS_PER_BATCH_CPU, Batch, plan_batches)
from bert_jax.embed.settings import EmbedError, Settings, folder_settings, resolve_settings
from bert_jax.embed.windows import Windows, tokenize
from bert_jax.models.heads import l2_normalize


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


def pool_segments(hidden: jax.Array, segment_ids: jax.Array, num_segments: int, pooling: str) -> jax.Array:
  """hidden [b, l, H], segment_ids [b, l] (1..S; 0 = padding) -> [b, S, H] (empty segments: junk)."""
  hidden = hidden.astype(jnp.float32)
  if pooling == "max":
    # Row by row (a scatter with a batch dimension): a scatter over the flattened batch would make
    # the partitioner all-reduce across the devices the rows are split over.
    def row_max(row_hidden, row_segments):  # [l, H], [l] -> [S, H]; segment 0 is the padding
      return jax.ops.segment_max(row_hidden, row_segments, num_segments + 1)[1:]
    return jax.vmap(row_max)(hidden, segment_ids)
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
  """"embedded 3,200/7,960 texts (410/s, ETA 12s)" on stderr, rewritten in place.

  share: int [n], the windows this process runs when there are several processes (None: all).
  The line then counts the texts of that share, which tracks the whole run: each process holds
  a block of rows of every batch.
  """

  def __init__(self, total: int, owner: np.ndarray, enabled: bool, share: np.ndarray | None = None):
    self.owner, self.enabled, self.done = owner, enabled, 0
    self.pending = np.bincount(owner if share is None else owner[share], minlength=total) if enabled else None
    self.total = total if share is None or not enabled else int(np.count_nonzero(self.pending))
    self.label = "" if share is None else f" on process {jax.process_index()} of {jax.process_count()} (its share)"
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
      sys.stderr.write(f"\rembedded {self.done:,}/{self.total:,} texts{self.label} "
                       f"({rate:,.0f}/s, ETA {eta:.0f}s)   ")
      sys.stderr.flush()

  def close(self) -> None:
    if self.enabled:
      sys.stderr.write("\n")


def pad_rows(batch: Batch, multiple: int) -> Batch:
  """`batch` with empty rows added up to a multiple of `multiple` rows (the devices it is split over)."""
  rows = -(-batch.shape[0] // multiple) * multiple
  if rows == batch.shape[0]:
    return batch
  windows = np.full((rows, batch.windows.shape[1]), -1, np.int64)
  windows[:batch.shape[0]] = batch.windows
  return Batch(windows, (rows, batch.shape[1]))


def local_windows(batches: list[Batch], mesh) -> np.ndarray:
  """int [n]: the windows whose rows this process's devices hold, over all (padded) batches."""
  out = [batch.windows[start:stop] for batch in batches
         for start, stop in dict.fromkeys(sharding.local_row_blocks(batch.shape[0], mesh).values())]
  out = np.concatenate([w.reshape(-1) for w in out]) if out else np.zeros(0, np.int64)
  return out[out >= 0]


def run_batches(model, params, windows: Windows, batches: list[Batch], pad_id: int, pooling: str,
                normalize: bool, progress: Progress, mesh=None) -> np.ndarray:
  """float32 [windows, H] on every process: every batch through `embed_batch`, its rows split over `mesh`.

  mesh: default every device of every process (`sharding.data_parallel_mesh`); a
  batch whose rows do not split evenly over it gets empty rows. Each shape is
  compiled in a thread pool as soon as the plan is known, so compilation
  overlaps with running the shapes before it. Results are fetched one batch
  late, keeping the devices busy while the host packs.
  """
  cfg = model.config
  mesh = mesh if mesh is not None else sharding.data_parallel_mesh()
  batches = [pad_rows(b, sharding.batch_shards(mesh)) for b in batches]
  params = sharding.replicate(params, mesh)
  rows_sharding = jax.sharding.NamedSharding(mesh, sharding.BATCH_SPEC)
  position_offset = cfg.pad_token_id + 1 if cfg.position_ids == "roberta" else 0
  num_segments = batches[0].windows.shape[1]
  shapes = list(dict.fromkeys(b.shape for b in batches))

  def compile_shape(shape):
    spec = jax.ShapeDtypeStruct(shape, jnp.int32, sharding=rows_sharding)
    return embed_batch.lower(params, spec, spec, spec, spec, model=model, pooling=pooling, normalize=normalize,
                             num_segments=num_segments).compile()

  def inputs(batch: Batch) -> tuple[jax.Array, ...]:
    # Each process packs only the rows of its own devices.
    def build(start, stop):
      return pack(windows, Batch(batch.windows[start:stop], (stop - start, batch.shape[1])), pad_id, position_offset)
    return sharding.shard_rows(build, batch.shape[0], mesh)

  done_windows, done_vectors = [], []

  def store(batch: Batch, result: jax.Array) -> None:
    for start, block in sharding.local_rows(result):
      rows = batch.windows[start:start + len(block)]
      used = rows >= 0
      done_windows.append(rows[used])
      done_vectors.append(block[used])
      progress.update(rows[used])

  with concurrent.futures.ThreadPoolExecutor(max(1, min(len(shapes), os.cpu_count() or 1))) as pool:
    programs = {shape: pool.submit(compile_shape, shape) for shape in shapes}
    in_flight = None
    for batch in batches:
      result = programs[batch.shape].result()(params, *inputs(batch))
      if in_flight is not None:
        store(*in_flight)
      in_flight = (batch, result)
    if in_flight is not None:
      store(*in_flight)
  rows = np.concatenate(done_windows) if done_windows else np.zeros(0, np.int64)
  vectors = np.concatenate(done_vectors) if done_vectors else np.zeros((0, cfg.hidden_size), np.float32)
  return sharding.gather_rows(vectors.astype(np.float32, copy=False), rows, len(windows.ids))


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


# -- entry points -----------------------------------------------------------------


def load(path: str, dtype: str | None = None):
  """(model, params, tokenizer) of a model folder, the tokenizer checked against the vocabulary.

  The params are placed on every device once here, so repeated calls with the
  loaded tuple (a search index embedding queries) do not copy them again.
  """
  from bert_jax.data.tokenizers import check_fits, load_tokenizer
  from bert_jax.convert.pretrained import from_pretrained
  tokenizer = load_tokenizer(path)
  model, params = from_pretrained(path, **({"dtype": dtype} if dtype else {}))
  check_fits(tokenizer, model.config.vocab_size)
  return model, sharding.replicate(params, sharding.data_parallel_mesh()), tokenizer


def embed_texts(model, texts: Sequence[str], *, pooling: str | None = None, normalize: bool | None = None,
                max_length: int | None = None, long_inputs: str = "truncate",
                batch_size: int | None = None, dtype: str | None = None,
                progress: bool = False) -> np.ndarray:
  """Embeds texts -> float32 [len(texts), hidden] (or the last Dense module's width), row i for texts[i].

  model: a model folder (its sentence-transformers settings and Dense modules become the
    defaults, see the bert_jax.embed docstring) or a (model, params, tokenizer)
    tuple (defaults: mean pooling, no normalization, max_length min(512, positions)).
  pooling / normalize / max_length: None = the default above.
  long_inputs: "truncate" or "chunk" (see the bert_jax.embed docstring).
  dtype: compute dtype override ("bfloat16") when model is a folder.
  progress: a progress line on stderr (process 0's, with several processes).
  Batches are split over every device of every process; each process gets the whole result.
  """
  if isinstance(model, (str, os.PathLike)):
    path = os.fspath(model)
    model, params, tokenizer = load(path, dtype)
    defaults = folder_settings(path, model.config.max_length)
  else:
    model, params, tokenizer = model
    defaults = folder_settings(None, model.config.max_length)
  settings = resolve_settings(defaults, model.config.max_length, model.config.hidden_size, pooling=pooling,
                              normalize=normalize, max_length=max_length, long_inputs=long_inputs)
  return embed_with_settings(model, params, tokenizer, list(texts), settings, batch_size, progress)


def embed_with_settings(model, params, tokenizer, texts: list[str], settings: Settings, batch_size: int | None,
                        progress: bool) -> np.ndarray:
  """`embed_texts` of a loaded model with settings already resolved: float32 [len(texts), hidden or Dense width].

  Per text: pooling (windows merged), then the settings' Dense modules, then normalization, as
  sentence-transformers runs Pooling -> Dense -> Normalize.
  """
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"texts[{i}] must be str, got {type(text).__name__}")
  if batch_size is not None and batch_size < 1:
    raise EmbedError(f"batch_size={batch_size}: must be >= 1")
  if not texts:
    return np.zeros((0, settings.dense[-1].out_features if settings.dense else model.config.hidden_size), np.float32)
  windows = tokenize(tokenizer, texts, settings.max_length, settings.long_inputs == "chunk")
  merged = len(windows.ids) > len(texts)
  pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else model.config.pad_token_id
  cpu = jax.default_backend() == "cpu"
  mesh = sharding.data_parallel_mesh()
  shards = sharding.batch_shards(mesh)
  # The token budget is per device: a batch grows with the devices it is split over.
  # DeBERTa-v2's convolution sees neighbouring tokens, which packing would make other texts.
  batches = plan_batches(windows.lengths, settings.max_length, batch_size,
                         tokens_per_batch=shards * (TOKENS_PER_BATCH_CPU if cpu else TOKENS_PER_BATCH_ACCELERATOR),
                         compile_cost=COMPILE_COST_TOKENS_CPU if cpu else COMPILE_COST_TOKENS_ACCELERATOR,
                         pack=not model.config.conv_kernel_size, row_multiple=shards)
  # One progress line per run: process 0's.
  share = local_windows(batches, mesh) if jax.process_count() > 1 else None
  meter = Progress(len(texts), windows.owner, progress and jax.process_index() == 0, share)
  # Normalization comes after merging the windows and after the Dense modules: the program
  # normalizes only when there is neither.
  on_device = settings.normalize and not merged and not settings.dense
  vectors = run_batches(model, params, windows, batches, pad_id, settings.pooling, on_device, meter, mesh)
  meter.close()
  if merged:
    vectors = merge_windows(vectors, windows, len(texts), settings.pooling)
  for dense in settings.dense:  # [texts, in] -> [texts, out]: a host matmul, small beside the encoder
    vectors = dense(vectors)
  return normalize_rows(vectors) if settings.normalize and not on_device else vectors
