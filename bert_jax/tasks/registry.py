"""The one task table: every pretraining objective and fine-tuning task bert_jax trains, by name.

    spec = registry.lookup(config)        # config.task for fine-tuning configs, else config.objective
    spec.cls, spec.data_objective, spec.best_metric, spec.overrides

Each row gives the class that implements the task (a `tasks.base.Objective` for pretraining,
a `tasks.finetune.base.FinetuneTask` for fine-tuning), what the data side builds for it, the
validation metric that picks the best checkpoint by default, and the config settings that
follow from what the task is (applied by the config files before command-line overrides).
Recipe choices (learning rates, epochs, lengths) belong to the config files' own tables:
`configs/pretrain.py` (families) and `configs/finetune.py` (tasks).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

import ml_collections

from bert_jax.tasks.finetune.align import AlignTask
from bert_jax.tasks.finetune.classification import ClassifyTask, RegressTask
from bert_jax.tasks.finetune.contrastive import ContrastiveTask
from bert_jax.tasks.finetune.ranking import RerankTask
from bert_jax.tasks.finetune.span_qa import QATask
from bert_jax.tasks.finetune.tagging import TagTask
from bert_jax.tasks.pretrain.distillation import DistillationObjective
from bert_jax.tasks.pretrain.mlm import MLMObjective
from bert_jax.tasks.pretrain.rtd import RTDObjective

PRETRAIN, FINETUNE = "pretrain", "finetune"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One row of the task table.

  name: config.objective (pretraining) or config.task (fine-tuning).
  kind: PRETRAIN or FINETUNE (which trainer runs it).
  cls: the implementing class.
  data_objective: pretraining: the examples the data pipeline builds (mlm | mlm_nsp | mlm_sop);
    fine-tuning: the input format read (table | conll | squad | pairs | groups | vectors).
  best_metric: the validation metric that selects the best checkpoint (config.best_metric overrides).
  overrides: dotted config keys -> values the task sets whatever the recipe.
  """

  name: str
  kind: str
  cls: type
  data_objective: str
  best_metric: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("mlm", PRETRAIN, MLMObjective, "mlm", "loss"),
    TaskSpec("mlm_nsp", PRETRAIN, MLMObjective, "mlm_nsp", "loss"),
    TaskSpec("mlm_sop", PRETRAIN, MLMObjective, "mlm_sop", "loss"),
    TaskSpec("rtd", PRETRAIN, RTDObjective, "mlm", "loss"),
    TaskSpec("distill_mlm", PRETRAIN, DistillationObjective, "mlm", "loss"),
    TaskSpec("classify", FINETUNE, ClassifyTask, "table", "accuracy"),
    TaskSpec("regress", FINETUNE, RegressTask, "table", "spearman", {"data.label_column": "score"}),
    TaskSpec("tag", FINETUNE, TagTask, "conll", "f1"),
    TaskSpec("qa", FINETUNE, QATask, "squad", "f1"),
    TaskSpec("contrastive", FINETUNE, ContrastiveTask, "pairs", "spearman"),
    TaskSpec("rerank", FINETUNE, RerankTask, "groups", "mrr"),
    TaskSpec("align", FINETUNE, AlignTask, "vectors", "text_to_vector_recall@1"),
)}


def names(kind: str) -> list[str]:
  return [name for name, spec in TASKS.items() if spec.kind == kind]


def get(name: str, kind: str) -> TaskSpec:
  """The row of `name`, which must be of `kind`; an unknown name raises listing the known ones."""
  spec = TASKS.get(name)
  if spec is None or spec.kind != kind:
    key = "config.task" if kind == FINETUNE else "config.objective"
    raise ValueError(f"{key}={name!r}: expected one of {names(kind)}")
  return spec


def lookup(config: ml_collections.ConfigDict) -> TaskSpec:
  """The row a run's config names: config.task when the config has that key (fine-tuning), else config.objective."""
  if "task" in config:
    return get(config.task, FINETUNE)
  return get(config.objective, PRETRAIN)


def apply_overrides(config: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
  """Sets dotted keys ("data.label_column") on a config; a key the config lacks raises naming it."""
  for key, value in values.items():
    *sections, leaf = key.split(".")
    node = config
    for section in sections:
      node = node[section]
    if leaf not in node:
      raise KeyError(f"config has no key {key!r}")
    node[leaf] = value
