"""Hugging Face transformers (PyTorch, CPU): MLM pretraining steps on random batches.

The peer of bert_jax's pretraining step, run by `benchmarks/pretrain_vs_peers.py` in the
peers' environment (`benchmarks/peers/setup.sh`):

    python benchmarks/peers/hf_pretrain.py --family=bert --hidden=512 --layers=4 --heads=8 \
        --intermediate=2048 --vocab=30522 --batch=16 --length=128 --predictions=20 --steps=10

BERT trains BertForPreTraining (MLM + next-sentence head, as bert_jax's mlm_nsp objective),
RoBERTa RobertaForMaskedLM, ALBERT AlbertForPreTraining (MLM + sentence order, factorised
embeddings, one shared layer), DeBERTa DebertaV2ForMaskedLM (v3 layout: 256 position buckets, shared attention keys,
c2p + p2c). Labels are -100 except `predictions` random positions per row, the standard
DataCollatorForLanguageModeling setup (the head computes logits at every position).
AdamW (lr 1e-4, weight decay 0.01) with gradient clipping at 1.0, dropout 0.1, float32.
Prints one JSON line: per-step times and the time to the first step.
"""

import argparse
import json
import time

START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--family", choices=["bert", "roberta", "albert", "deberta"], default="bert")
  for name in ("hidden", "layers", "heads", "intermediate", "vocab", "batch", "length", "predictions"):
    p.add_argument(f"--{name}", type=int, required=True)
  p.add_argument("--embedding", type=int, default=0, help="ALBERT's factorised embedding size")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)")
  args = p.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  common = dict(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                num_attention_heads=args.heads, intermediate_size=args.intermediate, max_position_embeddings=512,
                hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
  if args.family == "bert":
    model = transformers.BertForPreTraining(transformers.BertConfig(**common))
  elif args.family == "roberta":
    model = transformers.RobertaForMaskedLM(transformers.RobertaConfig(**{**common, "max_position_embeddings": 514},
                                                                       pad_token_id=1, type_vocab_size=1))
  elif args.family == "albert":
    model = transformers.AlbertForPreTraining(transformers.AlbertConfig(**common, embedding_size=args.embedding,
                                                                        hidden_act="gelu_new"))
  else:
    config = transformers.DebertaV2Config(**common, type_vocab_size=0, relative_attention=True, position_buckets=256,
                                          max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
                                          norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False,
                                          hidden_act="gelu")
    model = transformers.DebertaV2ForMaskedLM(config)
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

  rng = np.random.default_rng(0)

  def batch() -> dict:
    ids = rng.integers(5, args.vocab, (args.batch, args.length))
    labels = np.full_like(ids, -100)
    for row in range(args.batch):
      where = rng.choice(args.length, args.predictions, replace=False)
      labels[row, where] = ids[row, where]
    out = {"input_ids": torch.tensor(ids), "attention_mask": torch.ones(args.batch, args.length, dtype=torch.long),
           "labels": torch.tensor(labels)}
    if args.family in ("bert", "albert"):
      out["token_type_ids"] = torch.tensor((np.arange(args.length) >= args.length // 2).astype(np.int64)).expand(
          args.batch, -1)
      pair_labels = torch.tensor(rng.integers(0, 2, args.batch))
      out["next_sentence_label" if args.family == "bert" else "sentence_order_label"] = pair_labels
    return out

  times, first_step_done = [], 0.0
  for _ in range(args.steps):
    inputs = batch()
    start = time.perf_counter()
    loss = model(**inputs).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - start)
    if len(times) == 1:
      first_step_done = time.perf_counter() - START  # imports, model build and the first step
  print(json.dumps({"peer": "hf-pytorch", "family": args.family, "torch": torch.__version__,
                    "transformers": transformers.__version__, "threads": torch.get_num_threads(),
                    "first_step_done_s": round(first_step_done, 2),
                    "step_times_s": [round(t, 4) for t in times], "loss": float(loss)}))


if __name__ == "__main__":
  main()
