"""Converts a Hugging Face model folder to a bert_jax checkpoint folder and back.

    python -m bert_jax.convert --src=path/to/hf_model --dst=/tmp/ckpt --to=bert_jax [--verify]
    python -m bert_jax.convert --src=/tmp/ckpt --dst=/tmp/hf_again --to=hf [--verify]

The head is taken from what the source holds (MLM, MLM + NSP/SOP, replaced-token detection, a
fine-tuned classifier, tagger or QA head, or none);
tokenizer files are copied along. --verify (needs transformers + torch) runs
the reference model on a few inputs and prints the per-layer maximum difference.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("src", None, "Source folder (Hugging Face for --to=bert_jax, bert_jax for --to=hf).")
flags.DEFINE_string("dst", None, "Destination folder; replaced only once the new one is complete.")
flags.DEFINE_enum("to", None, ["bert_jax", "hf"], "Target format.")
flags.DEFINE_bool("verify", False, "Compare against transformers on a few inputs and print per-layer differences.")
flags.mark_flags_as_required(["src", "dst", "to"])


def to_bert_jax(src: str, dst: str) -> tuple:
  from bert_jax.convert import pretrained
  state = pretrained.read_hf_state(src)
  head = pretrained.detect_hf_head(state, pretrained.read_hf_config(src).get("architectures") or ())
  model, params, info = pretrained.load_hf(src, head, keep_pooler=True)
  pretrained.save_pretrained(dst, model, params, tokenizer_from=src, extra={"hf": {"legacy": info["legacy"]}})
  print(f"{src} ({model.config.family}, head={head}, pooler={model.uses_pooler}) -> bert_jax checkpoint {dst}")
  return model, params, src


def to_hf(src: str, dst: str) -> tuple:
  from bert_jax.convert import pretrained
  model, params, meta = pretrained.load_bert_jax(src, head=_saved_head(src))
  legacy = meta.get("hf", {}).get("legacy", True)
  pretrained.export_hf(dst, model, params, legacy=legacy, tokenizer_from=src)
  print(f"{src} ({model.config.family}, head={model.head_name}) -> Hugging Face folder {dst}")
  return model, params, dst


def _saved_head(path: str) -> str | None:
  import json
  from bert_jax.convert.pretrained import META_FILE
  with open(os.path.join(path, META_FILE)) as f:
    head = json.load(f).get("head")
  return head if head in ("mlm", "pretraining", "rtd", "classification", "token_classification", "qa") else None


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax narrates every file at INFO
  if not os.path.isdir(FLAGS.src):
    sys.exit(f"--src={FLAGS.src}: no such folder")
  if os.path.abspath(FLAGS.src) == os.path.abspath(FLAGS.dst):
    sys.exit("--dst must differ from --src")
  model, params, hf_dir = (to_bert_jax if FLAGS.to == "bert_jax" else to_hf)(FLAGS.src, FLAGS.dst)
  if FLAGS.verify:
    from bert_jax.convert.verify import verify_against_reference
    worst = verify_against_reference(model, params, hf_dir)
    if worst > 1e-4:
      sys.exit(f"verification failed: max difference {worst:.3e} > 1e-4")


if __name__ == "__main__":
  app.run(main)
