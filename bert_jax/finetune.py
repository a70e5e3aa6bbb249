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
import importlib
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
from jax.sharding import NamedSharding, PartitionSpec as P

from bert_jax import assets, checkpointing, config_lib, evaluation, metrics as metrics_lib, optim, sharding, steps
from bert_jax.convert import sentence_transformers
from bert_jax.models import count_backbone_params
from bert_jax.models.config import ModelConfig
from bert_jax.models.model import EncoderModel
from bert_jax.tasks.finetune import base as finetune_task
from bert_jax.train import NonFiniteLoss, Preemption, state_shardings


TASKS = {"classify": "finetune.classification.ClassifyTask", "regress": "finetune.classification.RegressTask",
         "tag": "finetune.tagging.TagTask", "qa": "finetune.span_qa.QATask", "contrastive": "finetune.contrastive.ContrastiveTask",
         "rerank": "finetune.ranking.RerankTask"}


def task_class(name: str):
  """The FinetuneTask class registered for config.task (bert_jax.tasks.<module>.<Class>)."""
  if name not in TASKS:
    raise ValueError(f"config.task={name!r}: expected one of {sorted(TASKS)}")
  module, _, cls = TASKS[name].rpartition(".")
  return getattr(importlib.import_module(f"bert_jax.tasks.{module}"), cls)


# Backbone ---------------------------------------------------------------------------------------

def backbone(config: ml_collections.ConfigDict) -> tuple[ModelConfig, dict | None, str]:
  """(model config, pretrained params or None, tokenizer folder) from config.init_from or config.model."""
  if config.init_from:
    from bert_jax.convert.pretrained import from_pretrained
    model, params = from_pretrained(config.init_from, head=None, dtype=config.model.dtype,
                                    scan_layers=bool(config.model.scan_layers))
    return model.config, jax.tree.map(np.asarray, params), config.data.tokenizer or config.init_from
  cfg = config_lib.model_config(config)
  return cfg, None, config.data.tokenizer or assets.tokenizer_dir("wordpiece")


def resolve_pooling(config: ml_collections.ConfigDict) -> str:
  """config.pooling, with "auto" = what the checkpoint was trained for (sentence-transformers: its pooling)."""
  if config.pooling != "auto":
    return config.pooling
  if config.init_from and sentence_transformers.is_folder(config.init_from):
    return {"cls": "cls"}.get(sentence_transformers.folder_defaults(config.init_from, -1)["pooling"], "mean")
  return "pooler"


def merge_pretrained(params: dict, pretrained: dict, seeds: int) -> tuple[dict, list[str]]:
  """params (stacked over seeds when seeds > 1) with every tensor the checkpoint has replaced."""
  flat = dict(jax.tree_util.tree_flatten_with_path(pretrained)[0])
  fresh = []

  def pick(path, leaf):
    if path not in flat:
      fresh.append(jax.tree_util.keystr(path))
      return leaf
    value = np.asarray(flat[path], leaf.dtype)
    target = leaf.shape[1:] if seeds > 1 else leaf.shape
    if value.shape != target:
      raise ValueError(f"init_from: {jax.tree_util.keystr(path)} has shape {value.shape}, the model needs {target}")
    return np.broadcast_to(value, leaf.shape) if seeds > 1 else value
  return jax.tree_util.tree_map_with_path(pick, jax.device_get(params)), fresh


# Helpers for the seed axis ----------------------------------------------------------------------

def with_seed_axis(shardings, seeds: int):
  """NamedShardings of one seed's arrays -> those of the [seeds, ...] stack (the seed axis unsharded)."""
  if seeds == 1:
    return shardings
  return jax.tree.map(lambda s: NamedSharding(s.mesh, P(None, *s.spec)), shardings,
                      is_leaf=lambda x: isinstance(x, NamedSharding))


def seed_slice(tree, index: int, seeds: int):
  return tree if seeds == 1 else jax.tree.map(lambda x: x[index], tree)


def _atomic_json(path: str, value: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2)
  os.replace(tmp, path)


def validate(config: ml_collections.ConfigDict, mesh, train_size: int) -> None:
  shape = dict(zip(mesh.axis_names, mesh.devices.shape))
  shards = shape["data"] * shape["fsdp"]
  accum = int(config.optimizer.grad_accum_steps)
  if config.batch_size % (shards * accum):
    raise ValueError(f"config.batch_size={config.batch_size} must divide by mesh.data * mesh.fsdp ({shards}) "
                     f"times optimizer.grad_accum_steps ({accum})")
  if config.eval_batch_size % shards:
    raise ValueError(f"config.eval_batch_size={config.eval_batch_size} must divide by mesh.data * mesh.fsdp ({shards})")
  if train_size < config.batch_size:
    raise ValueError(f"{config.data.train}: {train_size} training examples, fewer than one batch "
                     f"(config.batch_size={config.batch_size})")
  if config.seeds < 1:
    raise ValueError(f"config.seeds={config.seeds}: expected >= 1")
  if config.nonfinite not in ("stop", "skip"):
    raise ValueError(f"config.nonfinite={config.nonfinite!r}: expected 'stop' or 'skip'")


# The run ----------------------------------------------------------------------------------------

def finetune_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Fine-tunes config.seeds runs; returns the summary (per-seed best metrics and their statistics)."""
  from bert_jax.data.tokenizers import check_fits, load_tokenizer
  from bert_jax.convert.pretrained import save_pretrained

  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  if not config.data.train:
    raise ValueError("config.data.train is empty: give the training file (TSV/CSV/JSONL) or tfds:NAME")
  base_cfg, pretrained, tokenizer_dir = backbone(config)
  tokenizer = load_tokenizer(tokenizer_dir)
  check_fits(tokenizer, base_cfg.vocab_size)
  if 0 < base_cfg.max_length < config.data.max_length:
    raise ValueError(f"config.data.max_length={config.data.max_length} exceeds the model's position table "
                     f"({base_cfg.max_length} tokens)")
  with config.unlocked():
    config.pooling = resolve_pooling(config)
  task = task_class(config.task)(config, tokenizer)

  start = time.perf_counter()
  train_set = task.load(config.data.train, "train")
  task.fit_labels(train_set)
  eval_sets = {"eval": task.load(config.data.validation, "validation")} if config.data.validation else {}
  logging.info("read %d training examples%s in %.1f s", len(train_set),
               f", {len(eval_sets['eval'])} validation" if eval_sets else "", time.perf_counter() - start)

  cfg = task.model_config(base_cfg)
  objective = task.objective(cfg)
  seeds = int(config.seeds)
  rules = sharding.rules_from_config(config.sharding_rules)
  mesh = sharding.make_mesh(config.mesh.to_dict())
  validate(config, mesh, len(train_set))
  per_epoch = len(train_set) // config.batch_size
  total_steps = int(config.total_steps) if config.total_steps > 0 else int(round(config.num_epochs * per_epoch))
  eval_every = per_epoch if config.eval_every < 0 else int(config.eval_every)
  checkpoint_every = per_epoch if config.checkpoint_every < 0 else int(config.checkpoint_every)

  # Shapes, shardings, optimizer: one seed's, then the seed axis in front.
  ids = jax.ShapeDtypeStruct((1, min(config.data.max_length, 16)), jnp.int32)
  init_rngs = {"params": jax.random.key(0), "dropout": jax.random.key(0)}
  boxed = jax.eval_shape(functools.partial(objective.init, init_rngs), ids)
  param_shardings = sharding.named_shardings(boxed, mesh, rules, log=logging.info)
  abstract_params = nn.meta.unbox(boxed)
  tx, schedule = optim.make_optimizer(config.optimizer, max(total_steps, 1), abstract_params, cfg.num_layers)

  init_one = functools.partial(steps.initial_state, objective, tx, ids)

  seed_keys = jnp.stack([jax.random.key_data(jax.random.key(config.seed + k)) for k in range(seeds)])
  init_fn = lambda keys: (jax.vmap(lambda k: init_one(jax.random.wrap_key_data(k)))(keys) if seeds > 1
                          else init_one(jax.random.wrap_key_data(keys[0])))
  abstract_one = jax.eval_shape(lambda k: init_one(jax.random.wrap_key_data(k)), seed_keys[0])
  shardings = with_seed_axis(state_shardings(abstract_one, param_shardings, tx, mesh), seeds)
  abstract_state = jax.eval_shape(init_fn, seed_keys)
  abstract_with_shardings = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                         abstract_state, shardings)
  stacked_param_shardings = with_seed_axis(param_shardings, seeds)

  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
  state, start_step = checkpointer.restore_latest(abstract_with_shardings)
  writer = metrics_lib.MetricWriter(workdir, resume_step=start_step)
  best_file = os.path.join(workdir, "best.json")
  metric = config.best_metric or task.metric
  larger_is_better = metric not in task.lower_is_better
  best = _read_best(best_file, seeds) if state is not None else [None] * seeds
  if state is None:
    start_step = 0
    state = jax.jit(init_fn, out_shardings=shardings)(seed_keys)
    if pretrained is not None:
      merged, fresh = merge_pretrained(state.params, pretrained, seeds)
      logging.info("init_from %s: freshly initialised: %s", config.init_from, fresh or "none")
      state = state.replace(params=jax.device_put(merged, stacked_param_shardings))
    writer.write(0, {"model/params": count_backbone_params(cfg),
                     "model/params_with_head": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params))})
  else:
    logging.info("resumed from step %d in %s", start_step, checkpointer.directory)

  # Compiled steps: vmapped over the seed axis when there are several seeds.
  batch_spec = P(None, ("data", "fsdp")) if seeds > 1 else P(("data", "fsdp"))
  batch_sharding = NamedSharding(mesh, batch_spec)
  eval_batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
  one_step = functools.partial(steps.train_step, objective=objective, tx=tx, schedule=schedule,
                               accum_steps=int(config.optimizer.grad_accum_steps))
  train_step = jax.jit(jax.vmap(one_step) if seeds > 1 else one_step,
                       in_shardings=(shardings, batch_sharding), donate_argnums=(0,))
  predict = jax.jit(jax.vmap(task.predict, in_axes=(0, None)) if seeds > 1 else task.predict,
                    in_shardings=(stacked_param_shardings, eval_batch_sharding))

  def device_batch(arrays: dict, spec_sharding) -> dict:
    return {k: jax.device_put(np.asarray(v), spec_sharding) for k, v in arrays.items()}

  def train_batch(step: int) -> dict:
    indices = np.stack([finetune_task.train_indices(config.seed + k, step, config.batch_size, train_set.lengths,
                                                    config.data.group_by_length) for k in range(seeds)])
    length = finetune_task.bucket_length(int(train_set.lengths[indices].max()), config.data.max_length)
    arrays = finetune_task.take(train_set, indices if seeds > 1 else indices[0], length)
    return device_batch(task.train_arrays(arrays) if hasattr(task, "train_arrays") else arrays, batch_sharding)

  def evaluate(params, dataset: finetune_task.Dataset) -> list[dict[str, float]]:
    """Task metrics of each seed on a whole split."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      outputs = finetune_task.predict_split(predict, params, dataset, config.eval_batch_size, task.token_outputs,
                                            lambda a: device_batch(a, eval_batch_sharding), seeds)
    return [task.metrics(dataset, {k: v[s] if seeds > 1 else v for k, v in outputs.items()}) for s in range(seeds)]

  def model_for_saving() -> EncoderModel:
    return EncoderModel(cfg.replace(scan_layers=False) if cfg.scan_layers else cfg, head=task.head,
                        with_pooler=getattr(task, "with_pooler", None))

  def save_best(step: int, seed: int, params, values: dict[str, float]) -> None:
    path = os.path.join(workdir, "best") if seeds == 1 else os.path.join(workdir, "best", f"seed_{seed}")
    params = jax.device_get(seed_slice(params, seed, seeds))
    params = {k: v for k, v in params.items() if not k.startswith("distill_")}
    if cfg.scan_layers:
      from bert_jax.convert import layout
      params = layout.unstack_layers(params)
    if jax.process_index() == 0:
      save_pretrained(path, model_for_saving(), params, tokenizer_from=tokenizer_dir,
                      extra={"finetune": {**task.metadata(), "step": step, "seed": config.seed + seed,
                                          "metrics": values}})
      if hasattr(task, "export_files"):
        task.export_files(path)

  def log_eval(step: int, per_seed: list[dict[str, float]], prefix: str) -> dict[str, float]:
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

  def run_eval(step: int, state) -> None:
    for name, dataset in eval_sets.items():
      per_seed = evaluate(state.params, dataset)
      log_eval(step, per_seed, name)
      for s, values in enumerate(per_seed):
        if metric not in values:
          raise ValueError(f"config.best_metric={metric!r}: the {task.name} task reports {sorted(values)}")
        value = values[metric]
        old = best[s]
        if old is None or (value > old["value"] if larger_is_better else value < old["value"]):
          save_best(step, s, state.params, values)
          best[s] = {"step": step, "value": value, "metrics": values}
      if jax.process_index() == 0:
        _atomic_json(best_file, {"metric": metric, "seeds": best})

  mean_length = float(np.mean([finetune_task.bucket_length(int(train_set.lengths[finetune_task.train_indices(
      config.seed, s, config.batch_size, train_set.lengths, config.data.group_by_length)].max()),
      config.data.max_length) for s in range(1, per_epoch + 1)]))
  progress = metrics_lib.Progress(total_steps, int(config.batch_size * mean_length * seeds), None, None)
  preemption = Preemption()
  progress.print(f"fine-tuning {cfg.family} ({count_backbone_params(cfg):,} backbone params) on {config.task}: "
                 f"{len(train_set)} examples, {per_epoch} steps/epoch, {total_steps} steps, batch {config.batch_size}, "
                 f"{seeds} seed{'s' if seeds > 1 else ''}{' in parallel' if seeds > 1 else ''}, from step {start_step}")
  progress.start(start_step)
  pending: list[tuple[int, Any]] = []

  def flush() -> None:
    nonlocal pending
    if not pending:
      return
    values = jax.device_get([m for _, m in pending])
    for (s, _), m in zip(pending, values):
      if np.any(m["nonfinite"]) and config.nonfinite == "stop":
        raise NonFiniteLoss(f"non-finite loss or gradient at step {s}; stopping. The last checkpoint is intact; "
                            "lower the learning rate or set config.nonfinite=skip")
    s, m = pending[-1][0], values[-1]
    record = {f"train/{k}": float(np.mean(v)) for k, v in m.items() if k != "nonfinite"}
    if seeds > 1:
      record.update({f"train/loss_seed{k}": float(v) for k, v in enumerate(m["loss"])})
    record["train/skipped_steps"] = int(np.sum(jax.device_get(state.skipped)))
    rates = progress.rates(s)
    rates["perf/examples_per_sec"] = rates["perf/steps_per_sec"] * config.batch_size * seeds
    writer.write(s, {**record, **rates})
    progress.print(progress.line(s, record["train/loss"], rates))
    pending = []

  try:
    for step in range(start_step + 1, total_steps + 1):
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state, step_metrics = train_step(state, train_batch(step))
      pending.append((step, step_metrics))
      final = step == total_steps
      if step % config.log_every == 0 or final or step == start_step + 1:
        flush()
      if (eval_every and step % eval_every == 0) or final:
        flush()
        run_eval(step, state)
      if (checkpoint_every and step % checkpoint_every == 0) or final:
        flush()
        checkpointer.save(step, state, force=final)
      if preemption.reached(step, checkpointer):
        flush()
        checkpointer.save(step, state, force=True)
        checkpointer.wait()
        progress.print(f"preemption signal: saved step {step}; exiting")
        return {}
    if total_steps == 0:
      return {}
    checkpointer.wait()
    summary = finish(config, workdir, task, best, metric, seeds, writer, total_steps, progress)
  finally:
    checkpointer.close()
    writer.close()
  return summary


def _read_best(path: str, seeds: int) -> list:
  if not os.path.isfile(path):
    return [None] * seeds
  with open(path) as f:
    saved = json.load(f)["seeds"]
  return saved if len(saved) == seeds else [None] * seeds


def finish(config, workdir: str, task, best: list, metric: str, seeds: int, writer, step: int, progress) -> dict:
  """Test split with each seed's best checkpoint, then the summary over seeds (summary.json + summary.md)."""
  runs = [dict(b["metrics"]) if b else {} for b in best]
  test_runs: list[dict[str, float]] = []
  if config.data.test and all(best):
    test_set = task.load(config.data.test, "test")
    test_runs = [evaluate_folder(config, task, best_folder(workdir, s, seeds), test_set) for s in range(seeds)]
    record = {f"test/{k}": float(np.mean([r[k] for r in test_runs])) for k in test_runs[0]}
    writer.write(step, record)
    progress.print("test with the best checkpoint: " + ", ".join(f"{k[5:]} {v:.4f}" for k, v in record.items()))
  summary = {"metric": metric, "seeds": [config.seed + s for s in range(seeds)],
             "best_steps": [b["step"] if b else None for b in best],
             "validation": evaluation.summarize_runs(runs) if all(runs) else {},
             "test": evaluation.summarize_runs(test_runs) if test_runs else {},
             "degenerate_seeds": ([config.seed + i for i in evaluation.degenerate_runs(runs)]
                                  if all(runs) and all("predicted_classes" in r for r in runs) else [])}
  if jax.process_index() == 0:
    _atomic_json(os.path.join(workdir, "summary.json"), summary)
    table = summary_table(summary)
    with open(os.path.join(workdir, "summary.md"), "w") as f:
      f.write(table)
    progress.print(table)
  return summary


def best_folder(workdir: str, seed: int, seeds: int) -> str:
  return os.path.join(workdir, "best") if seeds == 1 else os.path.join(workdir, "best", f"seed_{seed}")


def evaluate_folder(config, task, path: str, dataset) -> dict[str, float]:
  """Metrics of a saved checkpoint folder on a dataset (one device, jitted predict)."""
  from bert_jax.convert.pretrained import from_pretrained
  model, params = from_pretrained(path, head=task.head, dtype=config.model.dtype)
  task.objective(model.config)
  outputs = finetune_task.predict_split(jax.jit(task.predict), params, dataset, config.eval_batch_size,
                                        task.token_outputs)
  return task.metrics(dataset, outputs)


def summary_table(summary: dict) -> str:
  """Markdown: one row per metric and split with mean, median, std, min, max over seeds."""
  lines = [f"Best by `{summary['metric']}` over seeds {summary['seeds']} (best steps {summary['best_steps']})", "",
           "| split | metric | mean | median | std | min | max | n |", "|---|---|---|---|---|---|---|---|"]
  for split in ("validation", "test"):
    for key, stats in summary[split].items():
      lines.append(f"| {split} | {key} | {stats['mean']:.4f} | {stats['median']:.4f} | {stats['std']:.4f} | "
                   f"{stats['min']:.4f} | {stats['max']:.4f} | {stats['n']} |")
  if summary["degenerate_seeds"]:
    lines += ["", f"**Degenerate runs** (one predicted class): seeds {summary['degenerate_seeds']}"]
  return "\n".join(lines) + "\n"
