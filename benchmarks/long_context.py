"""ModernBERT's pretraining step at long and short rows with the same tokens per batch: tokens/s, MFU, memory.

    python benchmarks/long_context.py --size=mini --rows=16x512,1x8192 [--layers=N] [--local=band|full]
        [--packed=DOC_LENGTH] [--steps=3] [--runs=3] [--json=benchmarks/results/cpu_long_context.jsonl]

Each `ROWSxLENGTH` runs in its own process (so the peak resident memory is that shape's), the
shapes alternating --runs times, and the summary compares each shape's fastest run:
the real step (`steps.train_step`: MLM at 30% of the positions, AdamW) on synthetic batches
(`benchmarks/train_step.py::synthetic_batch`; --packed splits each row into documents of
that many tokens with `segment_ids`, as ModernBERT trains). MFU counts model FLOPs with
local layers charged for their window only (`bert_jax.models.flops.train_flops`), against
the measured CPU matmul peak (`bert_jax.runtime.hardware.peak_flops`). Memory: XLA's
temporaries of the compiled step (`memory_analysis`) and the process's peak RSS, both also
per row. --local=full forces the masked [l, l] product on local layers (the old path), for
comparison with the blocks (models/local_attention.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MiB = 1024 ** 2


def measure(args) -> dict:
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  from train_step import synthetic_batch, time_step

  from bert_jax import config_lib, models, optim, steps
  from bert_jax.models import local_attention
  from bert_jax.models.flops import train_flops
  from bert_jax.runtime import hardware
  from bert_jax.tasks.pretrain.mlm import MLMObjective
  rows, length = (int(n) for n in args.shape.split("x"))
  if args.local == "full":
    local_attention.pays = lambda *a, **k: False  # the masked full product on every local layer
  overrides = {"dtype": args.dtype, "remat_policy": args.remat, "max_position_embeddings": max(8192, length)}
  if args.layers:
    overrides["num_layers"] = args.layers
  cfg = models.build("modernbert", args.size, **overrides)
  objective = MLMObjective(cfg, with_pair=False)
  predictions = max(1, round(length * 0.3))  # ModernBERT's 30% masking
  ids = jax.ShapeDtypeStruct((1, length), jnp.int32)
  params = nn.meta.unbox(jax.eval_shape(objective.init, {"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                        ids))
  tx, schedule = optim.make_optimizer(config_lib.base_config().optimizer, 10_000, params, cfg.num_layers)
  state = jax.jit(functools.partial(steps.initial_state, objective, tx, ids))(jax.random.key(0))
  batch = synthetic_batch(rows, length, cfg.vocab_size, predictions)
  if args.packed:
    batch["segment_ids"] = (np.arange(length) // args.packed + 1)[None].repeat(rows, 0).astype(np.int32)
  batch = jax.device_put(batch)
  compiled, compile_s, times, metrics = time_step(objective, tx, schedule, state, batch, args.warmup, args.steps)
  temp = compiled.memory_analysis().temp_size_in_bytes
  seconds = float(np.median(times))
  peak = hardware.peak_flops(args.dtype, refresh=True)
  model_flops = train_flops(cfg, rows, length, predictions)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return {"family": "modernbert", "size": args.size, "layers": cfg.num_layers, "rows": rows, "length": length,
          "packed": args.packed or None, "local": args.local, "dtype": args.dtype, "remat": args.remat,
          "window": cfg.local_attention, "device": jax.devices()[0].device_kind,
          "compile_s": round(compile_s, 1), "step_s": round(seconds, 3), "steps": args.steps,
          "tokens_per_s": round(rows * length / seconds, 1), "model_tflops_per_step": round(model_flops / 1e12, 4),
          "peak_gflops": round(peak / 1e9, 1), "mfu": round(model_flops / seconds / peak, 4),
          "temp_mib": round(temp / MiB, 1), "temp_mib_per_row": round(temp / MiB / rows, 1),
          "peak_rss_mib": round(rss / MiB), "loss": round(float(metrics["loss"]), 3)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="mini")
  parser.add_argument("--layers", type=int, default=0, help="override the size's layer count (0: keep)")
  parser.add_argument("--rows", default="16x512,1x8192", help="comma-separated ROWSxLENGTH shapes")
  parser.add_argument("--local", default="band", choices=("band", "full"))
  parser.add_argument("--packed", type=int, default=0, help="> 0: documents of this many tokens per row")
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--remat", default="none")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--runs", type=int, default=3, help="processes per shape, alternating; the fastest counts")
  parser.add_argument("--json", default="", help="append the result lines to this file")
  parser.add_argument("--shape", default="", help=argparse.SUPPRESS)  # one shape, in this process
  args = parser.parse_args()
  if args.shape:
    print(json.dumps(measure(args)), flush=True)
    return
  shapes = args.rows.split(",")
  runs = {shape: [] for shape in shapes}
  for run in range(args.runs):  # whole processes, the shapes alternating, so drift hits both alike
    for shape in shapes:
      command = [sys.executable, os.path.abspath(__file__), f"--shape={shape}"] + [
          a for a in sys.argv[1:] if not a.startswith(("--rows", "--json", "--runs"))]
      done = subprocess.run(command, capture_output=True, text=True)
      lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
      result = json.loads(lines[-1]) if lines else {"shape": shape, "error": done.stderr.strip()[-500:]}
      result["run"] = run
      print(json.dumps(result), flush=True)
      runs[shape].append(result)
      if args.json:
        with open(args.json, "a") as f:
          f.write(json.dumps(result) + "\n")
  best = [min((r for r in runs[shape] if "mfu" in r), key=lambda r: r["step_s"], default=None) for shape in shapes]
  if len(best) == 2 and None not in best:
    short, long = best
    # Achieved model FLOP/s of each shape's fastest run: the MFU ratio against one peak.
    ratio = (long["model_tflops_per_step"] / long["step_s"]) / (short["model_tflops_per_step"] / short["step_s"])
    print(f"fastest of {args.runs} runs: step {short['step_s']} s vs {long['step_s']} s; MFU {long['length']} / "
          f"{short['length']}: {ratio:.2f}; temporaries per row {long['temp_mib_per_row'] / short['temp_mib_per_row']:.1f}x "
          f"for {long['length'] / short['length']:.0f}x the length")

if __name__ == "__main__":
  from bert_jax.runtime import host_allocator
  host_allocator.tune_for_cpu()  # as bert_jax.main does, before JAX starts its threads
  main()
