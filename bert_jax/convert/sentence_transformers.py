"""The sentence-transformers folder format, read and written in one place.

A sentence-transformers model folder is a Hugging Face (or bert_jax) model folder plus:

    modules.json                 the pipeline: Transformer -> Pooling [-> Normalize]
    1_Pooling/config.json        which pooling (pooling_mode_cls_token / _mean_tokens / _max_tokens,
                                 or pooling_mode by name in newer versions)
    2_Normalize/                 present when the embeddings are L2-normalised
    sentence_bert_config.json    max_seq_length: the tokens each text is cut to

`folder_defaults` reads what such a folder asks for (what `bert_jax.embed`, search and
contrastive fine-tuning use by default); `write_modules` writes the files so a fine-tuned
bert_jax folder embeds the same way in bert_jax and in sentence-transformers. A module or
pooling mode that bert_jax does not implement is refused, never approximated.
"""

from __future__ import annotations

import json
import os
from typing import Any

from bert_jax.models.heads import POOLING

POOLINGS = tuple(POOLING)  # cls, mean, max
DEFAULT_MAX_LENGTH = 512   # tokens per text when the folder does not say
KNOWN_MODULES = ("Transformer", "Pooling", "Normalize")


class SentenceTransformersError(ValueError):
  """A sentence-transformers file that bert_jax cannot read or does not implement; names the file."""


def is_folder(path: str) -> bool:
  """Whether `path` carries sentence-transformers module files."""
  return os.path.isfile(os.path.join(path, "modules.json")) or os.path.isdir(os.path.join(path, "1_Pooling"))


def _read_json(path: str) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise SentenceTransformersError(f"{path}: not valid JSON ({e})") from e


def read_pooling(path: str) -> str:
  """1_Pooling/config.json -> "mean" | "cls" | "max"; other modes are refused, not approximated."""
  config = _read_json(path)
  if isinstance(config.get("pooling_mode"), str):  # newer sentence-transformers write the mode by name
    modes = [config["pooling_mode"]]
  else:
    modes = [m for m in ("cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken")
             if config.get(f"pooling_mode_{m}_tokens") or config.get(f"pooling_mode_{m}_token")]
  if len(modes) != 1 or modes[0] not in POOLINGS:
    raise SentenceTransformersError(f"{path}: pooling modes {modes} are not supported; expected exactly one of "
                                    f"{POOLINGS} (or pass --pooling)")
  return modes[0]


def folder_defaults(path: str | None, model_max_length: int) -> dict[str, Any]:
  """{"pooling", "normalize", "max_length"} that a folder asks for (plain defaults when it has no module files).

  path: the model folder, or None for the plain defaults (mean pooling, no normalisation).
  model_max_length: the position table's limit (-1 = none), which caps the default length.
  """
  defaults: dict[str, Any] = {"pooling": "mean", "normalize": False,
                              "max_length": DEFAULT_MAX_LENGTH if model_max_length < 0
                              else min(DEFAULT_MAX_LENGTH, model_max_length)}
  if path is None:
    return defaults
  modules_file = os.path.join(path, "modules.json")
  modules = _read_json(modules_file) if os.path.isfile(modules_file) else []
  for module in modules:
    kind = str(module.get("type", "")).rsplit(".", 1)[-1]
    if kind not in KNOWN_MODULES:
      raise SentenceTransformersError(
          f"{modules_file}: module {module.get('type')!r} is not supported by bert_jax (only "
          f"{', '.join(KNOWN_MODULES)}); its output would differ from sentence-transformers")
    if kind == "Pooling":
      defaults["pooling"] = read_pooling(os.path.join(path, module.get("path", ""), "config.json"))
    defaults["normalize"] |= kind == "Normalize"
  pooling_file = os.path.join(path, "1_Pooling", "config.json")
  if not modules and os.path.isfile(pooling_file):
    defaults["pooling"] = read_pooling(pooling_file)
  st_file = os.path.join(path, "sentence_bert_config.json")
  max_seq_length = _read_json(st_file).get("max_seq_length") if os.path.isfile(st_file) else None
  tokenizer_file = os.path.join(path, "tokenizer_config.json")
  if max_seq_length is None and modules and os.path.isfile(tokenizer_file):
    # sentence-transformers 6 keeps the length as the tokenizer's model_max_length instead; older
    # tokenizers write a huge sentinel there (1e30), which means "no limit" and is not a length.
    limit = _read_json(tokenizer_file).get("model_max_length")
    if isinstance(limit, int) and 0 < limit < 1_000_000:
      max_seq_length = limit if model_max_length < 0 else min(limit, model_max_length)
  if isinstance(max_seq_length, int) and max_seq_length > 0:
    defaults["max_length"] = max_seq_length
  return defaults


def write_modules(path: str, pooling: str, *, normalize: bool, max_length: int, hidden_size: int | None = None
                  ) -> None:
  """Writes the module files of Transformer -> Pooling(pooling) [-> Normalize] into the model folder `path`."""
  if pooling not in POOLINGS:
    raise ValueError(f"pooling={pooling!r}: expected one of {POOLINGS}")
  modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
  if normalize:
    modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
  os.makedirs(os.path.join(path, "1_Pooling"), exist_ok=True)
  with open(os.path.join(path, "modules.json"), "w") as f:
    json.dump(modules, f, indent=2)
  pooling_config = {f"pooling_mode_{m}_tokens" if m != "cls" else "pooling_mode_cls_token": m == pooling
                    for m in ("cls", "mean", "max")}
  if hidden_size:
    pooling_config["word_embedding_dimension"] = hidden_size
  with open(os.path.join(path, "1_Pooling", "config.json"), "w") as f:
    json.dump(pooling_config, f, indent=2)
  if normalize:
    os.makedirs(os.path.join(path, "2_Normalize"), exist_ok=True)
  with open(os.path.join(path, "sentence_bert_config.json"), "w") as f:
    json.dump({"max_seq_length": max_length, "do_lower_case": False}, f, indent=2)
