"""The sentence-transformers folder format, read and written in one place.

A sentence-transformers model folder is a Hugging Face (or bert_jax) model folder plus:

    modules.json                 the pipeline: Transformer -> Pooling [-> Dense ...] [-> Normalize]
    1_Pooling/config.json        which pooling (pooling_mode_cls_token / _mean_tokens / _max_tokens,
                                 or pooling_mode by name in newer versions)
    2_Dense/                     a linear map of the pooled vector (config.json: in_features,
                                 out_features, bias, activation_function; model.safetensors:
                                 linear.weight [out, in], linear.bias [out]), e.g. into another
                                 encoder's space (the `align` task)
    2_Normalize/                 present when the embeddings are L2-normalised (3_Normalize after a Dense)
    sentence_bert_config.json    max_seq_length: the tokens each text is cut to

`folder_defaults` reads what such a folder asks for (what `bert_jax.embed`, search and
contrastive fine-tuning use by default); `dense_modules` reads its Dense modules, which only
`bert_jax.embed` applies (other callers refuse a folder that has them); `write_modules`
writes the files so a fine-tuned bert_jax folder embeds the same way in bert_jax and in
sentence-transformers. A module, pooling mode or activation that bert_jax does not implement
is refused, never approximated.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bert_jax.models.heads import POOLING

POOLINGS = tuple(POOLING)  # cls, mean, max
DEFAULT_MAX_LENGTH = 512   # tokens per text when the folder does not say


def default_max_length(model_max_length: int) -> int:
  """Tokens per text when nothing says: DEFAULT_MAX_LENGTH, capped by the position table (-1 = none)."""
  return DEFAULT_MAX_LENGTH if model_max_length < 0 else min(DEFAULT_MAX_LENGTH, model_max_length)
KNOWN_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
# Dense activations by torch class name, and the import path config.json writes for each.
ACTIVATIONS = {"Identity": lambda x: x, "Tanh": np.tanh, "ReLU": lambda x: np.maximum(x, 0)}
ACTIVATION_PATHS = {"Identity": "torch.nn.modules.linear.Identity", "Tanh": "torch.nn.modules.activation.Tanh",
                    "ReLU": "torch.nn.modules.activation.ReLU"}


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


def _module_kinds(modules_file: str, modules: list) -> list[str]:
  """The class name of each module of modules.json, checked: known, and in an order bert_jax runs
  (Transformer, Pooling, Dense modules, Normalize), so nothing is applied out of turn."""
  kinds = [str(module.get("type", "")).rsplit(".", 1)[-1] for module in modules]
  for module, kind in zip(modules, kinds):
    if kind not in KNOWN_MODULES:
      raise SentenceTransformersError(
          f"{modules_file}: module {module.get('type')!r} is not supported by bert_jax (only "
          f"{', '.join(KNOWN_MODULES)}); its output would differ from sentence-transformers")
  order = [KNOWN_MODULES.index(kind) for kind in kinds]
  if order != sorted(order) or kinds.count("Pooling") > 1 or kinds.count("Normalize") > 1 or (
      "Dense" in kinds and "Pooling" not in kinds):
    raise SentenceTransformersError(
        f"{modules_file}: modules {kinds}: expected Transformer -> Pooling [-> Dense ...] [-> Normalize]")
  return kinds


def folder_defaults(path: str | None, model_max_length: int, *, dense: bool = False) -> dict[str, Any]:
  """{"pooling", "normalize", "max_length"} that a folder asks for (plain defaults when it has no module files).

  path: the model folder, or None for the plain defaults (mean pooling, no normalisation).
  model_max_length: the position table's limit (-1 = none), which caps the default length.
  dense: whether the caller applies the folder's Dense modules (`dense_modules`) between pooling and
    normalisation; else a folder with Dense modules is refused.
  """
  defaults: dict[str, Any] = {"pooling": "mean", "normalize": False,
                              "max_length": default_max_length(model_max_length)}
  if path is None:
    return defaults
  modules_file = os.path.join(path, "modules.json")
  modules = _read_json(modules_file) if os.path.isfile(modules_file) else []
  kinds = _module_kinds(modules_file, modules)
  if "Dense" in kinds and not dense:
    raise SentenceTransformersError(
        f"{modules_file}: module Dense (a projection after pooling) is applied only by bert_jax.embed; used "
        "here its output would differ from sentence-transformers")
  for module, kind in zip(modules, kinds):
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


def write_modules(path: str, pooling: str, *, normalize: bool, max_length: int, hidden_size: int | None = None,
                  dense: Sequence[tuple[np.ndarray, np.ndarray | None, str]] = ()) -> None:
  """Writes the module files of Transformer -> Pooling(pooling) [-> Dense ...] [-> Normalize] into the model
  folder `path`; dense: (weight [out, in], bias [out] or None, activation) of each Dense module, in order."""
  if pooling not in POOLINGS:
    raise ValueError(f"pooling={pooling!r}: expected one of {POOLINGS}")
  modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
  for weight, bias, activation in dense:
    folder = f"{len(modules)}_Dense"
    write_dense(os.path.join(path, folder), weight, bias, activation)
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": folder,
                    "type": "sentence_transformers.models.Dense"})
  if normalize:
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": f"{len(modules)}_Normalize",
                    "type": "sentence_transformers.models.Normalize"})
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
    os.makedirs(os.path.join(path, modules[-1]["path"]), exist_ok=True)
  with open(os.path.join(path, "sentence_bert_config.json"), "w") as f:
    json.dump({"max_seq_length": max_length, "do_lower_case": False}, f, indent=2)


# Dense modules -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class DenseModule:
  """sentence-transformers' Dense: [n, in_features] -> activation(x @ weight.T + bias) [n, out_features].

  folder: the module's folder (named in messages); weight: float32 [out, in]; bias: float32 [out] or
  None; activation: a key of ACTIVATIONS (torch's class name).
  """

  folder: str
  weight: np.ndarray
  bias: np.ndarray | None
  activation: str

  @property
  def in_features(self) -> int:
    return int(self.weight.shape[1])

  @property
  def out_features(self) -> int:
    return int(self.weight.shape[0])

  def __call__(self, x: np.ndarray) -> np.ndarray:
    y = np.asarray(x, np.float32) @ self.weight.T
    if self.bias is not None:
      y = y + self.bias
    return ACTIVATIONS[self.activation](y).astype(np.float32)


def _activation_name(config_file: str, path: str | None) -> str:
  """"Identity" / "Tanh" / "ReLU" from config.json's activation_function (absent: Tanh, Dense's default)."""
  if path is None:
    return "Tanh"
  name = str(path).rsplit(".", 1)[-1]
  if not str(path).startswith("torch.nn.") or name not in ACTIVATIONS:
    raise SentenceTransformersError(
        f"{config_file}: activation_function {path!r} is not supported by bert_jax; expected one of "
        f"{sorted(ACTIVATION_PATHS.values())}")
  return name


def read_dense(folder: str) -> DenseModule:
  """One Dense module folder: config.json and its weights (model.safetensors, or pytorch_model.bin with torch)."""
  from bert_jax.convert.pretrained import read_hf_state  # the model loader; imported here, where it is needed
  config_file = os.path.join(folder, "config.json")
  if not os.path.isfile(config_file):
    raise SentenceTransformersError(f"{config_file}: missing (a Dense module needs in_features, out_features, "
                                    "bias, activation_function)")
  config = _read_json(config_file)
  for key in ("in_features", "out_features"):
    if not isinstance(config.get(key), int) or config[key] < 1:
      raise SentenceTransformersError(f"{config_file}: expected {key} to be a positive integer, "
                                      f"found {config.get(key)!r}")
  if config.get("use_residual"):
    raise SentenceTransformersError(f"{config_file}: use_residual is not supported by bert_jax")
  for key in ("module_input_name", "module_output_name"):
    if config.get(key) not in (None, "sentence_embedding"):
      raise SentenceTransformersError(f"{config_file}: {key}={config[key]!r} is not supported by bert_jax "
                                      "(expected the sentence embedding)")
  activation = _activation_name(config_file, config.get("activation_function"))
  state = read_hf_state(folder)
  shape = (config["out_features"], config["in_features"])
  weight = state.get("linear.weight")
  if weight is None or tuple(weight.shape) != shape:
    raise SentenceTransformersError(f"{folder}: expected linear.weight of shape {shape} (out, in), "
                                    f"found {None if weight is None else tuple(weight.shape)}")
  bias = state.get("linear.bias")
  if config.get("bias", True) != (bias is not None) or (bias is not None and tuple(bias.shape) != shape[:1]):
    raise SentenceTransformersError(f"{folder}: config.json says bias={config.get('bias', True)}, expected "
                                    f"linear.bias of shape {shape[:1]} accordingly, found "
                                    f"{None if bias is None else tuple(bias.shape)}")
  return DenseModule(folder, np.asarray(weight, np.float32),
                     None if bias is None else np.asarray(bias, np.float32), activation)


def dense_modules(path: str | None) -> tuple[DenseModule, ...]:
  """The Dense modules of a sentence-transformers folder, in the order they run (() for none / no folder);
  consecutive ones are checked to chain (out_features -> in_features)."""
  modules_file = os.path.join(path or "", "modules.json")
  if path is None or not os.path.isfile(modules_file):
    return ()
  modules = _read_json(modules_file)
  out = tuple(read_dense(os.path.join(path, module.get("path", ""))) for module, kind
              in zip(modules, _module_kinds(modules_file, modules)) if kind == "Dense")
  for before, after in zip(out, out[1:]):
    if before.out_features != after.in_features:
      raise SentenceTransformersError(f"{after.folder}: in_features {after.in_features}, but the Dense module "
                                      f"before it gives {before.out_features}")
  return out


def write_dense(folder: str, weight: np.ndarray, bias: np.ndarray | None, activation: str = "Identity") -> None:
  """Writes a Dense module folder: weight [out, in] (torch's Linear layout), bias [out] or None."""
  from safetensors.numpy import save_file
  if activation not in ACTIVATION_PATHS:
    raise ValueError(f"activation={activation!r}: expected one of {sorted(ACTIVATION_PATHS)}")
  weight = np.ascontiguousarray(weight, np.float32)
  os.makedirs(folder, exist_ok=True)
  tensors = {"linear.weight": weight}
  if bias is not None:
    tensors["linear.bias"] = np.ascontiguousarray(bias, np.float32)
  save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
  config = {"in_features": int(weight.shape[1]), "out_features": int(weight.shape[0]), "bias": bias is not None,
            "activation_function": ACTIVATION_PATHS[activation]}
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
