"""ELECTRA (`electra`): BERT layers on E-wide embeddings, projected to H when E != H; no pooler; two heads.

The discriminator (ElectraForPreTraining) is bert_jax's head "rtd": `discriminator_predictions.dense`
-> hidden_act -> `discriminator_predictions.dense_prediction` [1]. The generator (ElectraForMaskedLM)
is head "mlm": `generator_predictions.dense` (H -> E) -> gelu -> `generator_predictions.LayerNorm` (E)
-> `generator_lm_head` (tied to the word embeddings, with a bias). A BERT trained by replaced-token
detection is an ELECTRA discriminator, and its generator an ELECTRA generator: they export as such
(`adopts`, `adopt`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bert_jax.convert.families import bert
from bert_jax.convert.keys import Entry, dense
from bert_jax.models.config import ModelConfig

MODEL_TYPES = ("electra",)
PREFIX = "electra"
ARCHITECTURES = {("electra", None): "ElectraModel", ("electra", "mlm"): "ElectraForMaskedLM",
                 ("electra", "rtd"): "ElectraForPreTraining", **bert.task_architectures("electra", "Electra")}
# (family, head) of bert_jax models that export as ELECTRA: the RTD discriminator of a BERT is
# ElectraForPreTraining's architecture exactly (BERT layers, embeddings as wide as the layers).


def adopts(cfg: ModelConfig, head: str | None) -> bool:
  """Whether a bert_jax model exports as ELECTRA: BERT layers with a replaced-token head (the
  discriminator of a replaced-token-detection run), or BERT layers over factorised embeddings with
  an exact-GELU MLM head (its generator), which BERT's own classes cannot hold."""
  if cfg.family != "bert":
    return False
  if head == "rtd":
    return True
  return head == "mlm" and cfg.factorized and (cfg.mlm_act or cfg.hidden_act) == "gelu"

DEFAULT_EMBEDDING_SIZE = 128  # ElectraConfig's, when config.json has no embedding_size


def config_from_hf(hf: Mapping[str, Any], source: str, legacy: bool | None = None) -> ModelConfig:
  # The generator's activation is exact GELU whatever hidden_act says (the discriminator's is hidden_act).
  embedding_size = hf.get("embedding_size", DEFAULT_EMBEDDING_SIZE)
  return ModelConfig(**bert.common_config(hf, source),
                     embedding_size=None if embedding_size == hf["hidden_size"] else embedding_size,
                     pooler="none", mlm_act="gelu", classifier_act="gelu")  # ElectraClassificationHead's gelu


def hf_config(cfg: ModelConfig, legacy: bool = True) -> dict[str, Any]:
  _check_exportable(cfg)
  return {**bert.common_hf_config(cfg), "embedding_size": cfg.embed_dim}


def adopt(cfg: ModelConfig) -> ModelConfig:
  """The ELECTRA config of a model `adopts` accepts: the same layers; ELECTRA has no pooler."""
  return cfg.replace(family="electra", pooler="none")


def _check_exportable(cfg: ModelConfig) -> None:
  """ELECTRA projects E -> H (after the norm, with a bias) exactly when E != H."""
  if cfg.factorized and cfg.embed_dim == cfg.hidden_size:
    raise ValueError(f"ELECTRA has no embedding projection when embedding_size == hidden_size "
                     f"({cfg.hidden_size}); use embedding_size=None")
  if cfg.factorized and cfg.embedding_projection != "norm_then_project":
    raise ValueError(f"ELECTRA projects the embeddings after their LayerNorm; got "
                     f"embedding_projection={cfg.embedding_projection!r}")


def key_table(cfg: ModelConfig, head: str | None, with_pooler: bool, legacy: bool = True) -> list[Entry]:
  if head not in (None, "mlm", "rtd", *bert.TASK_HEADS):
    raise ValueError(f"Hugging Face conversion of head={head!r} is not supported for electra")
  if with_pooler:
    raise ValueError("ELECTRA has no pooler; convert without one (pooler='none')")
  _check_exportable(cfg)
  out = bert.embedding_entries(cfg)
  if cfg.factorized:
    out += dense(("embeddings", "projection"), "embeddings_project")
  for i in range(cfg.num_layers):
    out += bert.layer_entries(cfg, ("encoder", f"layer_{i}"), f"encoder.layer.{i}")
  if head == "rtd":
    return (out + dense(("rtd_head", "dense"), "discriminator_predictions.dense", backbone=False)
            + dense(("rtd_head", "prediction"), "discriminator_predictions.dense_prediction", backbone=False))
  mlm = bert.mlm_entries("generator_predictions.dense", "generator_predictions.LayerNorm", "generator_lm_head.bias")
  return out + bert.head_entries(cfg, head, with_pooler, mlm, pair_key="")
