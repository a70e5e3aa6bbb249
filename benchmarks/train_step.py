"""Training-step throughput and MFU of the real pretraining step on synthetic MLM batches.

    python benchmarks/train_step.py --family=bert --size=base --batch=32 --length=512 --dtype=bfloat16 \
        [--attention_impl=cudnn] [--remat=none] [--scan] [--steps=20] [--json=out.jsonl]

Builds the model and optimizer exactly as `bert_jax.main` does (MLM objective:
logits only at the masked positions, AdamW, clipping), jits `steps.train_step`
with donation on one device, runs warm-up steps, then times --steps steps
(blocking on the result). Like the command-line entry points it first applies
`bert_jax.runtime.host_allocator` on CPU (BERT_JAX_MALLOC=system measures without it).
FLOPs per step are model FLOPs (`bert_jax.models.flops.train_flops`, the PaLM/MaxText
convention; XLA's cost analysis is printed beside it and undercounts cuBLAS/cuDNN calls
on GPU); MFU divides the achieved FLOP/s by the device's peak
(`bert_jax.runtime.hardware.peak_flops`: the measured matmul peak on CPU, the datasheet
dense peak on accelerators). Prints one JSON line per configuration.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.runtime import host_allocator


def synthetic_batch(batch: int, length: int, vocab: int, predictions: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A full MLM batch of random tokens (no padding): the data pipeline's shapes and dtypes."""
  rng = np.random.default_rng(seed)
  positions = np.sort(np.stack([rng.choice(np.arange(1, length - 1), predictions, replace=False)
                                for _ in range(batch)]), axis=1)
  return {"input_ids": rng.integers(5, vocab, (batch, length), dtype=np.int32),
          "attention_mask": np.ones((batch, length), np.int32),
          "token_type_ids": np.zeros((batch, length), np.int32),
          "masked_positions": positions.astype(np.int32),
          "masked_ids": rng.integers(5, vocab, (batch, predictions), dtype=np.int32),
          "masked_weights": np.ones((batch, predictions), np.float32)}


def time_step(objective, tx, schedule, state, batch, warmup: int, steps_timed: int):
  """Compiles the real train step for `batch` and times it -> (compiled, compile seconds, step times, metrics).

  Donated state, warm-up steps first, each timed step blocked on its metrics and started as the
  training loop starts it (`loop.StepSettler`: on CPU, after the last step's buffer is released,
  so two steps' temporaries never overlap and the resident size does not depend on that race).
  """
  from bert_jax import steps
  from bert_jax.loop import StepSettler
  settler = StepSettler()
  step = jax.jit(functools.partial(steps.train_step, objective=objective, tx=tx, schedule=schedule),
                 donate_argnums=(0,))
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(state)
  times = []
  for _ in range(steps_timed):
    settler.wait(state)
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return compiled, compile_s, times, metrics


def measure(args, impl: str) -> dict:
  from bert_jax import config_lib, models, optim, steps
  from bert_jax.models.flops import train_flops
  from bert_jax.runtime import hardware
  from bert_jax.tasks.pretrain.mlm import MLMObjective
  overrides = {"dtype": args.dtype, "attention_impl": impl, "remat_policy": args.remat,
               "scan_layers": args.scan, "max_position_embeddings": max(512, args.length)}
  if args.vocab_size:
    overrides["vocab_size"] = args.vocab_size
  if args.no_dropout:
    overrides.update(dropout_rate=0.0, attention_dropout_rate=0.0)
  if args.attention_dropout is not None:
    overrides.update(attention_dropout_rate=args.attention_dropout)
  cfg = models.build(args.family, args.size, **overrides)
  objective = MLMObjective(cfg, with_pair=False)
  opt_config = config_lib.base_config().optimizer
  predictions = max(1, round(args.length * 0.15))
  ids = jax.ShapeDtypeStruct((1, args.length), jnp.int32)
  params = nn.meta.unbox(jax.eval_shape(objective.init, {"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                        ids))
  tx, schedule = optim.make_optimizer(opt_config, 10_000, params, cfg.num_layers)
  state = jax.jit(functools.partial(steps.initial_state, objective, tx, ids))(jax.random.key(0))
  params = state.params
  batch = jax.device_put(synthetic_batch(args.batch, args.length, cfg.vocab_size, predictions))
  compiled, compile_s, times, metrics = time_step(objective, tx, schedule, state, batch, args.warmup, args.steps)
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  flops = float(analysis.get("flops", 0.0))
  # The median step: robust to other jobs on a shared machine (the mean is printed too).
  seconds = float(np.median(times))
  peak = hardware.peak_flops(args.dtype, refresh=True)
  model_flops = train_flops(cfg, args.batch, args.length, predictions)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  return {"family": args.family, "size": args.size, "batch": args.batch, "length": args.length,
          "dtype": args.dtype, "attention_impl": impl, "remat": args.remat, "scan": args.scan,
          "dropout": not args.no_dropout, "attention_dropout": cfg.attention_dropout_rate,
          "prng": jax.config.jax_default_prng_impl, "device": jax.devices()[0].device_kind, "params": n_params,
          "compile_s": round(compile_s, 2), "step_s": round(seconds, 5), "mean_step_s": round(float(np.mean(times)), 5),
          "tokens_per_s": round(args.batch * args.length / seconds, 1),
          "model_tflops_per_step": round(model_flops / 1e12, 4), "xla_tflops_per_step": round(flops / 1e12, 4),
          "achieved_tflops": round(model_flops / seconds / 1e12, 2),
          "mfu": round(model_flops / seconds / peak, 4) if peak else None,
          "loss": float(metrics["loss"])}


def compare_impls(args) -> dict:
  """Max |difference| of the last hidden state between attention_impl xla and cudnn (padded batch)."""
  from bert_jax import models
  from bert_jax.models.model import EncoderModel
  outs = {}
  batch = synthetic_batch(4, args.length, 1000, 8)
  batch["attention_mask"][:, args.length // 2:] = 0  # right padding exercises the key lengths
  for impl in ("xla", "cudnn"):
    cfg = models.build(args.family, args.size, dtype=args.dtype, attention_impl=impl,
                       max_position_embeddings=max(512, args.length))
    model = EncoderModel(cfg)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    out = jax.jit(model.apply)({"params": params}, batch["input_ids"], batch["attention_mask"])
    valid = batch["attention_mask"][..., None].astype(bool)
    outs[impl] = np.where(valid, np.asarray(out.last_hidden_state, np.float32), 0)
  return {"compare": f"{args.family}-{args.size} {args.dtype} xla vs cudnn",
          "max_abs_diff_valid_tokens": float(np.max(np.abs(outs["xla"] - outs["cudnn"])))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--family", default="bert")
  parser.add_argument("--size", default="small")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--attention_impl", default="xla", help="xla | cudnn | both")
  parser.add_argument("--remat", default="none")
  parser.add_argument("--scan", action="store_true")
  parser.add_argument("--no_dropout", action="store_true")
  parser.add_argument("--attention_dropout", type=float, default=None, help="override (0 lets cuDNN fuse attention)")
  parser.add_argument("--vocab_size", type=int, default=None, help="override the family's vocabulary")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--json", default="", help="append the result lines to this file")
  parser.add_argument("--prng", default="", help="jax_default_prng_impl for dropout bits, e.g. unsafe_rbg")
  parser.add_argument("--compare_impls", action="store_true", help="only compare xla and cudnn attention outputs")
  args = parser.parse_args()
  if args.prng:
    jax.config.update("jax_default_prng_impl", args.prng)
  if args.compare_impls:
    print(json.dumps(compare_impls(args)), flush=True)
    return
  impls = ("xla", "cudnn") if args.attention_impl == "both" else (args.attention_impl,)
  for impl in impls:
    try:
      result = measure(args, impl)
    except Exception as e:  # noqa: BLE001 - one failing variant should not hide the others
      result = {"family": args.family, "size": args.size, "attention_impl": impl, "error": f"{type(e).__name__}: {e}"[:500]}
    line = json.dumps(result)
    print(line, flush=True)
    if args.json:
      with open(args.json, "a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
  host_allocator.tune_for_cpu()  # as bert_jax.main does, before JAX starts its threads
  main()
