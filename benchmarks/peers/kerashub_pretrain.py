"""KerasHub on the JAX backend: MLM pretraining steps on random batches.

The second peer of bert_jax's pretraining step, run by `benchmarks/pretrain_vs_peers.py`
in the peers' environment (`benchmarks/peers/setup.sh`):

    python benchmarks/peers/kerashub_pretrain.py --family=bert --hidden=512 --layers=4 --heads=8 \
        --intermediate=2048 --vocab=30522 --batch=16 --length=128 --predictions=20 --steps=10

BertMaskedLM / RobertaMaskedLM / AlbertMaskedLM / DebertaV3MaskedLM without a preprocessor, fed token ids, padding mask and
`predictions` mask positions per row (KerasHub's MLM head, like bert_jax's, computes
logits only there). AdamW (lr 1e-4, weight decay 0.01, clipnorm 1.0), dropout 0.1,
float32, `jit_compile=True`, one `train_on_batch` per step. The first step includes
XLA compilation; the JSON line printed at the end holds every step's time.
"""

import argparse
import json
import os
import time

START = time.perf_counter()
os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--family", choices=["bert", "roberta", "albert", "deberta"], default="bert")
  for name in ("hidden", "layers", "heads", "intermediate", "vocab", "batch", "length", "predictions"):
    p.add_argument(f"--{name}", type=int, required=True)
  p.add_argument("--embedding", type=int, default=0, help="ALBERT's factorised embedding size")
  p.add_argument("--steps", type=int, default=10)
  args = p.parse_args()
  keras.utils.set_random_seed(0)
  sizes = dict(vocabulary_size=args.vocab, num_layers=args.layers, num_heads=args.heads, hidden_dim=args.hidden,
               intermediate_dim=args.intermediate, dropout=0.1, max_sequence_length=512)
  if args.family == "bert":
    model = keras_hub.models.BertMaskedLM(keras_hub.models.BertBackbone(**sizes), preprocessor=None)
  elif args.family == "roberta":
    model = keras_hub.models.RobertaMaskedLM(keras_hub.models.RobertaBackbone(**sizes), preprocessor=None)
  elif args.family == "albert":
    model = keras_hub.models.AlbertMaskedLM(keras_hub.models.AlbertBackbone(**sizes, embedding_dim=args.embedding),
                                            preprocessor=None)
  else:
    model = keras_hub.models.DebertaV3MaskedLM(keras_hub.models.DebertaV3Backbone(**sizes, bucket_size=256),
                                               preprocessor=None)
  model.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=0.01, clipnorm=1.0),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                weighted_metrics=[], jit_compile=True)

  rng = np.random.default_rng(0)

  def batch():
    ids = rng.integers(5, args.vocab, (args.batch, args.length)).astype("int32")
    positions = np.stack([np.sort(rng.choice(args.length, args.predictions, replace=False))
                          for _ in range(args.batch)]).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids, dtype=bool), "mask_positions": positions}
    if args.family in ("bert", "albert"):
      x["segment_ids"] = np.broadcast_to((np.arange(args.length) >= args.length // 2).astype("int32"), ids.shape)
    y = np.take_along_axis(ids, positions, axis=1)
    return x, y, np.ones_like(y, dtype="float32")

  times, first_step_done = [], 0.0
  for _ in range(args.steps):
    x, y, w = batch()
    start = time.perf_counter()
    loss = model.train_on_batch(x, y, sample_weight=w)  # returns host floats: the step has finished
    times.append(time.perf_counter() - start)
    if len(times) == 1:
      first_step_done = time.perf_counter() - START  # imports, model build, compilation and the first step
  print(json.dumps({"peer": "kerashub-jax", "family": args.family, "keras": keras.__version__,
                    "keras_hub": keras_hub.__version__, "first_step_done_s": round(first_step_done, 2),
                    "step_times_s": [round(t, 4) for t in times], "loss": float(np.ravel(loss)[0])}))


if __name__ == "__main__":
  main()
