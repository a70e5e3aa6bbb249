"""The baseline fine-tuning must beat: frozen sentence embeddings + logistic regression.

    python examples/frozen_baseline.py --model=PATH [--train=data/movie_sentiment.train.tsv]
        [--eval=data/movie_sentiment.dev.tsv,data/movie_sentiment.test.tsv]

Embeds every sentence once with `bert_jax.embed` (the model folder's own
pooling/normalisation settings), fits scikit-learn's LogisticRegression on the
training embeddings (C chosen by 5-fold cross-validation on the training set
only) and prints the accuracy on each evaluation file. Needs scikit-learn
(`pip install -e ".[test]"`).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bert_jax import embed
from bert_jax.data.finetune import LabelMap, read_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", required=True, help="model folder (Hugging Face / sentence-transformers / bert_jax)")
  parser.add_argument("--train", default=os.path.join(REPO, "data", "movie_sentiment.train.tsv"))
  parser.add_argument("--eval", default=",".join(os.path.join(REPO, "data", f"movie_sentiment.{s}.tsv")
                                                 for s in ("dev", "test")))
  args = parser.parse_args()
  from sklearn.linear_model import LogisticRegressionCV

  start = time.time()
  loaded = embed.load(args.model)
  train = read_table(args.train)
  labels = LabelMap.from_labels(train.labels)
  x = embed.embed_texts(loaded, _texts(train), progress=True)
  y = np.array([labels.encode(v) for v in train.labels])
  clf = LogisticRegressionCV(Cs=[0.01, 0.1, 1.0, 10.0, 100.0], cv=5, max_iter=5000).fit(x, y)
  print(f"train: {len(y)} examples, C={clf.C_[0]}")
  for path in filter(None, args.eval.split(",")):
    table = read_table(path)
    pred = clf.predict(embed.embed_texts(loaded, _texts(table)))
    gold = np.array([labels.encode(v) for v in table.labels])
    print(f"{os.path.basename(path)}: accuracy {np.mean(pred == gold):.4f} ({len(gold)} examples)")
  print(f"total {time.time() - start:.0f} s")


def _texts(table) -> list[str]:
  if table.pairs is None:
    return table.sentences
  raise SystemExit("the frozen baseline takes single-sentence tasks")


if __name__ == "__main__":
  main()
