"""The peer of `configs/finetune.py:classify`: Hugging Face transformers (PyTorch), the same recipe.

    python benchmarks/peers/hf_finetune.py MODEL_DIR TRAIN.tsv DEV.tsv OUT.json [--epochs=1]

A plain PyTorch loop of what `Trainer` does for sequence classification: a fresh 2-label head on
the encoder, batches of 32 shuffled examples padded per batch to their longest row
(`DataCollatorWithPadding`), AdamW (lr 5e-5, weight decay 0.01 except biases and LayerNorm,
eps 1e-8), linear warmup over 10% of the steps then linear decay, dropout on; accuracy on the
dev split after each epoch and the model saved at the end. Writes the seconds of the training
loop (examples/s) and the accuracy; the caller times the whole process and its peak memory.
Runs only in the peers' environment (torch, transformers), never in bert_jax's installs.
"""

import argparse
import json
import time

import torch
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          get_linear_schedule_with_warmup)


def read_tsv(path):
  with open(path, encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f][1:]
  return [r[0] for r in rows if r], [int(r[1]) for r in rows if r]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("model"), parser.add_argument("train"), parser.add_argument("dev"), parser.add_argument("out")
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_length", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (parameters and AdamW stay float32)")
  args = parser.parse_args()
  torch.manual_seed(args.seed)
  tokenizer = AutoTokenizer.from_pretrained(args.model)
  model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
  collate = DataCollatorWithPadding(tokenizer)

  def encode(path):
    texts, labels = read_tsv(path)
    encoded = tokenizer(texts, truncation=True, max_length=args.max_length)
    return [{"input_ids": i, "attention_mask": m, "labels": y}
            for i, m, y in zip(encoded["input_ids"], encoded["attention_mask"], labels)]

  train, dev = encode(args.train), encode(args.dev)
  loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True, collate_fn=collate,
                                       drop_last=True, generator=torch.Generator().manual_seed(args.seed))
  no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
  groups = [{"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
             "weight_decay": 0.01},
            {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0}]
  optimizer = torch.optim.AdamW(groups, lr=5e-5, eps=1e-8)
  total = len(loader) * args.epochs
  schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
  train_seconds, accuracy = 0.0, None
  for _ in range(args.epochs):
    model.train()
    start = time.perf_counter()
    for batch in loader:
      with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        loss = model(**batch).loss
      loss.backward()
      optimizer.step()
      schedule.step()
      optimizer.zero_grad()
    train_seconds += time.perf_counter() - start
    model.eval()
    correct = 0
    with torch.no_grad():
      for i in range(0, len(dev), 64):
        batch = collate(dev[i:i + 64])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
          logits = model(**batch).logits
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
    accuracy = correct / len(dev)
  model.save_pretrained(args.out + ".model")
  with open(args.out, "w") as f:
    json.dump({"train_seconds": train_seconds, "examples": total * args.batch_size,
               "examples_per_sec": total * args.batch_size / train_seconds, "accuracy": accuracy}, f)


if __name__ == "__main__":
  main()
