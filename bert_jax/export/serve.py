"""Serve a bert_jax export folder with jax, numpy and tokenizers only (this file is copied into each folder).

    import serve                                   # or python serve.py [FOLDER] < texts.txt
    model = serve.load("path/to/folder")
    model(["a text", "another"])                   # embed: float32 [B, D], as bert_jax.embed gives them
    model(["good film", ("a premise", "its hypothesis")])
        # classify: {"logits" [B, C], "probabilities" [B, C], "labels" [B]} (regression: "scores" [B])
    model(["Jane lives in Paris", ["pre", "split", "words"]])
        # tag: {"logits": [tokens_i, C] per text, "tokens", "words", "tags": one tag per word}
    model.run(input_ids, attention_mask, token_type_ids)   # the exported function on int32 [B, L] arrays

Texts are tokenized with the folder's tokenizer.json (special tokens added, truncated to
max_length unless truncate=False, which raises instead), right-padded to the batch's longest
sequence rounded up to `length_multiple` (capped at max_length): the exported function has
symbolic batch and length, and each new concrete shape compiles once (a folder exported at
fixed bucket lengths pads up to the next one). `run` never truncates: arrays longer than
max_length raise.

Tagging: a text is split on whitespace into words (or given as a list of words) and the words
joined with single spaces; a word's tag is read at its first sub-token, as bert_jax's `tag`
task labels them. Words cut off by truncation get the tag None (bert_jax's own `tag`
evaluation reads a sentence longer than max_length in overlapping windows; this loader does not).

The command reads one text per line (classify: a tab separates a pair), prints one JSON
object per line, and takes --batch_size, --no_truncate.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

FORMAT = "bert_jax.export"
VENDOR_DIR = "_vendor"  # the flatbuffers runtime that jax.export's deserializer imports
FORMAT_VERSION = 1  # of manifest.json; a folder of another version needs the serve.py it shipped with
MANIFEST_FILE = "manifest.json"

# safetensors dtype names -> numpy dtypes (BF16 through ml_dtypes, which jax ships).
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": jnp.bfloat16, "I32": np.int32,
                       "I64": np.int64}


class ServingError(ValueError):
  """A folder or an input that cannot be served; the message names the folder and the limit or value at fault."""


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """name -> array of a .safetensors file: a little-endian u64 header size, a JSON header, raw data."""
  with open(path, "rb") as f:
    data = f.read()
  (size,) = struct.unpack("<Q", data[:8])
  header = json.loads(data[8:8 + size])
  body = memoryview(data)[8 + size:]
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _SAFETENSORS_DTYPES:
      raise ServingError(f"{path}: tensor {name} has dtype {info['dtype']}, "
                         f"expected one of {list(_SAFETENSORS_DTYPES)}")
    begin, end = info["data_offsets"]
    out[name] = np.frombuffer(body[begin:end], _SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
  return out


def read_manifest(folder: str) -> dict:
  """The folder's manifest.json, checked for the format and the version this loader reads."""
  path = os.path.join(folder, MANIFEST_FILE)
  if not os.path.isfile(path):
    raise ServingError(f"{folder}: no {MANIFEST_FILE}; not a bert_jax export folder (python -m bert_jax.export)")
  with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
  if manifest.get("format") != FORMAT:
    raise ServingError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
  found = manifest.get("format_version")
  if found != FORMAT_VERSION:
    raise ServingError(f"{folder}: manifest format_version {found}, but this loader reads format_version "
                       f"{FORMAT_VERSION}; use the serve.py in that folder or export the model again")
  return manifest


def word_starts(words: list[str]) -> tuple[str, list[int]]:
  """The space-joined text and each word's first character offset."""
  starts, position = [], 0
  for word in words:
    starts.append(position)
    position += len(word) + 1
  return " ".join(words), starts


def first_subtokens(offsets, special, starts: list[int]) -> np.ndarray:
  """[tokens] int: the index of the word a token starts, or -1 (special token, later sub-token of a word).

  bert_jax.tasks.finetune.tagging's rule, word for word: a token belongs to the last word that
  starts before it ends (SentencePiece and byte-level BPE tokens, "▁lives", "Ġlives", may
  begin at the space before their word).
  """
  out = np.full(len(offsets), -1, np.int32)
  seen, word = set(), 0
  for t, ((begin, end), is_special) in enumerate(zip(offsets, special)):
    if is_special or end <= begin:
      continue
    while word + 1 < len(starts) and starts[word + 1] < end:
      word += 1
    if word not in seen:
      seen.add(word)
      out[t] = word
  return out


class Model:
  """An export folder loaded: the deserialized function, its parameters on device, the tokenizer."""

  def __init__(self, folder: str, manifest: dict, params: list, tokenizer: tokenizers.Tokenizer,
               length_multiple: int):
    self.folder, self.manifest, self.length_multiple = folder, manifest, max(1, int(length_multiple))
    self.task = manifest["task"]
    self.max_length = int(manifest["max_length"])
    self.labels = list(manifest.get("labels", []))
    self.pad_id = int(manifest["special_tokens"]["pad_id"])
    self._params = params
    # length -> function file: None is the one symbolic-length function, else fixed bucket lengths.
    self._files = {f["length"]: os.path.join(folder, f["file"]) for f in manifest["functions"]}
    self._calls = {}
    for path in self._files.values():
      if not os.path.isfile(path):
        raise ServingError(f"{folder}: {os.path.basename(path)} is missing (manifest.json lists it)")
    tokenizer.no_padding()
    tokenizer.no_truncation()
    self._tokenizer = tokenizer
    self._truncating = tokenizers.Tokenizer.from_str(tokenizer.to_str())
    self._truncating.enable_truncation(self.max_length, strategy=manifest["special_tokens"]["truncation"])

  def __repr__(self) -> str:
    return f"Model(task={self.task!r}, max_length={self.max_length}, folder={self.folder!r})"

  # -- arrays -----------------------------------------------------------------

  def run(self, input_ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
    """The exported function on int [B, L] arrays (L <= max_length; mask default all ones, types zeros)."""
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2 or not np.issubdtype(input_ids.dtype, np.integer):
      raise ServingError(f"input_ids must be an integer array [batch, length], got {input_ids.dtype} {input_ids.shape}")
    if input_ids.shape[1] > self.max_length:
      raise ServingError(f"{self.folder}: inputs of length {input_ids.shape[1]} exceed max_length={self.max_length} "
                         "this model was exported for")
    vocab = int(self.manifest["vocab_size"])
    if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= vocab):
      raise ServingError(f"input_ids must lie in [0, {vocab}), got [{input_ids.min()}, {input_ids.max()}]")
    arrays = [input_ids,
              np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask),
              np.zeros_like(input_ids) if token_type_ids is None else np.asarray(token_type_ids)]
    for name, array in zip(self.manifest["inputs"], arrays):
      if array.shape != input_ids.shape:
        raise ServingError(f"{name['name']} has shape {array.shape}, input_ids {input_ids.shape}")
    length = input_ids.shape[1]
    bucket, call = self._function(length)
    if bucket is not None and bucket > length:  # a fixed-length function: pad up to its length
      fill = (self.pad_id, 0, 0)
      arrays = [np.pad(a, ((0, 0), (0, bucket - length)), constant_values=v) for a, v in zip(arrays, fill)]
    out = np.asarray(call(self._params, *(a.astype(np.int32) for a in arrays)))
    return out[:, :length] if out.ndim == 3 else out

  def _function(self, length: int):
    """(its length or None, jitted call) of the function that takes [B, length] inputs."""
    key = None if None in self._files else min(n for n in self._files if n >= length)
    if key not in self._calls:
      _ensure_flatbuffers(self.folder)
      with open(self._files[key], "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
      self._calls[key] = jax.jit(exported.call)  # one compiled program per concrete [batch, length]
    return key, self._calls[key]

  # -- text -------------------------------------------------------------------

  def encode(self, inputs, truncate: bool = True):
    """Texts (or (text, pair) tuples) -> (encodings, input_ids, attention_mask, token_type_ids [B, L])."""
    encoder = self._truncating if truncate else self._tokenizer
    encodings = encoder.encode_batch(list(inputs), add_special_tokens=True)
    longest = max((len(e.ids) for e in encodings), default=1)
    if longest > self.max_length:
      index = next(i for i, e in enumerate(encodings) if len(e.ids) == longest)
      raise ServingError(f"input {index} has {longest} tokens, more than max_length={self.max_length} of "
                         f"{self.folder} (truncate=True cuts it)")
    length = min(-(-longest // self.length_multiple) * self.length_multiple, self.max_length)
    ids = np.full((len(encodings), length), self.pad_id, np.int32)
    mask = np.zeros((len(encodings), length), np.int32)
    types = np.zeros((len(encodings), length), np.int32)
    for row, e in enumerate(encodings):
      ids[row, :len(e.ids)], mask[row, :len(e.ids)], types[row, :len(e.ids)] = e.ids, 1, e.type_ids
    return encodings, ids, mask, types

  def __call__(self, inputs, *, truncate: bool = True, batch_size: int | None = None):
    """The task's outputs for texts, pairs (classify) or word lists (tag); see the module docstring."""
    if isinstance(inputs, (str, tuple)):
      raise TypeError("pass a list of inputs, e.g. model([text])")
    inputs = list(inputs)
    step = batch_size or max(len(inputs), 1)
    parts = [self._batch(inputs[i:i + step], truncate) for i in range(0, len(inputs), step)]
    parts = parts or [self._batch([], truncate)]
    if self.task == "embed":
      return np.concatenate(parts)
    if self.task == "classify":
      return {k: np.concatenate([p[k] for p in parts]) if k != "labels" else sum((p[k] for p in parts), [])
              for k in parts[0]}
    return {k: sum((p[k] for p in parts), []) for k in parts[0]}

  def _batch(self, inputs: list, truncate: bool):
    if self.task == "tag":
      return self._tag(inputs, truncate)
    for i, item in enumerate(inputs):
      pair = self.task == "classify" and isinstance(item, (tuple, list)) and len(item) == 2
      if not (isinstance(item, str) or (pair and all(isinstance(t, str) for t in item))):
        raise TypeError(f"inputs[{i}] must be str{' or a (text, pair) tuple' if self.task == 'classify' else ''}, "
                        f"got {item!r:.80}")
    inputs = [tuple(item) if isinstance(item, list) else item for item in inputs]
    if not inputs:
      width = int(self.manifest["outputs"][0]["shape"][-1])
      empty = np.zeros((0, width), np.float32)
      return empty if self.task == "embed" else _classes(empty, self)
    _, ids, mask, types = self.encode(inputs, truncate)
    out = self.run(ids, mask, types)
    return out if self.task == "embed" else _classes(out, self)

  def _tag(self, inputs: list, truncate: bool) -> dict:
    words = []
    for i, item in enumerate(inputs):
      if isinstance(item, str):
        words.append(item.split())
      elif isinstance(item, (list, tuple)) and all(isinstance(w, str) and w.split() == [w] for w in item):
        words.append(list(item))
      else:
        raise TypeError(f"inputs[{i}] must be a text or a list of words, got {item!r:.80}")
    texts, starts = zip(*(word_starts(w) for w in words)) if words else ((), ())
    if not texts:
      return {"logits": [], "tokens": [], "words": [], "tags": []}
    encodings, ids, mask, types = self.encode(texts, truncate)
    logits = self.run(ids, mask, types)
    tags = []
    for row, (encoding, row_words, row_starts) in enumerate(zip(encodings, words, starts)):
      first = first_subtokens(encoding.offsets, encoding.special_tokens_mask, row_starts)
      row_tags = [None] * len(row_words)
      for t in np.flatnonzero(first >= 0):
        row_tags[first[t]] = self.labels[int(np.argmax(logits[row, t]))]
      tags.append(row_tags)
    return {"logits": [logits[row, :len(e.ids)] for row, e in enumerate(encodings)],
            "tokens": [list(e.tokens) for e in encodings], "words": words, "tags": tags}


def _classes(logits: np.ndarray, model: Model) -> dict:
  """Logits [B, C] -> the problem type's readings: probabilities and label names, or scores."""
  problem = model.manifest.get("problem_type")
  if problem == "regression":
    return {"logits": logits, "scores": logits[:, 0]}
  if problem == "multi_label_classification":
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    return {"logits": logits, "probabilities": probabilities,
            "labels": [[model.labels[c] for c in np.flatnonzero(row > 0.5)] for row in probabilities]}
  shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
  probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
  return {"logits": logits, "probabilities": probabilities,
          "labels": [model.labels[int(c)] for c in np.argmax(logits, axis=-1)]}


def _ensure_flatbuffers(folder: str) -> None:
  """jax.export.deserialize imports `flatbuffers`, which jax does not install: use the folder's copy then."""
  try:
    import flatbuffers  # noqa: F401
  except ImportError:
    sys.path.append(os.path.join(folder, VENDOR_DIR))


def load(folder: str, *, length_multiple: int = 16) -> Model:
  """The export folder `folder` ready to call; length_multiple: padded lengths are rounded up to it."""
  folder = os.path.abspath(os.fspath(folder))
  manifest = read_manifest(folder)
  platform = jax.export.default_export_platform()
  if platform not in manifest["platforms"]:
    raise ServingError(f"{folder} was exported for platforms {manifest['platforms']}, this process runs on "
                       f"{platform!r}; export again with --platforms={','.join(manifest['platforms'] + [platform])}")
  stored = read_safetensors(os.path.join(folder, manifest["files"]["params"]))
  missing = [n for n in manifest["param_names"] if n not in stored]
  if missing:
    raise ServingError(f"{folder}: {manifest['files']['params']} lacks parameters {missing[:5]}")
  params = [jax.device_put(stored[n]) for n in manifest["param_names"]]
  tokenizer = tokenizers.Tokenizer.from_file(os.path.join(folder, manifest["files"]["tokenizer"]))
  model = Model(folder, manifest, params, tokenizer, length_multiple)
  model._function(1)  # deserializes the (first) function now: a corrupt file fails here, not on first use
  return model


def _json_rows(model: Model, outputs) -> list[dict]:
  if model.task == "embed":
    return [{"embedding": row.tolist()} for row in outputs]
  if model.task == "classify":
    if "scores" in outputs:
      return [{"score": float(s), "logits": l.tolist()} for s, l in zip(outputs["scores"], outputs["logits"])]
    return [{"label": label, "probabilities": dict(zip(model.labels, p.tolist())), "logits": l.tolist()}
            for label, p, l in zip(outputs["labels"], outputs["probabilities"], outputs["logits"])]
  return [{"words": w, "tags": t} for w, t in zip(outputs["words"], outputs["tags"])]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="one text per line on stdin -> one JSON object per line on stdout")
  parser.add_argument("folder", nargs="?", default=os.path.dirname(os.path.abspath(__file__)))
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--no_truncate", action="store_true", help="raise on texts longer than max_length")
  args = parser.parse_args(argv)
  try:
    model = load(args.folder)
    lines = [line.rstrip("\n").rstrip("\r") for line in sys.stdin]
    inputs = [tuple(line.split("\t", 1)) if model.task == "classify" and "\t" in line else line for line in lines]
    for start in range(0, len(inputs), args.batch_size):
      outputs = model(inputs[start:start + args.batch_size], truncate=not args.no_truncate)
      for row in _json_rows(model, outputs):
        print(json.dumps(row, ensure_ascii=False))
  except ServingError as e:
    raise SystemExit(f"serve.py: error: {e}") from e


if __name__ == "__main__":
  main()
