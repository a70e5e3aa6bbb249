"""Token-budget steps against a fixed example count, for the tasks whose recipe keeps the count.

    python benchmarks/token_budget_tasks.py [--tasks=tag,qa,rerank,contrastive] [--runs=2] [--examples=640]

classify and regress train on token-budget steps by default (`configs/finetune.py`:
`data.tokens_per_batch=-1`: one compiled shape, `batch_size` examples a step on average);
tag, qa, rerank and contrastive pack `batch_size` examples a step into however many rows they need. This
script runs each task both ways with `bert_jax.main` (all-MiniLM-L6-v2, the task's recipe,
one epoch), whole processes alternating, and reports the training loop's examples/s (every
logged interval after the first, compiling step), the wall time of the process, its peak
resident memory and the task's validation metric.

The data are made here from the bundled Austen corpus and movie sentences, so their lengths
are those of real text, not of the task's usual benchmark:

  tag     CoNLL: each movie sentence's words, capitalised runs tagged B-CAP / I-CAP, numbers
          B-NUM, the rest O
  qa      SQuAD v2: an Austen paragraph as the context, the question 4-10 of its words, the
          answer the 1-4 words that follow them; every fifth question unanswerable
  rerank  grouped JSON lines: a paragraph's first 5-8 words as the query, the paragraph as
          the positive, three other paragraphs as negatives
  contrastive  (anchor, positive, negative) triplets: a paragraph's two halves and the next
          one's second half; dev pairs scored 1 (the two halves) or 0 (another's half)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_vs_hf import REPO, bert_jax_numbers, minilm_folder, run  # noqa: E402

BUNDLED = os.path.join(REPO, "bert_jax", "assets", "data")
METRIC = {"tag": "f1", "qa": "f1", "rerank": "mrr", "contrastive": "spearman"}


def paragraphs(count: int) -> list[str]:
  with gzip.open(os.path.join(BUNDLED, "austen.txt.gz"), "rt", encoding="utf-8") as f:
    found = [p for p in f.read().split("\n") if 100 < len(p) < 1500]
  return random.Random(0).sample(found, count)


def sentences(split: str, count: int) -> list[str]:
  with open(os.path.join(BUNDLED, f"movie_sentiment.{split}.tsv"), encoding="utf-8") as f:
    return [line.split("\t")[0] for line in f.read().splitlines()[1:count + 1]]


def tag_files(root: str, count: int) -> dict[str, str]:
  def conll(texts):
    blocks = []
    for text in texts:
      tags, previous = [], "O"
      for word in text.split():
        tag = ("B-NUM" if word[:1].isdigit() else
               ("I-CAP" if previous.endswith("CAP") else "B-CAP") if word[:1].isupper() else "O")
        tags.append(f"{word} {tag}")
        previous = tag
      blocks.append("\n".join(tags))
    return "\n\n".join(blocks) + "\n"
  return write(root, "tag", "txt", conll(sentences("train", count)), conll(sentences("dev", count // 4)))


def qa_files(root: str, count: int) -> dict[str, str]:
  rng = random.Random(1)
  def dataset(texts, prefix):
    articles = []
    for i, context in enumerate(texts):
      words = context.split()
      start = rng.randrange(0, max(1, len(words) - 14))
      n_question, n_answer = rng.randint(4, 10), rng.randint(1, 4)
      question = " ".join(words[start:start + n_question]) + "?"
      answer = " ".join(words[start + n_question:start + n_question + n_answer])
      qa = {"id": f"{prefix}{i}", "question": question}
      offset = context.find(answer, len(" ".join(words[:start + n_question])))
      if i % 5 == 4 or not answer or offset < 0:
        qa.update(answers=[], is_impossible=True)
      else:
        qa.update(answers=[{"text": answer, "answer_start": offset}], is_impossible=False)
      articles.append({"title": f"t{i}", "paragraphs": [{"context": context, "qas": [qa]}]})
    return json.dumps({"version": "v2.0", "data": articles})
  texts = paragraphs(count + count // 4)
  return write(root, "qa", "json", dataset(texts[:count], "tr"), dataset(texts[count:], "dv"))


def rerank_files(root: str, count: int) -> dict[str, str]:
  rng = random.Random(2)
  def lines(chunk):
    out = []
    for i, passage in enumerate(chunk):
      negatives = [chunk[(i + k) % len(chunk)] for k in (1, 2, 5)]
      out.append(json.dumps({"query": " ".join(passage.split()[:rng.randint(5, 8)]), "positives": [passage],
                             "negatives": negatives}))
    return "\n".join(out) + "\n"
  texts = paragraphs(count + count // 4)
  return write(root, "rank", "jsonl", lines(texts[:count]), lines(texts[count:]))


def contrastive_files(root: str, count: int) -> dict[str, str]:
  def halves(p):
    return p[:len(p) // 2], p[len(p) // 2:]
  texts = [halves(p) for p in paragraphs(count + count // 4)]
  train = [f"{a}\t{b}\t{texts[(i + 1) % count][1]}" for i, (a, b) in enumerate(texts[:count])]
  dev = [f"{a}\t{b if i % 2 == 0 else texts[count + (i + 7) % (count // 4)][1]}\t{1.0 if i % 2 == 0 else 0.0}"
         for i, (a, b) in enumerate(texts[count:])]
  return write(root, "pairs", "tsv", "sentence\tsentence2\tnegative\n" + "\n".join(train) + "\n",
               "sentence\tsentence2\tlabel\n" + "\n".join(dev) + "\n")


def write(root: str, name: str, ext: str, train: str, dev: str) -> dict[str, str]:
  files = {"train": os.path.join(root, f"{name}.train.{ext}"), "dev": os.path.join(root, f"{name}.dev.{ext}")}
  for split, text in (("train", train), ("dev", dev)):
    with open(files[split], "w", encoding="utf-8") as f:
      f.write(text)
  return files


FILES = {"tag": tag_files, "qa": qa_files, "rerank": rerank_files, "contrastive": contrastive_files}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default=None)
  parser.add_argument("--tasks", default="tag,qa,rerank,contrastive")
  parser.add_argument("--runs", type=int, default=2)
  parser.add_argument("--examples", type=int, default=640, help="training examples per task (dev: a quarter)")
  parser.add_argument("--extra", action="append", default=[], help="more --config.* flags for both sides")
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "cpu_token_budget_tasks.jsonl"))
  args = parser.parse_args()
  model = args.model or minilm_folder()
  work = tempfile.mkdtemp(prefix="token_budget_tasks_")
  sides = {"fixed count": "0", "token budget": "-1"}
  print("| task | side | wall (s) | examples/s | peak RSS (GiB) | validation |\n|---|---|---|---|---|---|")
  for task in args.tasks.split(","):
    files = FILES[task](work, args.examples)
    results = {side: [] for side in sides}
    for r in range(args.runs):
      for side, budget in sides.items():
        workdir = os.path.join(work, f"{task}_{r}_{budget}")
        command = [sys.executable, "-m", "bert_jax.main", f"--config=configs/finetune.py:{task}",
                   f"--workdir={workdir}", f"--config.init_from={model}", "--config.num_epochs=1",
                   f"--config.data.train={files['train']}", f"--config.data.validation={files['dev']}",
                   f"--config.data.tokens_per_batch={budget}", "--config.log_every=5", *args.extra]
        wall, peak = run(command, dict(os.environ), workdir + ".log")
        numbers = bert_jax_numbers(workdir, METRIC[task])
        results[side].append({"wall_s": wall, "peak_gib": peak, "examples_per_sec": numbers["examples_per_sec"],
                              "metric": numbers[METRIC[task]]})
    median = {side: {m: float(np.median([x[m] for x in v])) for m in v[0]} for side, v in results.items()}
    for side, m in median.items():
      print(f"| {task} | {side} | {m['wall_s']:.1f} | {m['examples_per_sec']:.1f} | {m['peak_gib']:.2f} | "
            f"{METRIC[task]} {m['metric']:.4f} |", flush=True)
    ratio = median["token budget"]["examples_per_sec"] / median["fixed count"]["examples_per_sec"]
    wall = median["fixed count"]["wall_s"] / median["token budget"]["wall_s"]
    print(f"| {task} | ratio | {wall:.2f}x | {ratio:.2f}x | | |", flush=True)
    with open(args.out, "a") as f:
      f.write(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "task": task, "examples": args.examples, "extra": args.extra, "runs": results,
                          "median": median, "examples_per_sec_ratio": ratio, "wall_ratio": wall}) + "\n")
  shutil.rmtree(work)


if __name__ == "__main__":
  main()
