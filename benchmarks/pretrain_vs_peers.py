"""Pretraining throughput of `bert_jax.main` against Hugging Face PyTorch and KerasHub-JAX.

    bash benchmarks/peers/setup.sh                     # once: the peers' own environment
    python benchmarks/pretrain_vs_peers.py --family=bert --size=small --batch=16 --length=128 \
        --steps=30 --runs=3 [--peers=hf,kerashub] [--json=benchmarks/results/cpu_pretrain.jsonl]

Every run is a whole fresh process, and the frameworks alternate run by run so that a
change in machine load hits all of them:

- bert_jax: `python -m bert_jax.main --config=configs/pretrain.py:<family>-<size>` with the
  batch, sequence length and step count overridden: the real input pipeline (tokenised
  bundled corpus, masking), the compiled step, metrics, the final evaluation, checkpoint
  and model export, all inside the timed process. Its step time is the logged rate over
  steps 2..N (metrics.jsonl, default log_every).
- peers (`benchmarks/peers/*.py`, run with --peer_python): the same model sizes, batch,
  sequence, masked positions per row, AdamW with clipping, dropout 0.1, float32, on
  random batches (so they do no input work at all).

For each framework it prints the median whole-process wall time, the steady-state step
time (peers: median of the steps after the first two; bert_jax: steps 2..N), tokens/s and MFU against the machine's measured
matmul peak, then bert_jax's speed-up over each peer on both measures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = {"hf": ("hf-pytorch", "hf_pretrain.py"), "kerashub": ("kerashub-jax", "kerashub_pretrain.py")}
DEFAULT_PEER_PYTHON = os.path.expanduser("~/.cache/bert_jax/peers/bin/python")


def model_sizes(family: str, size: str) -> dict[str, int]:
  from bert_jax import models
  cfg = models.build(family, size)
  sizes = {"hidden": cfg.hidden_size, "layers": cfg.num_layers, "heads": cfg.num_heads,
           "intermediate": cfg.intermediate_size, "vocab": cfg.vocab_size}
  if cfg.embedding_size:
    sizes["embedding"] = cfg.embedding_size
  return sizes


def run_ours(args, workdir: str, env: dict[str, str]) -> dict:
  from bert_jax.metrics import read_metrics
  command = [sys.executable, "-m", "bert_jax.main", f"--config=configs/pretrain.py:{args.family}-{args.size}",
             f"--workdir={workdir}", f"--config.batch_size={args.batch}", f"--config.data.max_length={args.length}",
             f"--config.total_steps={args.steps}"] + args.ours_flag
  start = time.perf_counter()
  subprocess.run(command, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  wall = time.perf_counter() - start
  # The default log_every logs step 1 and the last step: the rate of the last line covers steps 2..N
  # (per-step logging would add a host sync per step that a normal run does not have).
  rates = [r for r in read_metrics(workdir) if "perf/steps_per_sec" in r]
  last = rates[-1]
  return {"wall_s": wall, "step_s": 1.0 / last["perf/steps_per_sec"]}


def run_peer(args, name: str, python: str, sizes: dict[str, int]) -> dict:
  script = os.path.join(REPO, "benchmarks", "peers", PEERS[name][1])
  command = [python, script, f"--family={args.family}", f"--batch={args.batch}", f"--length={args.length}",
             f"--predictions={args.predictions}", f"--steps={args.steps}"]
  command += [f"--{k}={v}" for k, v in sizes.items()]
  env = dict(os.environ, KERAS_BACKEND="jax")
  env.pop("XLA_FLAGS", None)
  start = time.perf_counter()
  out = subprocess.run(command, check=True, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - start
  result = json.loads(out.stdout.strip().splitlines()[-1])
  return {"wall_s": wall, "step_s": float(np.median(result["step_times_s"][2:])),
          "first_step_done_s": result["first_step_done_s"]}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--family", choices=["bert", "roberta", "albert", "deberta"], default="bert")
  p.add_argument("--size", default="small")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--length", type=int, default=128)
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--peers", default="hf,kerashub", help="comma-separated subset of hf, kerashub ('' for none)")
  p.add_argument("--peer_python", default=DEFAULT_PEER_PYTHON,
                 help="python of the peers' environment (benchmarks/peers/setup.sh)")
  p.add_argument("--ours_flag", action="append", default=[], help="extra flag for bert_jax.main (repeatable)")
  p.add_argument("--cold", action="store_true", help="a fresh compilation cache for every bert_jax run")
  p.add_argument("--json", default=None, help="append the summary as a JSON line to this file")
  args = p.parse_args()
  sys.path.insert(0, REPO)
  from bert_jax import models
  from bert_jax.models.flops import train_flops
  from bert_jax.runtime import hardware
  from configs import pretrain
  config = pretrain.pretrain_config(args.family, args.size)
  args.predictions = int(config.data.max_predictions)
  peers = [name for name in args.peers.split(",") if name]
  if peers and not os.path.exists(args.peer_python):
    raise SystemExit(f"--peer_python={args.peer_python} does not exist: run `bash benchmarks/peers/setup.sh` first")

  sizes = model_sizes(args.family, args.size)
  work = tempfile.mkdtemp(prefix="pretrain_bench_")
  results: dict[str, list[dict]] = {"bert_jax": []} | {PEERS[name][0]: [] for name in peers}
  try:
    for run in range(args.runs):
      env = dict(os.environ)
      env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(work, f"cache{run}" if args.cold else "cache")
      results["bert_jax"].append(run_ours(args, os.path.join(work, f"run{run}"), env))
      for name in peers:
        results[PEERS[name][0]].append(run_peer(args, name, args.peer_python, sizes))
      print(f"run {run + 1}/{args.runs}: " + ", ".join(
          f"{k} {v[-1]['wall_s']:.1f}s wall, {v[-1]['step_s']:.3f}s/step" for k, v in results.items()), flush=True)
  finally:
    shutil.rmtree(work, ignore_errors=True)

  cfg = models.build(args.family, args.size)
  flops = train_flops(cfg, args.batch, args.length, args.predictions)
  peak = hardware.peak_flops("float32", refresh=True)
  tokens = args.batch * args.length
  summary = {"family": args.family, "size": args.size, "batch": args.batch, "length": args.length,
             "steps": args.steps, "runs": args.runs, "cpu_peak_gflops": round(peak / 1e9, 1),
             "model_gflops_per_step": round(flops / 1e9, 1), "frameworks": {}}
  print(f"\n{args.family}-{args.size}, batch {args.batch} x {args.length}, {args.steps} steps per process, "
        f"median of {args.runs} runs; MFU against the measured matmul peak {peak / 1e9:.0f} GFLOP/s")
  print("| framework | wall (s) | step (s) | tokens/s | MFU |\n|---|---|---|---|---|")
  for name, runs in results.items():
    wall, step = float(np.median([r["wall_s"] for r in runs])), float(np.median([r["step_s"] for r in runs]))
    summary["frameworks"][name] = {"wall_s": round(wall, 2), "step_s": round(step, 4),
                                   "tokens_per_s": round(tokens / step, 1), "mfu": round(flops / step / peak, 4)}
    print(f"| {name} | {wall:.1f} | {step:.3f} | {tokens / step:,.0f} | {flops / step / peak:.1%} |")
  ours = summary["frameworks"]["bert_jax"]
  for name in results:
    if name != "bert_jax":
      them = summary["frameworks"][name]
      summary["frameworks"][name]["bert_jax_speedup_wall"] = round(them["wall_s"] / ours["wall_s"], 3)
      summary["frameworks"][name]["bert_jax_speedup_step"] = round(them["step_s"] / ours["step_s"], 3)
      print(f"bert_jax vs {name}: {them['wall_s'] / ours['wall_s']:.2f}x whole process, "
            f"{them['step_s'] / ours['step_s']:.2f}x per step")
  if args.json:
    with open(args.json, "a") as f:
      f.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
  main()
