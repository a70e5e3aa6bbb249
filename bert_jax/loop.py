"""The one training loop that pretraining (`train.py`) and fine-tuning (`finetune.py`) share.

    setup = loop.setup_state(objective, config.optimizer, total_steps, cfg.num_layers, input_shape, mesh, rules,
                             seeds=seeds)
    state, start_step = loop.restore_or_init(checkpointer, setup, config.seed, data_iterator)
    runner = loop.Loop(config, setup, writer=..., progress=..., checkpointer=..., total_steps=...)
    state, preempted = runner.run(state, start_step, step_fn, evaluate)

Sections: checks every run needs -> the state set up straight into its shards (shapes by
`jax.eval_shape`, shardings from the logical axis rules, `jax.jit(init, out_shardings=...)`;
several seeds stack on a leading axis and train together under `vmap`) -> restore the newest
readable checkpoint or initialise -> the cadence: log (with the non-finite stop), checkpoint,
evaluate, preemption. The trainers keep only what differs: their data, their evaluation and
what they write at the end.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import time
from collections.abc import Callable
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

from bert_jax import checkpointing, metrics as metrics_lib, optim, sharding, steps
from bert_jax.models import count_backbone_params
from bert_jax.models.config import ModelConfig
from bert_jax.runtime import profiling


class NonFiniteLoss(RuntimeError):
  """A step produced a non-finite loss or gradient and config.nonfinite == "stop"."""


# Checks ------------------------------------------------------------------------------------------

def validate(config: ml_collections.ConfigDict, mesh, cfg: ModelConfig | None = None) -> None:
  """Clear errors for settings every run shares, which would otherwise fail deep inside XLA."""
  shape = dict(zip(mesh.axis_names, mesh.devices.shape))
  shards = shape["data"] * shape["fsdp"]
  accum = int(config.optimizer.grad_accum_steps)
  if config.batch_size % (shards * accum):
    raise ValueError(f"config.batch_size={config.batch_size} must divide by mesh.data * mesh.fsdp "
                     f"({shards}) times optimizer.grad_accum_steps ({accum})")
  if config.batch_size % jax.process_count():
    raise ValueError(f"config.batch_size={config.batch_size} must divide by the {jax.process_count()} processes")
  if cfg is not None:
    for name, size in (("num_heads", cfg.num_heads), ("intermediate_size", cfg.intermediate_size)):
      if size % shape["tensor"]:
        raise ValueError(f"config.model.{name}={size} must divide by mesh.tensor={shape['tensor']}")
    if cfg.max_length > 0 and config.data.max_length > cfg.max_length:
      raise ValueError(f"config.data.max_length={config.data.max_length} exceeds the position table "
                       f"(model.max_position_embeddings={cfg.max_position_embeddings} -> {cfg.max_length} tokens)")
  if config.nonfinite not in ("stop", "skip"):
    raise ValueError(f"config.nonfinite={config.nonfinite!r}: expected 'stop' or 'skip'")


# The state, straight into its shards --------------------------------------------------------------

@dataclasses.dataclass
class StateSetup:
  """What the loop and the trainers need to know about the train state before it exists.

  init: seed keys [seeds, 2] -> the initial TrainState, jitted into its shards.
  shardings: NamedShardings of the (stacked) TrainState; param_shardings: one seed's params'.
  abstract: the TrainState as ShapeDtypeStructs with shardings (what a restore fills in).
  abstract_params: one seed's unboxed parameter shapes.
  """

  init: Callable[[jax.Array], steps.TrainState]
  shardings: Any
  param_shardings: Any
  abstract: Any
  abstract_params: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  mesh: Any
  seeds: int

  @property
  def stacked_param_shardings(self):
    return with_seed_axis(self.param_shardings, self.seeds)


def state_shardings(abstract_state: steps.TrainState, param_shardings, tx, mesh) -> steps.TrainState:
  """Optimizer moments follow their parameters' shardings; scalars and counters are replicated."""
  replicated = NamedSharding(mesh, P())
  opt_shardings = optax.tree_map_params(tx, lambda _, s: s, abstract_state.opt_state, param_shardings,
                                        transform_non_params=lambda _: replicated)
  return steps.TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings,
                          rng=replicated, skipped=replicated)


def with_seed_axis(shardings, seeds: int):
  """NamedShardings of one seed's arrays -> those of the [seeds, ...] stack (the seed axis unsharded)."""
  if seeds == 1:
    return shardings
  return jax.tree.map(lambda s: NamedSharding(s.mesh, P(None, *s.spec)), shardings,
                      is_leaf=lambda x: isinstance(x, NamedSharding))


def seed_slice(tree, index: int, seeds: int):
  """One seed's slice of a [seeds, ...] stack (the tree itself when there is one seed)."""
  return tree if seeds == 1 else jax.tree.map(lambda x: x[index], tree)


def seed_keys(seed: int, seeds: int) -> jax.Array:
  """uint32 [seeds, 2]: the key data of seeds seed, seed + 1, ..."""
  return jnp.stack([jax.random.key_data(jax.random.key(seed + k)) for k in range(seeds)])


def setup_state(objective, optimizer_config: ml_collections.ConfigDict, total_steps: int, num_layers: int,
                input_shape: jax.ShapeDtypeStruct, mesh, rules, *, seeds: int = 1) -> StateSetup:
  """eval_shape of the objective's params -> shardings from the rules -> optimizer -> the jitted init."""
  init_rngs = {"params": jax.random.key(0), "dropout": jax.random.key(0)}
  boxed = jax.eval_shape(functools.partial(objective.init, init_rngs), input_shape)
  param_shardings = sharding.named_shardings(boxed, mesh, rules, log=logging.info)
  abstract_params = nn.meta.unbox(boxed)
  tx, schedule = optim.make_optimizer(optimizer_config, max(total_steps, 1), abstract_params, num_layers)
  init_one = functools.partial(steps.initial_state, objective, tx, input_shape)

  def init(keys: jax.Array) -> steps.TrainState:
    if seeds == 1:
      return init_one(jax.random.wrap_key_data(keys[0]))
    return jax.vmap(lambda k: init_one(jax.random.wrap_key_data(k)))(keys)

  keys = jax.ShapeDtypeStruct((seeds, 2), jnp.uint32)
  abstract_one = jax.eval_shape(lambda k: init_one(jax.random.wrap_key_data(k)), jax.ShapeDtypeStruct((2,), jnp.uint32))
  shardings = with_seed_axis(state_shardings(abstract_one, param_shardings, tx, mesh), seeds)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          jax.eval_shape(init, keys), shardings)
  return StateSetup(jax.jit(init, out_shardings=shardings), shardings, param_shardings, abstract,
                    abstract_params, tx, schedule, mesh, seeds)


def restore_or_init(checkpointer: checkpointing.Checkpointer, setup: StateSetup, seed: int,
                    data_iterator=None, pretrained=None, source: str = "") -> tuple[steps.TrainState, int, bool]:
  """(state, step, fresh): the newest readable checkpoint (and the iterator's position), else step 0:
  initialised, with every tensor of `pretrained` (a params tree read from `source`) in place."""
  state, step = checkpointer.restore_latest(setup.abstract, data_iterator)
  if state is not None:
    logging.info("resumed from step %d in %s", step, checkpointer.directory)
    return state, step, False
  keys = seed_keys(seed, setup.seeds)
  if pretrained is None:
    return setup.init(keys), 0, True
  loaded, _ = pretrained_leaves(setup.abstract.params, pretrained, setup.seeds, source)
  # Placed as one seed's params are sharded (each process gives the whole tensor, as device_put takes it).
  loaded = jax.tree.map(lambda value, shard: None if value is None else jax.device_put(value, shard),
                        loaded, setup.param_shardings, is_leaf=lambda x: x is None)

  def init(keys, loaded):
    # One program: the tensors `loaded` replaces are never drawn (XLA drops their random init, most
    # of this program's compile time); the fresh ones are drawn as `setup.init` draws them.
    state = setup.init(keys)
    take = lambda value, fresh: fresh if value is None else jnp.broadcast_to(value, fresh.shape)
    return state.replace(params=jax.tree.map(take, loaded, state.params, is_leaf=lambda x: x is None))
  return jax.jit(init, out_shardings=setup.shardings)(keys, loaded), 0, True


def pretrained_leaves(params, pretrained, seeds: int, source: str) -> tuple[Any, list[str]]:
  """params' tree (arrays or shapes; stacked over seeds when seeds > 1) holding, at each path
  `pretrained` has, its tensor (host, params' dtype, one seed's shape), and None elsewhere.

  Returns that tree and the paths that stay freshly initialised; a shape that differs raises.
  """
  flat = dict(jax.tree_util.tree_flatten_with_path(pretrained)[0])
  fresh = []

  def pick(path, leaf):
    if path not in flat:
      fresh.append(jax.tree_util.keystr(path))
      return None
    value = np.asarray(flat[path], leaf.dtype)
    target = leaf.shape[1:] if seeds > 1 else leaf.shape
    if value.shape != target:
      raise ValueError(f"init_from={source}: {jax.tree_util.keystr(path)} has shape {value.shape}, "
                       f"the model needs {target}")
    return value
  loaded = jax.tree_util.tree_map_with_path(pick, params)
  logging.info("init_from %s: %d tensors loaded; freshly initialised: %s", source,
               len(jax.tree.leaves(params)) - len(fresh), fresh or "none")
  return loaded, fresh


def merge_pretrained(params, pretrained, seeds: int, source: str) -> tuple[Any, list[str]]:
  """params (host copies; stacked over seeds when seeds > 1) with every tensor `pretrained` has.

  Returns the merged tree and the paths that stay freshly initialised; a shape that differs raises.
  """
  params = jax.device_get(params)
  loaded, fresh = pretrained_leaves(params, pretrained, seeds, source)
  take = lambda value, leaf: leaf if value is None else np.broadcast_to(value, leaf.shape)
  return jax.tree.map(take, loaded, params, is_leaf=lambda x: x is None), fresh


def param_counts(cfg: ModelConfig, abstract_params) -> dict[str, int]:
  """The step-0 metrics line: the backbone as the reference models count it, and everything trained."""
  return {"model/params": count_backbone_params(cfg),
          "model/params_with_head": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params))}


# The cadence ------------------------------------------------------------------------------------

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


# On the CPU backend (see StepSettler): the pause before dispatching the next step (without it one
# step in ~80 still overlapped the last; 5 ms cost ~5% of steps/s), and the step time from which it
# is taken (shorter steps have too little working memory to be worth it).
SETTLE_S = 0.001
SETTLE_FROM_S = 0.02


class StepSettler:
  """On XLA:CPU, lets each step release its working memory before the next one claims its own.

  XLA:CPU gives an execution one buffer for all its intermediate values (fine-tuning MiniLM:
  225-817 MiB, by rows; bert-small pretraining at 16 x 512: ~2 GiB) and frees it a millisecond
  or so *after* it marks the outputs ready. A step dispatched ahead starts the moment its inputs
  are ready, so it claims its buffer while the last one still holds its own: two at once, and
  with the one never-shrinking heap of runtime/host_allocator.py every such pair raises the
  resident size for the rest of the run. Fine-tuning all-MiniLM-L6-v2 on the movie set peaked
  at 3.8-4.7 GiB that way, 2.6 GiB with the steps settled, at the same steps/s within the
  noise: a CPU step gains little from being queued early (its host work is ~2 ms).

  So on the CPU backend the loop waits for each step, pauses SETTLE_S for the release (which
  follows the outputs by about a millisecond; no pause after steps shorter than SETTLE_FROM_S),
  then dispatches the next. On accelerators (device allocators, and a host that must keep them
  fed) it does nothing.
  """

  def __init__(self, enabled: bool | None = None):
    self.enabled = jax.default_backend() == "cpu" if enabled is None else enabled
    self._ready_at: float | None = None

  def wait(self, state) -> None:
    """Before dispatching a step on `state`: the step that made it done, and its memory released."""
    if not self.enabled:
      return
    jax.block_until_ready(state)
    now = time.perf_counter()
    if self._ready_at is None or now - self._ready_at >= SETTLE_FROM_S:
      time.sleep(SETTLE_S)
    self._ready_at = time.perf_counter()


class Loop:
  """Steps from start_step + 1 to total_steps with the run's log / checkpoint / evaluation cadence.

  step_fn(state, step) -> (state, device metrics) runs one optimizer step (the trainer draws its
  batch). evaluate(step, state) evaluates and writes its own metrics. data_iterator, when given,
  is checkpointed with the state. on_final(state) runs once the final checkpoint is started and
  before the final evaluation (so writing an export overlaps it). Metrics of several seeds are
  [seeds]-shaped: the log line holds their mean and `train/loss_seed<k>`.
  """

  def __init__(self, config: ml_collections.ConfigDict, *, writer: metrics_lib.MetricWriter,
               progress: metrics_lib.Progress, checkpointer: checkpointing.Checkpointer, total_steps: int,
               eval_every: int, checkpoint_every: int, seeds: int = 1, data_iterator=None,
               examples_per_step: int | None = None):
    self.config = config
    self.writer, self.progress, self.checkpointer = writer, progress, checkpointer
    self.total_steps, self.eval_every, self.checkpoint_every = total_steps, eval_every, checkpoint_every
    self.seeds, self.data_iterator, self.examples_per_step = seeds, data_iterator, examples_per_step
    self.preemption = Preemption()
    self._pending: list[tuple[int, Any]] = []   # (step, device metrics) not yet read back

  def flush(self, state: steps.TrainState) -> None:
    """Reads back pending metrics; stops (or counts) non-finite steps; writes the log line."""
    if not self._pending:
      return
    values = jax.device_get([m for _, m in self._pending])
    for (s, _), m in zip(self._pending, values):
      if np.any(m["nonfinite"]) and self.config.nonfinite == "stop":
        saved = self.checkpointer.steps()
        raise NonFiniteLoss(f"non-finite loss or gradient at step {s} (loss={np.mean(m['loss'])}); stopping. "
                            f"The last checkpoint ({saved[-1] if saved else 'none'}) is intact; lower the "
                            "learning rate or set config.nonfinite=skip")
    s, m = self._pending[-1][0], values[-1]
    record = {f"train/{k}": float(np.mean(v)) for k, v in m.items() if k != "nonfinite"}
    if self.seeds > 1:
      record.update({f"train/loss_seed{k}": float(v) for k, v in enumerate(m["loss"])})
    record["train/skipped_steps"] = int(np.sum(jax.device_get(state.skipped)))
    rates = self.progress.rates(s)
    if self.examples_per_step:
      rates["perf/examples_per_sec"] = rates["perf/steps_per_sec"] * self.examples_per_step
    real = record.get("train/real_token_fraction")
    self.writer.write(s, {**record, **rates})
    self.progress.print(self.progress.line(s, record["train/loss"], rates, real))
    self._pending = []

  def run(self, state: steps.TrainState, start_step: int, step_fn, evaluate,
          on_final: Callable[[steps.TrainState], None] | None = None) -> tuple[steps.TrainState, bool]:
    """Trains to total_steps; returns (state, preempted). A SIGTERM saves the current step first."""
    config = self.config
    self.progress.start(start_step)
    settler = StepSettler()
    # The steps after the first (compiling) one: config.profile_steps of them, traced.
    profiler = profiling.StepProfiler(os.path.join(os.fspath(self.writer.path.parent), "profile"),
                                      config.get("profile_steps", 0), start_step + 2)
    try:
      return self._steps(state, start_step, step_fn, evaluate, on_final, settler, profiler)
    finally:
      profiler.close()

  def _steps(self, state, start_step, step_fn, evaluate, on_final, settler, profiler):
    config = self.config
    for step in range(start_step + 1, self.total_steps + 1):
      settler.wait(state)
      profiler.before(step)
      state, step_metrics = step_fn(state, step)
      profiler.after(step, state)
      self._pending.append((step, step_metrics))
      final = step == self.total_steps
      if step % config.log_every == 0 or final or step == start_step + 1:
        self.flush(state)  # the first step too: the curve starts at the initial loss
      if (self.checkpoint_every and step % self.checkpoint_every == 0) or final:
        self.flush(state)
        # Asynchronous: written while the evaluation below computes.
        self.checkpointer.save(step, state, self.data_iterator, force=final)
      if final and on_final is not None:
        on_final(state)
      if (self.eval_every and step % self.eval_every == 0) or final:
        self.flush(state)
        evaluate(step, state)
      if self.preemption.reached(step, self.checkpointer):
        self.flush(state)
        self.checkpointer.save(step, state, self.data_iterator, force=True)
        self.checkpointer.wait()
        self.progress.print(f"preemption signal: saved step {step}; exiting")
        return state, True
    return state, False
