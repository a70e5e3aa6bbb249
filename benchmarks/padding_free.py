"""Padding-free pretraining against padded and fixed-length rows, with `bert_jax.main` on a real corpus.

    python benchmarks/padding_free.py [--config=configs/pretrain.py:roberta-small] [--steps=40] [--runs=2]

Three runs of the same model and batch shape on the bundled corpus (documents of mixed lengths),
alternating:

  packed      the default: whole documents packed several to a row (data.packing=True)
  padded      one example per row, padded to the row length (data.packing=False: RoBERTa's
              FULL-SENTENCES rows, which stop where the next sentence would not fit)
  full rows   fixed-length rows with no padding at all (the same tokens, every row full:
              `benchmarks/train_step.py`'s synthetic batch, so the step itself is the only cost)

Reported: row tokens/s (every token slot the step computes), the share of real tokens
(`train/real_token_fraction`) and real tokens/s, each against the full rows as a ratio. The
step time is the median logged interval after the first (compiling) step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main_run(config: str, steps: int, packing: bool, extra: list[str], work: str) -> dict:
  workdir = tempfile.mkdtemp(dir=work)
  subprocess.run([sys.executable, "-m", "bert_jax.main", f"--config={config}", f"--workdir={workdir}",
                  f"--config.total_steps={steps}", "--config.log_every=5", "--config.eval_every=0",
                  f"--config.checkpoint_every={10 * steps}", f"--config.data.packing={packing}", *extra],
                 check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl")) if x.strip()]
  timed = [x for x in lines if "perf/tokens_per_sec" in x][1:]  # the first interval holds the compile
  fraction = float(np.mean([x["train/real_token_fraction"] for x in timed]))
  tokens = float(np.median([x["perf/tokens_per_sec"] for x in timed]))
  return {"tokens_per_s": tokens, "real_fraction": fraction, "real_tokens_per_s": tokens * fraction}


def full_rows(config: str, extra: list[str]) -> dict:
  """tokens/s of the same model on full synthetic rows of the run's batch shape (train_step.py)."""
  import importlib.util
  module, _, arg = config.partition(":")
  spec = importlib.util.spec_from_file_location("pretrain_config", os.path.join(REPO, module))
  config_module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(config_module)
  c = config_module.get_config(arg)
  values = dict(item.removeprefix("--config.").split("=", 1) for item in extra)
  batch = int(values.get("batch_size", c.batch_size))
  length = int(values.get("data.max_length", c.data.max_length))
  family, size = arg.split("-", 1)
  out = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "train_step.py"), f"--family={family}",
                        f"--size={size}", f"--batch={batch}", f"--length={length}", "--steps=8"],
                       check=True, cwd=REPO, capture_output=True, text=True).stdout
  result = json.loads(out.strip().splitlines()[-1])
  return {"tokens_per_s": result["tokens_per_s"], "real_fraction": 1.0, "real_tokens_per_s": result["tokens_per_s"],
          "batch": batch, "length": length}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/pretrain.py:roberta-small")
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--runs", type=int, default=2)
  parser.add_argument("--extra", action="append", default=[], help="more --config.* flags for both runs")
  parser.add_argument("--json", default=os.path.join(REPO, "benchmarks", "results", "cpu_padding_free.jsonl"))
  args = parser.parse_args()
  work = tempfile.mkdtemp(prefix="padding_free_")
  results: dict[str, list[dict]] = {"packed": [], "padded": [], "full rows": []}
  for _ in range(args.runs):
    results["packed"].append(main_run(args.config, args.steps, True, args.extra, work))
    results["padded"].append(main_run(args.config, args.steps, False, args.extra, work))
    results["full rows"].append(full_rows(args.config, args.extra))
  median = {k: {m: float(np.median([r[m] for r in v])) for m in ("tokens_per_s", "real_fraction", "real_tokens_per_s")}
            for k, v in results.items()}
  full = median["full rows"]["real_tokens_per_s"]
  print(f"{args.config}, batch {results['full rows'][0]['batch']} x {results['full rows'][0]['length']}\n")
  print("| rows | row tokens/s | real tokens | real tokens/s | vs full rows |\n|---|---|---|---|---|")
  for name, m in median.items():
    print(f"| {name} | {m['tokens_per_s']:,.0f} | {m['real_fraction']:.1%} | {m['real_tokens_per_s']:,.0f} | "
          f"{m['real_tokens_per_s'] / full:.3f}x |")
  with open(args.json, "a") as f:
    f.write(json.dumps({"config": args.config, "steps": args.steps, "extra": args.extra, "runs": results,
                        "median": median}) + "\n")


if __name__ == "__main__":
  main()
