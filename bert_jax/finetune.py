"""`finetune_and_evaluate(config, workdir)`: fine-tuning tasks, several seeds at once, best checkpoint kept.

    python -m bert_jax.main --config=configs/finetune.py:classify --workdir=/tmp/ft \
        --config.init_from=PATH --config.data.train=train.tsv --config.data.validation=dev.tsv

Sections: the backbone (init_from: a bert_jax checkpoint or a Hugging Face
folder; otherwise config.model from scratch) and its tokenizer -> the task
(bert_jax.tasks: data, head, objective, metrics) -> N seeds' train states,
stacked and trained together under `vmap` (one compiled step for all seeds) ->
loop: log, evaluate every `eval_every` steps (-1 = every epoch), keep each
seed's best checkpoint by the task's metric in WORKDIR/best, checkpoint the
stacked state for resume -> test split with the best parameters -> a summary
(mean, median, standard deviation over seeds; degenerate runs flagged).

The data order is a pure function of (seed, step), so the same command on the
same workdir resumes exactly from the latest checkpoint without any iterator
state; the best-so-far record lives in WORKDIR/best.json.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from bert_jax import assets, checkpointing, config_lib, evaluation, loop, metrics as metrics_lib, sharding, steps
from bert_jax.convert import layout, sentence_transformers
from bert_jax.convert.pretrained import from_pretrained, save_pretrained
from bert_jax.data import batching
from bert_jax.data.finetune import LabelMap
from bert_jax.data.tokenizers import check_fits, load_tokenizer
from bert_jax.models import count_backbone_params
from bert_jax.models.config import ModelConfig
from bert_jax.models.model import EncoderModel
from bert_jax.runtime import fileio
from bert_jax.tasks import registry
from bert_jax.tasks.finetune import base
from bert_jax.tasks.finetune.batches import eval_packer, train_budgets, train_packer


# Backbone ---------------------------------------------------------------------------------------

def backbone(config: ml_collections.ConfigDict, head: str | None = None
             ) -> tuple[ModelConfig, dict | None, str, bool]:
  """(model config, pretrained params or None, tokenizer folder, whether the params hold the task's head).

  From config.init_from (with the task's `head` when the folder has one and config.fresh_head is off:
  fine-tuning then continues a fine-tuned model), else config.model from scratch.
  """
  if config.init_from:
    # The run's compute settings (not the architecture) apply to a loaded checkpoint too.
    kwargs = dict(dtype=config.model.dtype, scan_layers=bool(config.model.scan_layers),
                  remat_policy=config.model.remat_policy, attention_impl=config.model.attention_impl)
    with_head = head is not None and not config.get("fresh_head", False)
    try:
      model, params = from_pretrained(config.init_from, head=head if with_head else None, **kwargs)
    except KeyError:  # no such head in the folder: the backbone alone
      model, params = from_pretrained(config.init_from, head=None, **kwargs)
      with_head = False
    return model.config, jax.tree.map(np.asarray, params), config.data.tokenizer or config.init_from, with_head
  cfg = config_lib.model_config(config)
  return cfg, None, config.data.tokenizer or assets.tokenizer_dir("wordpiece"), False


def check_head(config: ml_collections.ConfigDict, task, base_cfg: ModelConfig, cfg: ModelConfig) -> None:
  """A head continued from init_from must have the outputs the data needs: else an error naming both."""
  if base_cfg.num_labels != cfg.num_labels:
    raise ValueError(f"init_from={config.init_from}: its {task.head} head has {base_cfg.num_labels} outputs, "
                     f"the {config.task} data needs {cfg.num_labels}; set config.fresh_head=True to train a new "
                     "head instead")


def resolve_pooling(config: ml_collections.ConfigDict, base_cfg: ModelConfig) -> str:
  """config.pooling, with "auto" = what the checkpoint was trained for: a sentence-transformers folder's
  pooling, else the checkpoint's own classifier pooling (pooler unless it says cls / mean)."""
  if config.pooling != "auto":
    return config.pooling
  if config.init_from and sentence_transformers.is_folder(config.init_from):
    return {"cls": "cls"}.get(sentence_transformers.folder_defaults(config.init_from, -1)["pooling"], "mean")
  return base_cfg.classifier_pooling


def validate(config: ml_collections.ConfigDict, mesh, cfg: ModelConfig, train_size: int) -> None:
  """The loop's checks, and those of fine-tuning: evaluation batches, one batch of data, seeds."""
  loop.validate(config, mesh, cfg)
  shape = dict(zip(mesh.axis_names, mesh.devices.shape))
  shards = shape["data"] * shape["fsdp"]
  if config.eval_batch_size % shards:
    raise ValueError(f"config.eval_batch_size={config.eval_batch_size} must divide by mesh.data * mesh.fsdp ({shards})")
  if train_size < config.batch_size:
    raise ValueError(f"{config.data.train}: {train_size} training examples, fewer than one batch "
                     f"(config.batch_size={config.batch_size})")
  if config.seeds < 1:
    raise ValueError(f"config.seeds={config.seeds}: expected >= 1")


# The run ----------------------------------------------------------------------------------------

def finetune_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Fine-tunes config.seeds runs; returns the summary (per-seed best metrics and their statistics)."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  if not config.data.train:
    raise ValueError("config.data.train is empty: give the training file (TSV/CSV/JSONL) or tfds:NAME")
  spec = registry.get(config.task, registry.FINETUNE)
  base_cfg, pretrained, tokenizer_dir, with_head = backbone(config, spec.cls.head)
  tokenizer = load_tokenizer(tokenizer_dir)
  check_fits(tokenizer, base_cfg.vocab_size)
  with config.unlocked():
    config.pooling = resolve_pooling(config, base_cfg)
  task = spec.cls(config, tokenizer)

  start = time.perf_counter()
  # A continued head keeps its classes in its own order (its label names), so class k stays class k.
  known = LabelMap(list(base_cfg.label_names)) if with_head and base_cfg.label_names else None
  try:
    train_set = task.load(config.data.train, "train", known)
  except ValueError as e:
    if known is None or "unknown label" not in str(e):
      raise
    raise ValueError(f"{e} (the classes of the {task.head} head in init_from={config.init_from}); set "
                     "config.fresh_head=True to train a new head for these labels") from None
  labels = train_set.labels
  eval_sets = {"eval": task.load(config.data.validation, "validation", labels)} if config.data.validation else {}
  logging.info("read %d training examples%s in %.1f s", len(train_set),
               f", {len(eval_sets['eval'])} validation" if eval_sets else "", time.perf_counter() - start)

  cfg = task.model_config(base_cfg, labels)
  if with_head:
    check_head(config, task, base_cfg, cfg)
  objective = task.objective(cfg, labels)
  seeds = int(config.seeds)
  rules = sharding.rules_from_config(config.sharding_rules)
  mesh = sharding.make_mesh(config.mesh.to_dict())
  validate(config, mesh, cfg, len(train_set))
  budgets = train_budgets(config, task, cfg, mesh, train_set, seeds)
  if budgets:  # every seed's plan has about as many steps; seed 0's sets the schedule
    per_epoch = budgets[0].steps_for_epochs(1)
    total_steps = int(config.total_steps) if config.total_steps > 0 else budgets[0].steps_for_epochs(config.num_epochs)
  else:
    per_epoch = len(train_set) // config.batch_size
    total_steps = int(config.total_steps) if config.total_steps > 0 else int(round(config.num_epochs * per_epoch))
  eval_every = per_epoch if config.eval_every < 0 else int(config.eval_every)
  checkpoint_every = per_epoch if config.checkpoint_every < 0 else int(config.checkpoint_every)

  # Shapes, shardings, optimizer: one seed's, then the seed axis in front.
  ids = jax.ShapeDtypeStruct((1, min(config.data.max_length, 16)), jnp.int32)
  setup = loop.setup_state(objective, config.optimizer, total_steps, cfg.num_layers, ids, mesh, rules, seeds=seeds)
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
  state, start_step, fresh = loop.restore_or_init(checkpointer, setup, config.seed, pretrained=pretrained,
                                                  source=config.init_from)
  writer = metrics_lib.MetricWriter(workdir, resume_step=None if fresh else start_step)
  metric = config.best_metric or spec.best_metric
  best = BestCheckpoints(workdir, metric, seeds, fresh, task.name)
  if fresh:
    writer.write(0, loop.param_counts(cfg, setup.abstract_params))
  del pretrained  # its host copy (and the loaded arrays it views) would otherwise live for the whole run

  # Compiled steps: vmapped over the seed axis when there are several seeds.
  batch_sharding = NamedSharding(mesh, P(None, ("data", "fsdp")) if seeds > 1 else P(("data", "fsdp")))
  eval_batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
  one_step = functools.partial(steps.train_step, objective=objective, tx=setup.tx, schedule=setup.schedule,
                               accum_steps=int(config.optimizer.grad_accum_steps))
  train_step = jax.jit(jax.vmap(one_step) if seeds > 1 else one_step,
                       in_shardings=(setup.shardings, batch_sharding), donate_argnums=(0,))
  predict = jax.jit(jax.vmap(objective.predict, in_axes=(0, None)) if seeds > 1 else objective.predict,
                    in_shardings=(setup.stacked_param_shardings, eval_batch_sharding))

  def device_batch(arrays: dict, spec_sharding) -> dict:
    return {k: jax.device_put(np.asarray(v), spec_sharding) for k, v in arrays.items()}

  def batch_indices(step: int, seed: int) -> np.ndarray:
    return batching.train_indices(seed, step, config.batch_size, train_set.lengths, config.data.group_by_length)

  step_packer = train_packer(config, task, cfg, mesh)

  def budget_arrays(step: int) -> dict[str, np.ndarray]:
    def take(indices):
      return task.train_arrays(batching.take(train_set, indices, config.data.max_length))
    per_seed = [b.arrays(step, take) for b in budgets]
    return {k: np.stack([a[k] for a in per_seed]) for k in per_seed[0]} if seeds > 1 else per_seed[0]

  def step_fn(state: steps.TrainState, step: int):
    if budgets:
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return train_step(state, device_batch(budget_arrays(step), batch_sharding))
    indices = np.stack([batch_indices(step, config.seed + k) for k in range(seeds)])
    # Packed, the example layout is only what the head reads: its width stays fixed (one shape less).
    length = config.data.max_length if step_packer else batching.bucket_length(
        int(train_set.lengths[indices].max()), config.data.max_length)
    arrays = task.train_arrays(batching.take(train_set, indices if seeds > 1 else indices[0], length))
    if step_packer:
      arrays = step_packer(arrays, seeds)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return train_step(state, device_batch(arrays, batch_sharding))

  def evaluate_split(params, dataset: batching.Dataset) -> list[dict[str, float]]:
    """Task metrics of each seed on a whole split."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      outputs = batching.predict_split(predict, params, dataset, config.eval_batch_size, task.token_outputs,
                                       lambda a: device_batch(a, eval_batch_sharding), seeds,
                                       packer=eval_packer(config, task, cfg, mesh, dataset),
                                       fetch=sharding.to_host)
    return [task.metrics(dataset, {k: v[s] if seeds > 1 else v for k, v in outputs.items()}) for s in range(seeds)]

  def save_best(step: int, seed: int, params, values: dict[str, float]) -> None:
    params = sharding.to_host(loop.seed_slice(params, seed, seeds))  # every process: a collective
    params = {k: v for k, v in params.items() if not k.startswith("distill_")}
    own = {k: params.pop(k) for k in [k for k in params if k.startswith(base.TASK_PARAMS_PREFIX)]}
    if cfg.scan_layers:
      params = layout.unstack_layers(params)
    if jax.process_index() == 0:
      path = best.folder(seed)
      model = EncoderModel(cfg.replace(scan_layers=False), head=task.head, with_pooler=task.with_pooler)
      try:
        save_pretrained(path, model, params, tokenizer_from=tokenizer_dir,
                        extra={"finetune": {**task.metadata(labels), "step": step, "seed": config.seed + seed,
                                            "metrics": values}})
        if own:
          base.save_task_params(path, own)
        task.export_files(path, **own)
      except Exception as e:  # noqa: BLE001 - whatever the storage raised, reported with the step and path
        raise checkpointing.folder_write_failed(
            f"the best model of seed {config.seed + seed} (step {step})", path, e, "The checkpoints are complete",
            "it resumes from the latest checkpoint") from e
    if jax.process_count() > 1:  # the others read the folder back for the test split
      multihost_utils.sync_global_devices(f"bert_jax best seed {seed} step {step}")

  def evaluate(step: int, state: steps.TrainState) -> None:
    for name, dataset in eval_sets.items():
      per_seed = evaluate_split(state.params, dataset)
      log_eval(writer, progress, step, per_seed, name)
      for s, values in enumerate(per_seed):
        if best.improves(s, values):
          save_best(step, s, state.params, values)
          best.record(s, step, values)
      best.write()

  examples_per_step = float(config.batch_size)
  if budgets:
    examples_per_step = budgets[0].mean_examples(per_epoch)
    mean_length = float(np.mean(train_set.lengths))
  elif step_packer:  # real tokens: packed rows carry next to no padding
    mean_length = float(np.mean(train_set.lengths))
  else:
    mean_length = float(np.mean([batching.bucket_length(int(train_set.lengths[batch_indices(s, config.seed)].max()),
                                                        config.data.max_length) for s in range(1, per_epoch + 1)]))
  progress = metrics_lib.Progress(total_steps, int(examples_per_step * mean_length * seeds), None, None)
  runner = loop.Loop(config, writer=writer, progress=progress, checkpointer=checkpointer, total_steps=total_steps,
                     eval_every=eval_every, checkpoint_every=checkpoint_every, seeds=seeds,
                     examples_per_step=examples_per_step * seeds)
  batch = f"{config.batch_size}"
  if budgets:
    plan = budgets[0]
    batch = (f"{plan.rows * plan.parts} rows of {plan.row_length} tokens "
             f"(~{examples_per_step:.1f} of at most {plan.examples * plan.parts} examples)")
  progress.print(f"fine-tuning {cfg.family} ({count_backbone_params(cfg):,} backbone params) on {config.task}: "
                 f"{len(train_set)} examples, {per_epoch} steps/epoch, {total_steps} steps, batch {batch}, "
                 f"{seeds} seed{'s' if seeds > 1 else ''}{' in parallel' if seeds > 1 else ''}, from step {start_step}")
  try:
    state, preempted = runner.run(state, start_step, step_fn, evaluate)
    if preempted or total_steps == 0:
      return {}
    checkpointer.wait()
    if not eval_sets:  # nothing picks a best step: the last one is the model
      for s in range(seeds):
        save_best(total_steps, s, state.params, {})
        best.best[s] = {"step": total_steps, "value": None, "metrics": {}}
      best.write()
    return finish(config, task, labels, best, writer, total_steps, progress)
  finally:
    checkpointer.close()
    writer.close()


def log_eval(writer, progress, step: int, per_seed: list[dict[str, float]], prefix: str) -> dict[str, float]:
  """One metrics line: each metric's mean over seeds (and `<metric>_seed<k>` with several seeds)."""
  seeds = len(per_seed)
  record = {}
  for key in per_seed[0]:
    values = [m[key] for m in per_seed]
    record[f"{prefix}/{key}"] = float(np.mean(values))
    if seeds > 1:
      record.update({f"{prefix}/{key}_seed{k}": float(v) for k, v in enumerate(values)})
  writer.write(step, record)
  shown = ", ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in record.items() if "_seed" not in k)
  progress.print(f"{prefix} at step {step}{' (mean of %d seeds)' % seeds if seeds > 1 else ''}: {shown}")
  return record


class BestCheckpoints:
  """Each seed's best validation result by `metric`, kept in WORKDIR/best.json across restarts.

  A seed's best checkpoint folder is WORKDIR/best (one seed) or WORKDIR/best/seed_<k>.
  """

  def __init__(self, workdir: str, metric: str, seeds: int, fresh: bool, task_name: str):
    self.workdir, self.metric, self.seeds, self.task_name = workdir, metric, seeds, task_name
    self.path = os.path.join(workdir, "best.json")
    self.larger_is_better = not evaluation.lower_is_better(metric)
    self.best: list[dict | None] = [None] * seeds
    for seed in range(seeds):  # a kill while a folder was being replaced leaves the old one aside
      fileio.recover_folder(self.folder(seed))
    if not fresh and os.path.isfile(self.path):
      with open(self.path) as f:
        saved = json.load(f)["seeds"]
      if len(saved) == seeds:
        self.best = saved

  def folder(self, seed: int) -> str:
    return os.path.join(self.workdir, "best") if self.seeds == 1 else os.path.join(self.workdir, "best", f"seed_{seed}")

  def improves(self, seed: int, values: dict[str, float]) -> bool:
    if self.metric not in values:
      raise ValueError(f"config.best_metric={self.metric!r}: the {self.task_name} task reports {sorted(values)}")
    old = self.best[seed]
    value = values[self.metric]
    return old is None or (value > old["value"] if self.larger_is_better else value < old["value"])

  def record(self, seed: int, step: int, values: dict[str, float]) -> None:
    self.best[seed] = {"step": step, "value": values[self.metric], "metrics": values}

  def write(self) -> None:
    if jax.process_index() == 0:
      fileio.write_atomic(self.path, json.dumps({"metric": self.metric, "seeds": self.best}, indent=2))


def finish(config, task, labels, best: BestCheckpoints, writer, step: int, progress) -> dict:
  """Test split with each seed's best checkpoint, then the summary over seeds (summary.json + summary.md)."""
  seeds = best.seeds
  runs = [dict(b["metrics"]) if b else {} for b in best.best]
  test_runs: list[dict[str, float]] = []
  if config.data.test and all(best.best):
    test_set = task.load(config.data.test, "test", labels)
    test_runs = [evaluate_folder(config, task, best.folder(s), test_set) for s in range(seeds)]
    record = {f"test/{k}": float(np.mean([r[k] for r in test_runs])) for k in test_runs[0]}
    writer.write(step, record)
    progress.print("test with the best checkpoint: " + ", ".join(f"{k[5:]} {v:.4f}" for k, v in record.items()))
  summary = {"metric": best.metric, "seeds": [config.seed + s for s in range(seeds)],
             "best_steps": [b["step"] if b else None for b in best.best],
             "validation": evaluation.summarize_runs(runs) if all(runs) else {},
             "test": evaluation.summarize_runs(test_runs) if test_runs else {},
             "degenerate_seeds": ([config.seed + i for i in evaluation.degenerate_runs(runs)]
                                  if all(runs) and all("predicted_classes" in r for r in runs) else [])}
  if jax.process_index() == 0:
    workdir = best.workdir
    fileio.write_atomic(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=2))
    table = evaluation.summary_table(summary)
    fileio.write_atomic(os.path.join(workdir, "summary.md"), table)
    progress.print(table)
  return summary


def evaluate_folder(config, task, path: str, dataset) -> dict[str, float]:
  """Metrics of a saved checkpoint folder on a dataset (one device, jitted predict)."""
  model, params = from_pretrained(path, head=task.head, dtype=config.model.dtype)
  params = {**params, **base.load_task_params(path)}
  objective = task.objective(model.config, dataset.labels)
  outputs = batching.predict_split(jax.jit(objective.predict), params, dataset, config.eval_batch_size,
                                   task.token_outputs, packer=eval_packer(config, task, model.config, None, dataset))
  return task.metrics(dataset, outputs)
