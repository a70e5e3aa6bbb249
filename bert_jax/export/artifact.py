"""Writing an export folder: the model loaded as bert_jax loads it, exported, saved beside its loader.

    manifest = export_model("path/to/model", "path/to/export", task="embed")

The folder (replaced only once complete):

    manifest.json        what the loader needs and a reader should know (FORMAT_VERSION, task,
                         inputs, outputs, labels, max_length, dtypes, pooling, special tokens, platforms)
    model.jaxexport      the inference function (`serving_fn`), jax.export-serialized StableHLO;
                         model.l{N}.jaxexport per bucket length N instead for a model that does
                         not trace at a symbolic length (manifest "functions" lists them)
    params.safetensors   its parameters, the function's first input, in manifest["param_names"] order
    tokenizer.json       the Rust tokenizer bert_jax tokenizes with (the `tokenizers` library's format)
    serve.py             the standalone loader (`bert_jax.export.serve`, copied as it is)
    _vendor/flatbuffers  the pure-Python runtime jax.export's deserializer needs (jax does not
                         install it), used by serve.py only where it is missing

The tokenizer is the one `load_tokenizer` built for the folder, saved whole: from vocab.txt,
vocab.json + merges.txt or a SentencePiece model it is assembled here, and a folder's own
tokenizer.json gets the special tokens bert_jax registers on it, so the copy is the one
bert_jax's outputs came from.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from bert_jax.convert.pretrained import META_FILE, detect_hf_head, from_pretrained, read_hf_config, read_hf_state
from bert_jax.embed.encoding import embed_with_settings
from bert_jax.embed.settings import Settings, folder_settings, resolve_settings
from bert_jax.export import serve, serving_fn
from bert_jax.runtime import fileio

FILES = {"params": "params.safetensors", "tokenizer": "tokenizer.json", "loader": "serve.py"}
PARAM_DTYPES = ("float32", "bfloat16")
# Sentences the written folder is checked on against bert_jax in-process (a long one is truncated).
CHECK_TEXTS = ("The quick brown fox jumps over the lazy dog.", "Hello world",
               " ".join(["Export the model once, serve it anywhere."] * 40))
# Largest difference the check accepts: float32 reorderings, or bfloat16 rounding (which only a gross
# error such as a parameter in the wrong slot exceeds).
CHECK_TOLERANCE = {"float32": 1e-5, "bfloat16": 0.1}


class ExportError(ValueError):
  """Bad export input: the message names the folder, flag or value at fault."""


def detect_task(path: str) -> str:
  """The task a model folder is for: its saved head (bert_jax) or architectures (Hugging Face); else embed."""
  meta_file = os.path.join(path, META_FILE)
  if os.path.isfile(meta_file):
    with open(meta_file) as f:
      head = json.load(f).get("head")
  elif os.path.isfile(os.path.join(path, "config.json")):
    head = detect_hf_head(read_hf_state(path), read_hf_config(path).get("architectures") or ())
  else:
    raise ExportError(f"--model {path}: neither {META_FILE} (bert_jax) nor config.json (Hugging Face) found")
  tasks = {h: t for t, h in serving_fn.TASK_HEADS.items()}
  return tasks.get(head, "embed")


def load(path: str, task: str, dtype: str | None):
  """(model, params, tokenizer) as bert_jax loads them for `task`; ExportError names a folder that does not load."""
  from bert_jax.data.tokenizers import check_fits, load_tokenizer
  try:
    tokenizer = load_tokenizer(path)
    model, params = from_pretrained(path, head=serving_fn.TASK_HEADS[task], **({"dtype": dtype} if dtype else {}))
    check_fits(tokenizer, model.config.vocab_size)
  except (FileNotFoundError, ValueError, KeyError) as e:
    raise ExportError(f"--model {path}: cannot load it for task={task}: {e.args[0] if e.args else e}") from e
  return model, params, tokenizer


def labels_of(path: str, cfg) -> tuple[list[str], str]:
  """(label names in id order, problem type) of a task head: the config's, a fine-tuned folder's, or LABEL_i."""
  finetune = {}
  if os.path.isfile(os.path.join(path, META_FILE)):
    with open(os.path.join(path, META_FILE)) as f:
      finetune = json.load(f).get("finetune", {})
  names = (list(cfg.label_names) or list(finetune.get("label_names") or [])
           or [f"LABEL_{i}" for i in range(cfg.num_labels)])
  if len(names) != cfg.num_labels:
    raise ExportError(f"{path}: {len(names)} label names {names} for a head of {cfg.num_labels} outputs")
  # Hugging Face reads one output without a problem type as regression; bert_jax's `regress` saves one output.
  regression = finetune.get("task") == "regress" or (not cfg.problem_type and cfg.num_labels == 1)
  return names, cfg.problem_type or ("regression" if regression else "single_label_classification")


def function_file(length: int | None) -> str:
  return "model.jaxexport" if length is None else f"model.l{length}.jaxexport"


def manifest_for(task: str, model, tokenizer, names: list[str], settings: Settings, *, dtype: str,
                 param_dtype: str, platforms: Sequence[str], labels: tuple[list[str], str] | None,
                 source: str, lengths: Sequence[int | None], fixed_length_reason: str) -> dict[str, Any]:
  """manifest.json's content (see the package docstring for each field's meaning)."""
  import bert_jax
  cfg = model.config
  width = cfg.num_labels
  if task == "embed":
    width = settings.dense[-1].out_features if settings.dense else cfg.hidden_size
  outputs = {
      "embed": {"name": "embeddings", "shape": ["batch", width],
                "semantics": f"{settings.pooling} pooling over the tokens"
                             + "".join(f", Dense {d.in_features}->{d.out_features} ({d.activation})"
                                       for d in settings.dense)
                             + (", L2-normalized" if settings.normalize else "") + " (as bert_jax.embed)"},
      "classify": {"name": "logits", "shape": ["batch", width],
                   "semantics": "classification logits, one per label (softmax: probabilities; "
                                "multi-label: sigmoid; regression: the score)"},
      "tag": {"name": "logits", "shape": ["batch", "length", width],
              "semantics": "per-token label logits; a word's tag is read at its first sub-token"},
  }[task]
  specials = {role: tokenizer.specials.content(role) for role in ("pad", "cls", "sep", "unk", "mask")}
  manifest = {
      "format": serve.FORMAT, "format_version": serve.FORMAT_VERSION,
      "bert_jax_version": bert_jax.__version__, "jax_version": jax.__version__,
      "source": os.path.abspath(source), "task": task, "family": cfg.family, "vocab_size": cfg.vocab_size,
      "max_length": settings.max_length, "dtype": dtype, "param_dtype": param_dtype,
      "platforms": list(platforms), "files": FILES,
      # length None: symbolic, any length <= max_length; else this exact length (pad up to it).
      "functions": [{"file": function_file(n), "length": n} for n in lengths],
      **({"fixed_length_reason": fixed_length_reason} if fixed_length_reason else {}),
      "inputs": [
          {"name": "input_ids", "dtype": "int32", "shape": ["batch", "length"],
           "semantics": "token ids with the template's special tokens, right-padded with pad_id"},
          {"name": "attention_mask", "dtype": "int32", "shape": ["batch", "length"],
           "semantics": "1 = token, 0 = padding"},
          {"name": "token_type_ids", "dtype": "int32", "shape": ["batch", "length"],
           "semantics": "0 = first text (and padding), 1 = pair text"},
      ],
      "outputs": [{**outputs, "dtype": "float32"}],
      "param_names": names,
      "special_tokens": {
          **specials, "pad_id": tokenizer.pad_id if tokenizer.pad_id is not None else cfg.pad_token_id,
          "added_by": "tokenizer.json's post-processor (add_special_tokens=True)",
          "per_text": tokenizer.num_special_tokens(False), "per_pair": tokenizer.num_special_tokens(True),
          "truncation": "longest_first", "padding": "right",
      },
  }
  if task == "embed":
    manifest["embed"] = {"pooling": settings.pooling, "normalize": settings.normalize, "long_inputs": "truncate",
                         "dense": [{"in_features": d.in_features, "out_features": d.out_features,
                                    "activation": d.activation} for d in settings.dense]}
  else:
    manifest["labels"], manifest["problem_type"] = labels
  return manifest


def check_folder(folder: str, task: str, model, params, tokenizer, settings: Settings, tolerance: float) -> float:
  """Largest |difference| between the folder served by serve.py and bert_jax in-process on CHECK_TEXTS."""
  served = serve.load(folder)
  texts = list(CHECK_TEXTS)
  if task == "embed":
    ours = served(texts)
    reference = embed_with_settings(model, params, tokenizer, texts, settings, None, False)
  else:
    out = served(texts)
    arrays = tokenizer.batch(texts, max_length=settings.max_length, pad_to="longest")
    apply = jax.jit(lambda p, ids, mask, types: model.apply({"params": p}, ids, attention_mask=mask,
                                                            token_type_ids=types).logits)
    reference = np.asarray(apply(params, arrays["input_ids"], arrays["attention_mask"], arrays["token_type_ids"]))
    if task == "tag":  # per text [tokens, C] -> the same padded [B, L, C] as the reference
      ours = np.zeros_like(reference)
      for row, logits in enumerate(out["logits"]):
        ours[row, :len(logits)] = logits
      reference = reference * arrays["attention_mask"][..., None]
    else:
      ours = out["logits"]
  difference = float(np.max(np.abs(np.asarray(ours) - reference)))
  if not difference <= tolerance:
    raise ExportError(f"{folder}: the exported model differs from bert_jax in-process by {difference:.3g} "
                      f"(more than {tolerance:g}) on {len(texts)} check texts")
  return difference


def _prepare_out(out: str) -> None:
  """Refuses to replace a folder that is not an earlier export (or empty)."""
  if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, serve.MANIFEST_FILE)):
    raise ExportError(f"--out {out}: exists and is not an export folder (no {serve.MANIFEST_FILE}); "
                      "refusing to replace it")
  if os.path.exists(out) and not os.path.isdir(out):
    raise ExportError(f"--out {out}: exists and is not a folder")
  parent = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(parent):
    raise ExportError(f"--out {out}: folder {parent} does not exist")


def _settings(model_dir: str, task: str, cfg, **flags) -> Settings:
  """bert_jax.embed's settings for the folder and flags (for classify / tag only max_length counts)."""
  try:
    # The folder's sentence-transformers modules (pooling, Dense, Normalize) belong to embed alone.
    defaults = folder_settings(model_dir if task == "embed" else None, cfg.max_length)
    if task != "embed":
      flags = {"max_length": flags["max_length"]}
    return resolve_settings(defaults, cfg.max_length, cfg.hidden_size, **flags)
  except ValueError as e:  # EmbedError, SentenceTransformersError
    raise ExportError(f"--model {model_dir}: {e}") from e


def export_model(model_dir: str, out: str, *, task: str | None = None, dtype: str | None = None,
                 param_dtype: str = "float32", max_length: int | None = None, platforms: Sequence[str] = ("cpu",),
                 pooling: str | None = None, normalize: bool | None = None, check: bool = True) -> dict[str, Any]:
  """Exports `model_dir` for serving into the folder `out`; returns the manifest (plus "check_difference").

  task: embed | classify | tag (None: the folder's head decides, see detect_task).
  dtype: compute dtype (None: the model's own); param_dtype: how params.safetensors stores them.
  max_length, pooling, normalize: as bert_jax.embed takes them (defaults: the folder's
    sentence-transformers settings; max_length min(512, the position table) otherwise).
  check: serve the written folder and compare it with bert_jax in-process (CHECK_TEXTS) before
    it replaces `out`; skipped when this host's platform is not among `platforms`.
  """
  model_dir = os.fspath(model_dir)
  if not os.path.isdir(model_dir):
    raise ExportError(f"--model {model_dir}: not a folder")
  if param_dtype not in PARAM_DTYPES:
    raise ExportError(f"param_dtype={param_dtype!r}: expected one of {PARAM_DTYPES}")
  try:
    serving_fn.check_platforms(platforms)
  except ValueError as e:
    raise ExportError(f"--platforms={','.join(platforms)}: {e}") from e
  _prepare_out(out)
  task = task or detect_task(model_dir)
  if task not in serving_fn.TASK_HEADS:
    raise ExportError(f"--task={task!r}: expected one of {tuple(serving_fn.TASK_HEADS)}")
  model, params, tokenizer = load(model_dir, task, dtype)
  cfg = model.config
  settings = _settings(model_dir, task, cfg, max_length=max_length, pooling=pooling, normalize=normalize)
  names, leaves, treedef = serving_fn.flatten_params(serving_fn.serving_params(params, settings.dense))
  stored = [leaf.astype(jax.numpy.dtype(param_dtype)) if leaf.dtype == np.float32 else leaf for leaf in leaves]
  fn = serving_fn.inference_function(model, task, treedef, pooling=settings.pooling, normalize=settings.normalize,
                                     dense_activations=[d.activation for d in settings.dense])
  functions, reason = serving_fn.export_functions(fn, stored, max_length=settings.max_length, platforms=platforms)
  labels = None if task == "embed" else labels_of(model_dir, cfg)
  manifest = manifest_for(task, model, tokenizer, names, settings, dtype=cfg.dtype, param_dtype=param_dtype,
                          platforms=platforms, labels=labels, source=model_dir, lengths=list(functions),
                          fixed_length_reason=reason)
  tmp = os.path.join(os.path.dirname(os.path.abspath(out)), f".{os.path.basename(os.path.abspath(out))}.tmp-"
                     f"{uuid.uuid4().hex[:8]}")
  os.makedirs(tmp)
  try:
    _write(tmp, manifest, {function_file(n): f.serialize() for n, f in functions.items()}, dict(zip(names, stored)),
           tokenizer)
    if check and jax.export.default_export_platform() in platforms:
      tolerance = CHECK_TOLERANCE["float32" if cfg.dtype == param_dtype == "float32" else "bfloat16"]
      manifest["check_difference"] = check_folder(tmp, task, model, params, tokenizer, settings, tolerance)
    fileio.replace_folder(tmp, os.path.abspath(out))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return manifest


def _write(folder: str, manifest: dict, functions: dict[str, bytes], params: dict[str, np.ndarray],
           tokenizer) -> None:
  from safetensors.numpy import save
  for name, blob in functions.items():
    with open(os.path.join(folder, name), "wb") as f:
      f.write(blob)
  with open(os.path.join(folder, FILES["params"]), "wb") as f:
    f.write(save(params))
  tokenizer.backend.save(os.path.join(folder, FILES["tokenizer"]))
  shutil.copyfile(serve.__file__, os.path.join(folder, FILES["loader"]))
  _vendor_flatbuffers(folder)
  with open(os.path.join(folder, serve.MANIFEST_FILE), "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2, ensure_ascii=False)
    f.write("\n")


def _vendor_flatbuffers(folder: str) -> None:
  """A copy of the pure-Python `flatbuffers` runtime (Apache-2.0) in folder/_vendor.

  jax.export's deserializer imports it and jax does not depend on it, so a serving
  environment with only jax, numpy and tokenizers would fail to load the function; serve.py
  puts _vendor on sys.path only when `import flatbuffers` fails.
  """
  import importlib.metadata
  import flatbuffers
  source = os.path.dirname(flatbuffers.__file__)
  target = os.path.join(folder, serve.VENDOR_DIR, "flatbuffers")
  shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  try:
    dist = importlib.metadata.distribution("flatbuffers")
    notice = [f for f in (dist.files or ()) if "LICENSE" in f.name.upper()]
    text = notice[0].read_text() if notice else f"flatbuffers {dist.version}: Apache License 2.0\n"
  except importlib.metadata.PackageNotFoundError:
    text = "flatbuffers: Apache License 2.0\n"
  with open(os.path.join(target, "LICENSE"), "w", encoding="utf-8") as f:
    f.write(text)
