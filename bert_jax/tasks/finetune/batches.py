"""How a fine-tuning run's steps are batched: packed rows, token budgets, evaluation budgets.

The run (bert_jax/finetune.py) asks for one of three layouts, all from `config.data`:

    train_budgets   token-budget steps (tokens_per_batch != 0 with packing): each seed's TokenBudget
    train_packer    batch_size examples a step packed into a ladder of row counts (packing)
    eval_packer     evaluation batches of one token budget per split (packing)

and None for padded rows (packing off). Row counts divide by the data shards (and by the
micro-batches when training), so every device gets whole rows.
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np

from bert_jax.data import batching, packing, token_budget
from bert_jax.data.token_budget import TokenBudget
from bert_jax.models.config import ModelConfig


def data_shards(mesh) -> int:
  """Devices a batch's first axis is split over (mesh.data * mesh.fsdp; 1 without a mesh)."""
  if mesh is None:
    return 1
  shape = dict(zip(mesh.axis_names, mesh.devices.shape))
  return shape["data"] * shape["fsdp"]


def row_length(config: ml_collections.ConfigDict) -> int:
  return int(config.data.get("pack_length", 0) or config.data.max_length)


def packed_row_length(config: ml_collections.ConfigDict) -> int:
  """The training rows' length, checked: every example (up to data.max_length) must fit one row."""
  length = row_length(config)
  if length < config.data.max_length:
    raise ValueError(f"config.data.pack_length={config.data.pack_length} is shorter than data.max_length="
                     f"{config.data.max_length}: an example must fit one row")
  return length


def train_packer(config, task, cfg: ModelConfig, mesh) -> packing.StepPacker | None:
  """Packs each step's examples when config.data.packing (else None: padded rows)."""
  if not config.data.get("packing", False):
    return None
  return packing.StepPacker(packed_row_length(config), task.packed_inputs, parts=int(config.optimizer.grad_accum_steps),
                            shards=data_shards(mesh), keep=task.example_tokens(cfg))


def train_budgets(config, task, cfg: ModelConfig, mesh, train_set: batching.Dataset, seeds: int
                  ) -> list[TokenBudget] | None:
  """Each seed's token-budget plan when config.data.tokens_per_batch != 0 (else None: batch_size examples a step).

  tokens_per_batch > 0: that many tokens of packed rows (tokens // row_length rows, rounded up to
  divide by the micro-batches and the data shards), at most batch_size examples a step.
  -1 (auto): the budget whose steps hold batch_size examples on average over an epoch, at most
  1.5x batch_size (`token_budget.auto_budget`): the recipe's batch and step count, in one compiled shape.
  Without data.packing, -1 keeps fixed-count steps (a budget is packed rows).
  """
  tokens = int(config.data.get("tokens_per_batch", 0) or 0)
  packed = bool(config.data.get("packing", False))
  if tokens == 0 or (tokens < 0 and not packed):
    return None
  if tokens < -1:
    raise ValueError(f"config.data.tokens_per_batch={tokens}: expected > 0 (tokens a step), 0 (off) or -1 (auto)")
  if not packed:
    raise ValueError(f"config.data.tokens_per_batch={tokens} needs config.data.packing=True (a budget is packed rows)")
  length, parts, shards = packed_row_length(config), int(config.optimizer.grad_accum_steps), data_shards(mesh)
  lengths = {p: packing.sequence_lengths(train_set.arrays, p) for p in task.packed_inputs
             if f"{p}input_ids" in train_set.arrays}
  options = dict(parts=parts, group_by_length=bool(config.data.group_by_length), keep=task.example_tokens(cfg))
  if tokens > 0:
    rows, examples = token_budget.round_up(tokens // length, math.lcm(parts, shards)), int(config.batch_size)
  else:
    rows, examples = token_budget.auto_budget(lengths, length, int(config.batch_size), int(config.seed),
                                              math.lcm(parts, shards), **options)
  return [TokenBudget(lengths, config.seed + k, length, rows, examples, **options) for k in range(seeds)]


def eval_packer(config, task, cfg: ModelConfig, mesh, dataset: batching.Dataset) -> packing.EvalPacker | None:
  """Evaluation batches of one fixed token budget for `dataset` (config.data.packing), else None.

  The budget holds config.eval_batch_size examples of the split's mean length with a tenth to
  spare, and at least its longest example; rows divide by the data shards.
  """
  if not config.data.get("packing", False):
    return None
  length, shards, examples = row_length(config), data_shards(mesh), int(config.eval_batch_size)
  rows = 1
  for prefix in task.packed_inputs:
    if f"{prefix}input_ids" not in dataset.arrays:
      continue
    per_example = packing.sequence_lengths(dataset.arrays, prefix).reshape(len(dataset), -1)
    longest = max(packing.first_fit(per_example[i], length)[2] for i in np.argsort(-per_example.sum(1))[:8])
    rows = max(rows, longest, int(np.ceil(1.1 * examples * per_example.sum(1).mean() / length)))
  rows = -(-rows // shards) * shards
  return packing.EvalPacker(length, rows, examples, task.packed_inputs, keep=task.example_tokens(cfg))
