"""`train_and_evaluate(config, workdir)`: pretraining with sharding, evaluation, checkpoints and resume.

Sections: setup (model, mesh, shardings, optimizer) -> restore or initialise
straight into shards -> data -> compiled steps -> loop (log, evaluate,
checkpoint, preemption). Running the same command on the same workdir resumes
exactly: params, optimizer state, step, RNG and the data iterator's position.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import signal
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from bert_jax import checkpointing, config_lib, metrics as metrics_lib, optim, sharding, steps
from bert_jax.runtime import fileio, hardware
from bert_jax.models import count_backbone_params
from bert_jax.models.config import ModelConfig

OBJECTIVES = ("mlm", "mlm_nsp", "mlm_sop", "rtd", "distill_mlm")
# Objectives whose batches are another objective's (the data pipeline knows only mlm, mlm_nsp, mlm_sop).
DATA_OBJECTIVES = {"distill_mlm": "mlm", "rtd": "mlm"}


class NonFiniteLoss(RuntimeError):
  """A step produced a non-finite loss or gradient and config.nonfinite == "stop"."""


# Setup ------------------------------------------------------------------------------------------

def validate(config: ml_collections.ConfigDict, cfg: ModelConfig, mesh) -> None:
  """Clear errors for settings that would otherwise fail deep inside XLA."""
  if config.objective not in OBJECTIVES:
    raise ValueError(f"config.objective={config.objective!r}: expected one of {OBJECTIVES}")
  shape = dict(zip(mesh.axis_names, mesh.devices.shape))
  batch_shards = shape["data"] * shape["fsdp"]
  accum = int(config.optimizer.grad_accum_steps)
  if config.batch_size % (batch_shards * accum):
    raise ValueError(f"config.batch_size={config.batch_size} must divide by mesh.data * mesh.fsdp "
                     f"({batch_shards}) times optimizer.grad_accum_steps ({accum})")
  if config.batch_size % jax.process_count():
    raise ValueError(f"config.batch_size={config.batch_size} must divide by the {jax.process_count()} processes")
  for name, size in (("num_heads", cfg.num_heads), ("intermediate_size", cfg.intermediate_size)):
    if size % shape["tensor"]:
      raise ValueError(f"config.model.{name}={size} must divide by mesh.tensor={shape['tensor']}")
  if cfg.max_length > 0 and config.data.max_length > cfg.max_length:
    raise ValueError(f"config.data.max_length={config.data.max_length} exceeds the position table "
                     f"(model.max_position_embeddings={cfg.max_position_embeddings} -> {cfg.max_length} tokens)")
  if config.nonfinite not in ("stop", "skip"):
    raise ValueError(f"config.nonfinite={config.nonfinite!r}: expected 'stop' or 'skip'")


def make_objective(config: ml_collections.ConfigDict, cfg: ModelConfig):
  """The objective named by config.objective (see bert_jax.tasks)."""
  if config.objective == "rtd":
    from bert_jax.tasks.pretrain.rtd import RTDObjective
    return RTDObjective(cfg, config.rtd)
  if config.objective == "distill_mlm":
    from bert_jax.tasks.pretrain.distillation import DistillationObjective
    return DistillationObjective(cfg, config.distill)
  from bert_jax.tasks.pretrain.mlm import MLMObjective
  return MLMObjective(cfg, with_pair=config.objective != "mlm")


def dummy_inputs(config) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((1, config.data.max_length), jnp.int32)


def state_shardings(abstract_state: steps.TrainState, param_shardings, tx, mesh) -> steps.TrainState:
  """Optimizer moments follow their parameters' shardings; scalars and counters are replicated."""
  replicated = NamedSharding(mesh, P())
  opt_shardings = optax.tree_map_params(tx, lambda _, s: s, abstract_state.opt_state, param_shardings,
                                        transform_non_params=lambda _: replicated)
  return steps.TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings,
                          rng=replicated, skipped=replicated)


def load_init_from(path: str, cfg: ModelConfig, params: dict, param_shardings) -> dict:
  """Overwrites `params` with a pretrained checkpoint's (bert_jax or HF folder); reports what stays fresh."""
  from bert_jax.convert.pretrained import from_pretrained
  try:
    _, pretrained = from_pretrained(path, head="mlm", scan_layers=cfg.scan_layers)
  except KeyError:
    _, pretrained = from_pretrained(path, head=None, scan_layers=cfg.scan_layers)
  flat_new = dict(jax.tree_util.tree_flatten_with_path(pretrained)[0])
  fresh, merged = [], []
  def pick(path, leaf):
    if path in flat_new:
      value = flat_new[path]
      if value.shape != leaf.shape:
        raise ValueError(f"init_from={path}: {jax.tree_util.keystr(path)} has shape {value.shape}, "
                         f"the model needs {leaf.shape}")
      merged.append(path)
      return value
    fresh.append(jax.tree_util.keystr(path))
    return leaf
  out = jax.tree_util.tree_map_with_path(pick, jax.device_get(params))
  logging.info("init_from %s: %d tensors loaded; freshly initialised: %s", path, len(merged), fresh or "none")
  return jax.device_put(out, param_shardings)


# The run ------------------------------------------------------------------------------------------

class Preemption:
  """SIGTERM sets a flag; the loop saves the current step and exits (all processes agree)."""

  def __init__(self):
    self.requested = False
    signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del signum, frame
    self.requested = True

  def reached(self, step: int, checkpointer: checkpointing.Checkpointer) -> bool:
    flag = self.requested or checkpointer.manager.reached_preemption(step)
    if jax.process_count() > 1:
      flag = bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
    return flag


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains until config.total_steps; returns the last evaluation metrics."""
  from bert_jax.data.pretraining import pipeline as pretraining_data
  from bert_jax.data.tokenizers import check_fits, load_tokenizer

  run_dir = fileio.resolve(workdir)  # local (made absolute) or a bucket URI
  run_dir.mkdir(parents=True, exist_ok=True)
  workdir = os.fspath(run_dir)
  cfg = config_lib.model_config(config)
  rules = sharding.rules_from_config(config.sharding_rules)
  mesh = sharding.make_mesh(config.mesh.to_dict())
  validate(config, cfg, mesh)
  tokenizer = load_tokenizer(config.data.tokenizer)
  check_fits(tokenizer, cfg.vocab_size)
  objective = make_objective(config, cfg)
  if hasattr(objective, "place_teacher"):  # distillation: the frozen teacher's params, sharded like the student's
    objective.place_teacher(mesh, rules)
  data_objective = DATA_OBJECTIVES.get(config.objective, config.objective)
  total_steps = int(config.total_steps)

  # Shapes first, then shardings, then the real arrays straight into their shards.
  ids = dummy_inputs(config)
  init_rngs = {"params": jax.random.key(0), "dropout": jax.random.key(0)}
  boxed = jax.eval_shape(functools.partial(objective.init, init_rngs), ids)
  param_shardings = sharding.named_shardings(boxed, mesh, rules, log=logging.info)
  abstract_params = nn.meta.unbox(boxed)
  tx, schedule = optim.make_optimizer(config.optimizer, max(total_steps, 1), abstract_params, cfg.num_layers)

  init_state = functools.partial(steps.initial_state, objective, tx, ids)

  abstract_state = jax.eval_shape(init_state, jax.random.key(config.seed))
  shardings = state_shardings(abstract_state, param_shardings, tx, mesh)
  abstract_with_shardings = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                         abstract_state, shardings)

  # Data (skipped when only initialising): the iterator position is part of the checkpoint.
  train_iter = None
  if total_steps > 0:
    loader = pretraining_data.make_loader(
        config.data, data_objective, tokenizer, split="train", global_batch_size=config.batch_size,
        seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count())
    train_iter = iter(loader)

  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
  state, start_step = checkpointer.restore_latest(abstract_with_shardings, train_iter)
  writer = metrics_lib.MetricWriter(workdir, resume_step=start_step)
  if state is None:
    start_step = 0
    state = jax.jit(init_state, out_shardings=shardings)(jax.random.key(config.seed))
    if config.init_from:
      state = state.replace(params=load_init_from(config.init_from, cfg, state.params, param_shardings))
    if hasattr(objective, "initial_params"):  # e.g. distillation's student from teacher layers
      state = state.replace(params=objective.initial_params(state.params, param_shardings))
    writer.write(0, {"model/params": count_backbone_params(cfg),
                     "model/params_with_head": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params))})
    logging.info("initialised %s (%d backbone parameters) on mesh %s", cfg.family, count_backbone_params(cfg),
                 dict(zip(mesh.axis_names, mesh.devices.shape)))
  else:
    logging.info("resumed from step %d in %s", start_step, checkpointer.directory)
  if total_steps == 0:
    writer.close()
    checkpointer.close()
    return {}

  batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
  train_step = jax.jit(
      functools.partial(steps.train_step, objective=objective, tx=tx, schedule=schedule,
                        accum_steps=int(config.optimizer.grad_accum_steps)),
      in_shardings=(shardings, batch_sharding), out_shardings=(shardings, NamedSharding(mesh, P())),
      donate_argnums=(0,))
  eval_step = jax.jit(functools.partial(steps.eval_step, objective=objective),
                      in_shardings=(param_shardings, batch_sharding))

  teacher_batch = getattr(objective, "teacher_batch", None)

  def global_batch(local: dict) -> dict:
    batch = {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v)) for k, v in local.items()}
    if teacher_batch is not None:
      # Distillation: the teacher's outputs join the batch from a jitted forward of their own, so the
      # train step stays pure and never holds the teacher's weights as constants.
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        batch = teacher_batch(batch)
    return batch

  def evaluate(params) -> dict[str, float]:
    eval_loader = pretraining_data.make_loader(
        config.data, data_objective, tokenizer, split="validation", global_batch_size=config.batch_size,
        seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count())
    # Batch sums stay on the device until the end: with no host sync per batch, reading and
    # masking the next batch overlaps the forward of the last one.
    pending = []
    for i, batch in enumerate(eval_loader):
      if config.eval_steps and i >= config.eval_steps:
        break
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        pending.append(eval_step(params, global_batch(batch)))
    totals: dict[str, float] = {}
    for sums in jax.device_get(pending):
      for k, v in sums.items():
        totals[k] = totals.get(k, 0.0) + float(v)
    if not totals:
      raise ValueError("the validation split produced no batch; lower config.batch_size or add validation data")
    means = {k: float(v) for k, v in objective.summarize(totals).items()}
    result = {"eval/loss": float(objective.loss(totals, totals))}
    result.update({f"eval/{k}": v for k, v in means.items()})
    return result

  # Compile once ahead of the loop: the cost analysis gives FLOPs per step for MFU.
  first, compiled = None, None
  if start_step < total_steps:  # a finished run (rerun to evaluate / export) compiles no train step
    first = global_batch(next(train_iter))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      compiled = train_step.lower(state, first).compile()
  if config.objective in ("mlm", "mlm_nsp", "mlm_sop"):
    # Model FLOPs (hardware.train_flops), the MFU convention; XLA's count misses library calls.
    flops = hardware.train_flops(cfg, config.batch_size, config.data.max_length, config.data.max_predictions)
  else:
    flops = _flops(compiled) if compiled is not None else None
  progress = metrics_lib.Progress(total_steps, config.batch_size * config.data.max_length, flops,
                                  hardware.peak_flops(cfg.dtype))
  preemption = Preemption()
  pending: list[tuple[int, Any]] = []   # (step, device metrics) not yet read back
  last_eval: dict[str, float] = {}
  model_dir = os.path.join(workdir, "model")
  background = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bert_jax-export")
  exporting: concurrent.futures.Future | None = None

  def start_export() -> concurrent.futures.Future:
    """WORKDIR/model from the current params, written in the background (it overlaps an evaluation)."""
    return background.submit(export_model, objective, state.params, model_dir, config.data.tokenizer)

  def flush(step: int) -> None:
    """Reads back pending metrics; stops (or counts) non-finite steps; writes the log line."""
    nonlocal pending
    if not pending:
      return
    values = jax.device_get([m for _, m in pending])
    for (s, _), m in zip(pending, values):
      if m["nonfinite"] and config.nonfinite == "stop":
        raise NonFiniteLoss(f"non-finite loss or gradient at step {s} (loss={float(m['loss'])}); stopping. "
                            f"The last checkpoint ({checkpointer.steps()[-1] if checkpointer.steps() else 'none'}) "
                            "is intact; lower the learning rate or set config.nonfinite=skip")
    s, m = pending[-1][0], values[-1]
    record = {f"train/{k}": float(v) for k, v in m.items() if k != "nonfinite"}
    record["train/skipped_steps"] = int(jax.device_get(state.skipped))
    rates = progress.rates(s)
    writer.write(s, {**record, **rates})
    progress.print(progress.line(s, record["train/loss"], rates))
    pending = []

  progress.print(f"training {cfg.family} ({count_backbone_params(cfg):,} backbone params) for {total_steps} steps, "
                 f"batch {config.batch_size} x {config.data.max_length}, mesh "
                 f"{dict(zip(mesh.axis_names, mesh.devices.shape))}, from step {start_step}")
  progress.start(start_step)
  try:
    for step in range(start_step + 1, total_steps + 1):
      # Drawn here, not prefetched: a checkpoint after this step must record exactly this position.
      batch = first if step == start_step + 1 else global_batch(next(train_iter))
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state, step_metrics = compiled(state, batch)
      pending.append((step, step_metrics))
      final = step == total_steps
      if step % config.log_every == 0 or final or step == start_step + 1:
        flush(step)  # the first step too: the curve starts at the initial loss
      if step % config.checkpoint_every == 0 or final:
        flush(step)
        # Asynchronous: written while the evaluation below computes.
        checkpointer.save(step, state, train_iter, force=final)
      if final and jax.process_count() == 1:
        # The export (WORKDIR/model) too is file writing that overlaps the final evaluation.
        # Multi-process runs keep only their checkpoints: gathering the params for a single-folder
        # export deadlocked against the checkpointer's collectives in testing. Rerunning the command
        # on one process exports the final checkpoint (below).
        exporting = start_export()
      if (config.eval_every and step % config.eval_every == 0) or final:
        flush(step)
        last_eval = evaluate(state.params)
        writer.write(step, last_eval)
        progress.print(f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
      if preemption.reached(step, checkpointer):
        flush(step)
        checkpointer.save(step, state, train_iter, force=True)
        checkpointer.wait()
        progress.print(f"preemption signal: saved step {step}; exiting")
        break
    else:
      finished_before = start_step >= total_steps
      if finished_before:
        # The same command on a finished run (e.g. one process on a CPU after a multi-host run):
        # evaluate the final checkpoint and write the export that multi-process runs skip.
        last_eval = evaluate(state.params)
        writer.write(start_step, last_eval)
        progress.print(f"eval of the final checkpoint (step {start_step}): "
                       + ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
      if finished_before and jax.process_count() == 1 and not fileio.resolve(model_dir).exists():
        exporting = start_export()
      if exporting is not None:
        exporting.result()
        progress.print(f"saved the trained model in {model_dir} (from_pretrained / init_from)")
  finally:
    background.shutdown()
    checkpointer.close()
    writer.close()
  return last_eval


def export_model(objective, params, path: str, tokenizer_dir: str) -> None:
  """WORKDIR/model: a bert_jax checkpoint folder of the trained encoder (what fine-tuning starts from).

  Single-process runs only (see the caller).

  Written to a temporary folder first: an earlier export stays until the new one is complete.
  """
  from bert_jax.convert.pretrained import save_pretrained
  if not hasattr(objective, "export"):
    return
  model, params = objective.export(params)
  save_pretrained(path, model, jax.device_get(params), tokenizer_from=tokenizer_dir)


def _flops(compiled) -> float | None:
  """FLOPs of one step from XLA's cost analysis (summed over the program's devices)."""
  try:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):
      analysis = analysis[0]
    per_program = float(analysis.get("flops", 0.0))
  except Exception:  # noqa: BLE001 - cost analysis is best effort on some backends
    return None
  return per_program * jax.device_count() if per_program > 0 else None
