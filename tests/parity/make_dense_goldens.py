#!/usr/bin/env python
"""Writes a sentence-transformers folder with Dense modules and its embeddings: tests/testdata/dense_st.

    pip install -e ".[parity]" && python tests/parity/make_dense_goldens.py

A tiny, fully re-randomised BERT (transformers) with the cased WordPiece vocabulary of
tests/testdata/tokenizers/bert_cased, saved by sentence-transformers as

    Transformer -> Pooling (mean) -> Dense (16 -> 12, bias, Tanh) -> Dense (12 -> 8, no bias, Identity)
    -> Normalize

so both activations bert_jax implements, a module without bias and two Dense modules in a
row are covered, plus golden.npz with the sentences and `SentenceTransformer.encode`'s
embeddings [n, 8]. tests/test_align.py embeds the same sentences with `bert_jax.embed`
and must match to 1e-5. An align-trained folder writes the same files (2_Dense with the
Identity activation), so this is also the check that what `align` saves means in
sentence-transformers what it means in bert_jax.

Deterministic (seeded from the folder name, one CPU thread): re-running rewrites the same numbers.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_model_goldens import REPO, _seed, randomize_  # noqa: E402
from make_st_goldens import sentences  # noqa: E402

NAME = "dense_st"
OUT = REPO / "tests" / "testdata" / NAME
VOCAB = REPO / "tests" / "testdata" / "tokenizers" / "bert_cased" / "vocab.txt"
MAX_LENGTH = 48


def build() -> dict[str, str]:
  from sentence_transformers import SentenceTransformer
  from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

  vocab = VOCAB.read_text(encoding="utf-8").splitlines()
  tokenizer = transformers.BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=False)
  assert len(tokenizer) == len(vocab), len(tokenizer)
  config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=29,
                                   max_position_embeddings=MAX_LENGTH + 16, pad_token_id=0)
  torch.manual_seed(_seed(NAME))
  model = transformers.BertModel(config, add_pooling_layer=False).eval().float()
  randomize_(model, _seed(NAME))
  dense = [Dense(16, 12, bias=True, activation_function=torch.nn.Tanh()),
           Dense(12, 8, bias=False, activation_function=torch.nn.Identity())]
  generator = torch.Generator().manual_seed(_seed(NAME) + 1)
  with torch.no_grad():
    for module in dense:  # weights large enough that Tanh bends and the bias counts
      for p in module.parameters():
        p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
  if OUT.exists():
    shutil.rmtree(OUT)
  with tempfile.TemporaryDirectory() as tmp:
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    transformer = Transformer(tmp, max_seq_length=MAX_LENGTH)
    modules = [transformer, Pooling(16, pooling_mode="mean"), *dense, Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(OUT))
  (OUT / "README.md").unlink(missing_ok=True)  # the model card: dates and versions only

  texts = [t for t in sentences() if t][:24]
  st = SentenceTransformer(str(OUT), device="cpu").eval()
  emb = st.encode(texts, batch_size=8, convert_to_numpy=True, show_progress_bar=False)
  np.savez_compressed(OUT / "golden.npz", sentences=np.asarray(texts, dtype=np.str_),
                      embeddings=emb.astype(np.float32))
  size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
  return {"n": str(len(texts)), "dim": str(emb.shape[1]), "bytes": str(size)}


def main() -> int:
  torch.set_num_threads(1)
  torch.use_deterministic_algorithms(True)
  transformers.logging.set_verbosity_error()
  print(NAME, build(), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
