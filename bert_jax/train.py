"""`train_and_evaluate(config, workdir)`: pretraining; what differs from fine-tuning, on the one loop.

Sections: the objective named by config.objective (bert_jax.tasks.registry) -> the state set
up straight into its shards (bert_jax.loop) -> the resumable grain pipeline of masked batches
(its position is part of every checkpoint) -> the step compiled once ahead of the loop (its
cost gives FLOPs for MFU) -> the loop -> WORKDIR/model, written while the final evaluation runs.
Running the same command on the same workdir resumes exactly: params, optimizer state, step,
RNG and the data iterator's position.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from bert_jax import checkpointing, config_lib, loop, metrics as metrics_lib, sharding, steps
from bert_jax.convert.pretrained import META_FILE, from_pretrained, save_pretrained
from bert_jax.data.pretraining import pipeline
from bert_jax.data.tokenizers import check_fits, load_tokenizer
from bert_jax.models import count_backbone_params
from bert_jax.models.config import ModelConfig
from bert_jax.runtime import fileio, hardware
from bert_jax.tasks import registry
from bert_jax.tasks.base import Objective


def make_objective(config: ml_collections.ConfigDict, cfg: ModelConfig) -> Objective:
  """The pretraining objective config.objective names in the task registry."""
  return registry.get(config.objective, registry.PRETRAIN).cls.from_config(cfg, config)


def input_shape(config: ml_collections.ConfigDict) -> jax.ShapeDtypeStruct:
  """The [1, data.max_length] int32 ids the params are initialised for."""
  return jax.ShapeDtypeStruct((1, config.data.max_length), jnp.int32)


def init_from(path: str, cfg: ModelConfig, params, param_shardings):
  """`params` with every tensor of a pretrained checkpoint (bert_jax or HF folder); the rest stays fresh."""
  try:
    _, pretrained = from_pretrained(path, head="mlm", scan_layers=cfg.scan_layers)
  except KeyError:
    _, pretrained = from_pretrained(path, head=None, scan_layers=cfg.scan_layers)
  merged, _ = loop.merge_pretrained(params, pretrained, seeds=1, source=path)
  return jax.device_put(merged, param_shardings)


def export_model(objective: Objective, params, workdir: str, tokenizer_dir: str, step: int) -> list[str]:
  """WORKDIR/model (what fine-tuning starts from) and any other folder the objective keeps, as bert_jax
  checkpoint folders recording the step they hold; returns their paths.

  params: device arrays (one process) or host arrays (gathered, see the caller). save_pretrained
  writes a temporary folder first: an earlier export stays until the new one is complete, and a
  write that fails raises SaveFailed naming the folder (the checkpoints hold the same params).
  """
  written = []
  for name, (model, kept) in objective.export(params).items():
    path = os.path.join(workdir, name)
    try:
      save_pretrained(path, model, jax.device_get(kept), tokenizer_from=tokenizer_dir,
                      extra={"pretraining": {"step": step}})
    except Exception as e:  # noqa: BLE001 - whatever the storage raised, reported with the step and path
      raise checkpointing.folder_write_failed(
          f"the trained model of step {step}", path, e, f"The checkpoints are complete and {path} is as it was",
          "it writes the model from the final checkpoint") from e
    written.append(path)
  return written


def exported_step(path: str) -> int | None:
  """The step a WORKDIR/model folder holds (None: no complete folder, or one that does not say)."""
  try:
    with fileio.resolve(os.path.join(path, META_FILE)).open() as f:
      return json.load(f).get("pretraining", {}).get("step")
  except (OSError, ValueError):
    return None


def compiled_flops(compiled) -> float | None:
  """FLOPs of one step from XLA's cost analysis (summed over the program's devices)."""
  try:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):
      analysis = analysis[0]
    per_program = float(analysis.get("flops", 0.0))
  except Exception:  # noqa: BLE001 - cost analysis is best effort on some backends
    return None
  return per_program * jax.device_count() if per_program > 0 else None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains until config.total_steps; returns the last evaluation metrics."""
  run_dir = fileio.resolve(workdir)  # local (made absolute) or a bucket URI
  run_dir.mkdir(parents=True, exist_ok=True)
  workdir = os.fspath(run_dir)
  spec = registry.get(config.objective, registry.PRETRAIN)
  cfg = config_lib.model_config(config)
  rules = sharding.rules_from_config(config.sharding_rules)
  mesh = sharding.make_mesh(config.mesh.to_dict())
  loop.validate(config, mesh, cfg)
  tokenizer = load_tokenizer(config.data.tokenizer)
  check_fits(tokenizer, cfg.vocab_size)
  objective = spec.cls.from_config(cfg, config)
  objective.place(mesh, rules)
  total_steps = int(config.total_steps)
  setup = loop.setup_state(objective, config.optimizer, total_steps, cfg.num_layers, input_shape(config), mesh,
                           rules)

  def loader(split: str) -> pipeline.Loader:
    return pipeline.make_loader(config.data, spec.data_objective, tokenizer, split=split,
                                global_batch_size=config.batch_size, seed=config.seed,
                                process_index=jax.process_index(), process_count=jax.process_count())

  # Data (skipped when only initialising): the iterator position is part of the checkpoint.
  train_iter = iter(loader("train")) if total_steps > 0 else None
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
  state, start_step, fresh = loop.restore_or_init(checkpointer, setup, config.seed, train_iter)
  writer = metrics_lib.MetricWriter(workdir, resume_step=None if fresh else start_step)
  if fresh:
    if config.init_from:
      state = state.replace(params=init_from(config.init_from, cfg, state.params, setup.param_shardings))
    state = state.replace(params=objective.initial_params(state.params, setup.param_shardings))
    writer.write(0, loop.param_counts(cfg, setup.abstract_params))
    logging.info("initialised %s (%d backbone parameters) on mesh %s", cfg.family, count_backbone_params(cfg),
                 dict(zip(mesh.axis_names, mesh.devices.shape)))
  if total_steps == 0:
    writer.close()
    checkpointer.close()
    return {}

  batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
  train_step = jax.jit(
      functools.partial(steps.train_step, objective=objective, tx=setup.tx, schedule=setup.schedule,
                        accum_steps=int(config.optimizer.grad_accum_steps)),
      in_shardings=(setup.shardings, batch_sharding), out_shardings=(setup.shardings, NamedSharding(mesh, P())),
      donate_argnums=(0,))
  eval_step = jax.jit(functools.partial(steps.eval_step, objective=objective),
                      in_shardings=(setup.param_shardings, batch_sharding))

  def global_batch(local: dict) -> dict:
    batch = {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v)) for k, v in local.items()}
    # Distillation adds the teacher's outputs here, from a jitted forward of their own, so the
    # train step stays pure and never holds the teacher's weights as constants.
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return objective.prepare_batch(batch)

  def evaluate_params(params) -> dict[str, float]:
    # Batch sums stay on the device until the end: with no host sync per batch, reading and
    # masking the next batch overlaps the forward of the last one.
    pending = []
    for i, batch in enumerate(loader("validation")):
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
    return {"eval/loss": float(objective.loss(totals, totals)), **{f"eval/{k}": v for k, v in means.items()}}

  def evaluate(step: int, state: steps.TrainState, title: str | None = None) -> dict[str, float]:
    values = evaluate_params(state.params)
    writer.write(step, values)
    progress.print(f"{title or f'eval at step {step}'}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    last_eval.update(values)
    return values

  # Compile once ahead of the loop: the cost analysis gives FLOPs per step for MFU.
  first, compiled = None, None
  if start_step < total_steps:  # a finished run (rerun to evaluate / export) compiles no train step
    first = global_batch(next(train_iter))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      compiled = train_step.lower(state, first).compile()
  # Model FLOPs (the MFU convention) where the objective counts them: XLA's count misses library calls.
  flops = objective.model_flops(config.batch_size, config.data.max_length, config.data.max_predictions)
  if flops is None and compiled is not None:
    flops = compiled_flops(compiled)
  progress = metrics_lib.Progress(total_steps, config.batch_size * config.data.max_length, flops,
                                  hardware.peak_flops(cfg.dtype))
  last_eval: dict[str, float] = {}
  model_dir = os.path.join(workdir, "model")
  background = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bert_jax-export")
  exporting: list[concurrent.futures.Future] = []

  def start_export(state: steps.TrainState, step: int) -> None:
    """WORKDIR/model from the state's params, written in the background (it overlaps an evaluation).

    With several processes every one first waits for the final checkpoint (its collectives run on
    Orbax's threads, and a gather racing them deadlocks) and gathers the params to its host, in
    the same order on all of them; process 0 then writes the folders while the others go on.
    """
    if jax.process_count() > 1:
      checkpointer.wait()
      params = sharding.to_host(state.params)
      if jax.process_index() == 0:
        exporting.append(background.submit(export_model, objective, params, workdir, config.data.tokenizer, step))
      return
    exporting.append(background.submit(export_model, objective, state.params, workdir, config.data.tokenizer,
                                       step))

  def step_fn(state: steps.TrainState, step: int):
    # Drawn here, not prefetched: a checkpoint after this step must record exactly this position.
    batch = first if step == start_step + 1 else global_batch(next(train_iter))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return compiled(state, batch)

  runner = loop.Loop(config, writer=writer, progress=progress, checkpointer=checkpointer, total_steps=total_steps,
                     eval_every=int(config.eval_every), checkpoint_every=int(config.checkpoint_every),
                     data_iterator=train_iter)
  progress.print(f"training {cfg.family} ({count_backbone_params(cfg):,} backbone params) for {total_steps} steps, "
                 f"batch {config.batch_size} x {config.data.max_length}, mesh "
                 f"{dict(zip(mesh.axis_names, mesh.devices.shape))}, from step {start_step}")
  try:
    state, preempted = runner.run(state, start_step, step_fn, evaluate,
                                  on_final=lambda final: start_export(final, total_steps))
    if not preempted and start_step >= total_steps:
      # The same command on a finished run: evaluate the final checkpoint, and write the export
      # if a run stopped before writing it.
      evaluate(start_step, state, f"eval of the final checkpoint (step {start_step})")
      # (Several processes always write it: whether a folder exists is not theirs to agree on.)
      if jax.process_count() > 1 or exported_step(model_dir) != start_step:  # missing, stale or cut short
        start_export(state, start_step)
    for future in exporting:
      for path in future.result():
        progress.print(f"saved the trained model in {path} (from_pretrained / init_from)")
  finally:
    background.shutdown()
    checkpointer.close()
    writer.close()
  return last_eval
