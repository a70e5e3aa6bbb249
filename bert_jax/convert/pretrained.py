"""Loading and saving whole models: Hugging Face folders and bert_jax checkpoint folders.

A bert_jax checkpoint folder holds `bert_jax.json` (model config, head, pooler)
and `params/` (an Orbax checkpoint of the float32 parameter tree), plus the
tokenizer files of the model it came from.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.convert import families, hf_config, hf_params, layout
from bert_jax.models.config import ModelConfig
from bert_jax.models.head_table import head_class, head_param_groups
from bert_jax.models.model import EncoderModel
from bert_jax.runtime import fileio

META_FILE = "bert_jax.json"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "spm.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json",
                   "merges.txt")


def is_hf_folder(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "config.json")) and not os.path.isfile(os.path.join(path, META_FILE))


def read_hf_state(path: str) -> dict[str, np.ndarray]:
  """Tensors of a HF folder: model.safetensors (sharded too), else pytorch_model.bin when torch imports."""
  single = os.path.join(path, "model.safetensors")
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.isfile(single) or os.path.isfile(index):
    from safetensors.numpy import load_file
    if os.path.isfile(single):
      return dict(load_file(single))
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    state = {}
    for shard in shards:
      state.update(load_file(os.path.join(path, shard)))
    return state
  bin_file = os.path.join(path, "pytorch_model.bin")
  if os.path.isfile(bin_file):
    try:
      import torch
    except ImportError as e:
      raise ImportError(f"{bin_file} needs torch to read; convert it to model.safetensors or install torch") from e
    state = torch.load(bin_file, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}
  raise FileNotFoundError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def read_hf_config(path: str) -> dict[str, Any]:
  file = os.path.join(path, "config.json")
  try:
    with open(file) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{file}: not valid JSON ({e})") from e


def _has_pooler(state: Mapping[str, np.ndarray], family: str) -> bool:
  prefix = hf_params.prefix(family) + "."
  return any(k.removeprefix(prefix).startswith("pooler.") or k.removeprefix(prefix) in ("pooler.weight",)
             for k in state)


# The first names of each family's MLM head tensors (DistilBERT's `vocab_*`, ELECTRA's generator), and of
# ELECTRA's discriminator head (bert_jax's "rtd").
MLM_KEYS = ("cls.predictions.", "lm_head.", "predictions.", "lm_predictions.", "decoder.", "vocab_transform.",
            "vocab_layer_norm.", "vocab_projector.", "generator_predictions.", "generator_lm_head.")
RTD_KEYS = ("discriminator_predictions.",)


TASK_KEYS = ("classifier.", "qa_outputs.", "pre_classifier.")


def _hf_head_present(state: Mapping[str, np.ndarray], head: str | None) -> bool:
  if head is None:
    return True
  if head in ("classification", "token_classification", "qa"):
    return any(k.startswith(TASK_KEYS) for k in state)
  if head == "rtd":
    return any(k.startswith(RTD_KEYS) for k in state)
  # ModernBERT's MLM head is `head.*` (+ `decoder.bias`); its task heads have a `head.*` too, with a classifier.
  modernbert_mlm = any(k.startswith("head.") for k in state) and not any(k.startswith("classifier.") for k in state)
  return modernbert_mlm or any(k.startswith(MLM_KEYS) for k in state)


_TASK_SUFFIXES = {"ForSequenceClassification": "classification", "ForTokenClassification": "token_classification",
                  "ForQuestionAnswering": "qa"}


def detect_hf_head(state: Mapping[str, np.ndarray], architectures: Sequence[str] = ()) -> str | None:
  """The head a HF folder carries: a fine-tuned task head when config.json's `architectures` names one
  (*ForSequenceClassification, *ForTokenClassification, *ForQuestionAnswering) and its weights are
  there, else the richest pretraining head of the state dict: "pretraining" (MLM + NSP/SOP), "rtd"
  (ELECTRA's discriminator), "mlm" or None."""
  for name in architectures:
    for suffix, head in _TASK_SUFFIXES.items():
      if name.endswith(suffix) and _hf_head_present(state, head):
        return head
  if any(k.startswith(("cls.seq_relationship.", "sop_classifier.")) for k in state) and _hf_head_present(state, "mlm"):
    return "pretraining"
  if _hf_head_present(state, "rtd"):
    return "rtd"
  return "mlm" if _hf_head_present(state, "mlm") else None


def load_hf(path: str, head: str | None = None, *, keep_pooler: bool = False,
            **overrides) -> tuple[EncoderModel, dict, dict]:
  """A HF folder -> (model, params, info) with info = {"legacy": bool, "state_keys": [...]}.

  keep_pooler: keep the pooler whatever the head (conversion keeps every stored tensor).
  """
  hf = read_hf_config(path)
  state = read_hf_state(path)
  # The head layout follows the stored keys, not config.json (see model_config_from_hf).
  legacy = False if any(k.startswith("lm_predictions.") for k in state) else hf.get("legacy", True)
  cfg = hf_config.model_config_from_hf(hf, os.path.join(path, "config.json"), legacy=legacy)
  if head is not None or keep_pooler:  # a conversion or a head: nothing of the checkpoint may go unread
    families.check_architectures(hf, os.path.join(path, "config.json"))
  if not _hf_head_present(state, head):
    kind = {"rtd": "replaced-token-detection (discriminator_predictions.*)", "classification": "classifier",
            "token_classification": "classifier", "qa": "question-answering (qa_outputs / classifier)"}.get(head, "MLM")
    raise KeyError(f"{path}: head={head!r} requested but the checkpoint has no {kind} head weights")
  head_type = head_class(head)
  keeps = head is None or head_type.keeps_pooler(cfg)
  with_pooler = cfg.pooler == "tanh" and (keep_pooler or keeps) and _has_pooler(state, cfg.family)
  params = hf_params.flax_from_hf(state, cfg, head=head, with_pooler=with_pooler, legacy=legacy, source=path)
  cfg = cfg.replace(**overrides) if overrides else cfg
  model = EncoderModel(cfg, head=head, with_pooler=with_pooler)
  return model, _fit_layout(model, params, path), {"legacy": legacy, "state_keys": sorted(state)}


def _fit_layout(model: EncoderModel, params: dict, source: str) -> dict:
  """Stacks layers for scanned models and checks every shape against the model's own."""
  if model.config.scan_layers:
    params = layout.stack_layers(params)
  check_params(model, params, source)
  return jax.tree.map(jnp.asarray, params)


def abstract_params(model: EncoderModel) -> dict:
  """Shapes of the model's parameters, without allocating them."""
  limit = model.config.max_length
  ids = jax.ShapeDtypeStruct((1, min(8, limit) if limit > 0 else 8), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.key(0), ids)
  return unbox(variables["params"])


def unbox(tree):
  """Strips flax's LogicallyPartitioned boxes."""
  import flax.linen as nn
  return nn.meta.unbox(tree)


def check_params(model: EncoderModel, params: Mapping, source: str) -> None:
  """Raises naming each parameter whose presence or shape differs from what `model` needs."""
  expected = {"/".join(str(getattr(k, "key", k)) for k in path): leaf.shape
              for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params(model))[0]}
  got = {"/".join(str(getattr(k, "key", k)) for k in path): np.shape(leaf)
         for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  problems = [f"{k}: missing (expected {v})" for k, v in expected.items() if k not in got]
  problems += [f"{k}: unexpected parameter {v}" for k, v in got.items() if k not in expected]
  problems += [f"{k}: shape {got[k]} but the model needs {v}" for k, v in expected.items()
               if k in got and tuple(got[k]) != tuple(v)]
  if problems:
    raise ValueError(f"{source}: parameters do not fit the model:\n  " + "\n  ".join(problems[:20]))


def _this_process_checkpointer():
  """An Orbax checkpointer for host arrays that this process alone reads or writes.

  Orbax's default synchronises every process of a jax.distributed run at each save and restore; a
  model folder is written by process 0 alone (the others are elsewhere in the run), so its
  barriers must span only this process.
  """
  import orbax.checkpoint as ocp
  index = jax.process_index()
  return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=index, active_processes={index}, barrier_sync_key_prefix=f"bert_jax_folder_p{index}"))


def save_pretrained(path: str, model: EncoderModel, params: Mapping, *, tokenizer_from: str | None = None,
                    extra: Mapping[str, Any] | None = None) -> None:
  """Writes a bert_jax checkpoint folder; the previous content of `path` stays until the new one is complete."""
  if fileio.is_remote(path):  # written whole on local disk, then uploaded (fileio.upload_tree)
    with tempfile.TemporaryDirectory() as local:
      save_pretrained(os.path.join(local, "model"), model, params, tokenizer_from=tokenizer_from, extra=extra)
      fileio.upload_tree(os.path.join(local, "model"), path)
    return
  path = os.path.abspath(path)
  fileio.recover_folder(path)  # a copy a killed replacement set aside is the folder until this one is complete
  tmp = path + ".tmp"
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  meta = {"format": "bert_jax", "version": 1, "model": model.config.to_dict(), "head": model.head_name,
          "with_pooler": model.uses_pooler, **(extra or {})}
  with open(os.path.join(tmp, META_FILE), "w") as f:
    json.dump(meta, f, indent=2)
  with _this_process_checkpointer() as ckptr:
    ckptr.save(os.path.join(tmp, "params"), jax.tree.map(np.asarray, unbox(dict(params))))
    ckptr.wait_until_finished()
  if tokenizer_from:
    copy_tokenizer_files(tokenizer_from, tmp)
  fileio.replace_folder(tmp, path)


def copy_tokenizer_files(src: str, dst: str) -> list[str]:
  copied = []
  for name in TOKENIZER_FILES:
    if os.path.isfile(os.path.join(src, name)):
      shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
      copied.append(name)
  return copied


def load_bert_jax(path: str, head: str | None = None, **overrides) -> tuple[EncoderModel, dict, dict]:
  file = os.path.join(path, META_FILE)
  with open(file) as f:
    meta = json.load(f)
  values = dict(meta["model"])
  # Folders written before the task heads followed each family's reference layout used BERT's (pooler).
  values.setdefault("classifier_head", "pooler")
  cfg = ModelConfig.from_dict(values)
  saved_head = meta.get("head")
  params_dir = os.path.join(os.path.abspath(path), "params")
  if not os.path.isdir(params_dir):
    raise FileNotFoundError(f"{path}: no params/ folder beside {META_FILE}")
  with _this_process_checkpointer() as ckptr:
    params = ckptr.restore(params_dir)
  params = jax.tree.map(np.asarray, params)
  if head != saved_head:
    params = _select_head(params, saved_head, head, cfg, path)
  with_pooler = meta.get("with_pooler", False) and "pooler" in params
  if not with_pooler and "pooler" not in head_param_groups(head, cfg):  # DeBERTa's context pooler is its head's
    params.pop("pooler", None)
  saved_scan = cfg.scan_layers
  cfg = cfg.replace(**overrides) if overrides else cfg
  if saved_scan and not cfg.scan_layers:
    params = layout.unstack_layers(params)
  elif cfg.scan_layers and not saved_scan:
    params = layout.stack_layers(params)
  model = EncoderModel(cfg, head=head, with_pooler=with_pooler)
  return model, _fit_layout(model, params, path), meta


def _select_head(params: dict, saved: str | None, wanted: str | None, cfg: ModelConfig, source: str) -> dict:
  need = set(head_param_groups(wanted, cfg))
  missing = [n for n in need if n not in params]
  if missing:
    raise KeyError(f"{source}: head={wanted!r} needs {missing}, which the checkpoint (head={saved!r}) lacks")
  drop = set(head_param_groups(saved, cfg)) - need
  return {k: v for k, v in params.items() if k not in drop}


def from_pretrained(path: str, head: str | None = None, **overrides) -> tuple[EncoderModel, dict]:
  """(model, params) from a Hugging Face folder or a bert_jax checkpoint folder.

  head: None (bare encoder; pooler when the checkpoint has one), "mlm", "pretraining" (MLM + NSP / SOP) or
  "rtd" (ELECTRA's discriminator, from an ElectraForPreTraining folder).
  overrides: ModelConfig fields to change, e.g. dtype="bfloat16" or scan_layers=True.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: not a folder (expected a Hugging Face model folder or a bert_jax checkpoint)")
  if os.path.isfile(os.path.join(path, META_FILE)):
    model, params, _ = load_bert_jax(path, head, **overrides)
  elif os.path.isfile(os.path.join(path, "config.json")):
    model, params, _ = load_hf(path, head, **overrides)
  else:
    raise FileNotFoundError(f"{path}: neither {META_FILE} (bert_jax) nor config.json (Hugging Face) found")
  return model, params


def export_hf(path: str, model: EncoderModel, params: Mapping, *, legacy: bool = True,
              tokenizer_from: str | None = None) -> None:
  """Writes a Hugging Face folder (config.json + model.safetensors) that transformers loads.

  The head's tensors go along when it is an MLM head or the family has a class for it (ELECTRA's
  RTD discriminator); a model another family adopts exports as that family (a BERT with the RTD
  head as ElectraForPreTraining, see convert/families).
  """
  from safetensors.numpy import save_file
  cfg = model.config
  params = jax.tree.map(np.asarray, unbox(dict(params)))  # accepts model.init's boxed params too
  if cfg.scan_layers:
    params = layout.unstack_layers(params)
    cfg = cfg.replace(scan_layers=False)
  cfg = families.export_config(cfg, model.head_name)
  exportable = model.head_type and (model.head_type.masked_lm
                                    or (cfg.family, model.head_name) in families.family(cfg.family).ARCHITECTURES)
  head = model.head_name if exportable else None
  state = hf_params.hf_from_flax(params, cfg, head=head, with_pooler=model.uses_pooler, legacy=legacy)
  config = hf_config.hf_config_from_model(cfg, head, legacy=legacy)
  os.makedirs(path, exist_ok=True)
  with fileio.atomic_path(os.path.join(path, "model.safetensors")) as tmp:
    save_file(state, tmp, metadata={"format": "pt"})
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  if tokenizer_from:
    copy_tokenizer_files(tokenizer_from, path)
