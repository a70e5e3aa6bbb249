#!/usr/bin/env python
"""Writes sentence-transformers folders of the newer families and their embeddings.

    pip install -e ".[parity]" && python tests/parity/make_st_goldens.py [--only modernbert_st]

Each entry of FOLDERS is a tiny, fully re-randomised reference model (transformers) with a real
tokenizer of its family (the goldens under tests/testdata/tokenizers), saved by sentence-transformers
with its Pooling (and Normalize) modules into tests/testdata/<name>/, plus golden.npz with the
sentences, the ids the reference tokenizer gives them and `SentenceTransformer.encode`'s embeddings.
tests/test_embed.py embeds the same sentences with `bert_jax.embed` and must match to cosine 0.9999.

  mpnet_st        MPNet (relative bias), mean pooling + Normalize, as all-mpnet-base-v2
  modernbert_st   ModernBERT (local windows shorter than the long sentence, a global layer every
                  second), CLS pooling, as gte-modernbert / ModernBERT-based embedders
  xlm_roberta_st  XLM-RoBERTa (Unigram tokenizer.json), mean pooling + Normalize, as multilingual-e5

Deterministic (seeded from the folder name, one CPU thread): re-running rewrites the same numbers.
"""

from __future__ import annotations

import argparse
import csv
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
from make_model_goldens import DEV_TSV, EXTRA_SENTENCES, REPO, _seed, randomize_  # noqa: E402

TESTDATA = REPO / "tests" / "testdata"
TOKENIZERS = TESTDATA / "tokenizers"
MAX_LENGTH = 96
EXTRA = [
    "Hello world",
    "MPNet writes <s> A </s> for one text; <mask> is special, <mask>here too.",
    "unaffable tokenization of unseen words: hyperparameterization!",
    "Tabs\tand\nnewlines,   spaces; ÉCOLE Über naïve",
]


def sentences() -> list[str]:
  with open(DEV_TSV, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  return [r[0] for r in rows[1:25]] + EXTRA_SENTENCES + EXTRA


def _mpnet_st_vocab(sentences: list[str]) -> list[str]:
  """Whole words of most sentences, every character alone and as ##piece; some words left to split."""
  from tokenizers import normalizers, pre_tokenizers

  norm = normalizers.BertNormalizer(lowercase=True)
  pre = pre_tokenizers.BertPreTokenizer()
  words = [w for s in sentences for w, _ in pre.pre_tokenize_str(norm.normalize_str(s))]
  chars = sorted({c for w in words for c in w} - set("😀👍"))  # emoji stay [UNK]
  # Words of 9+ letters are left out (they split into pieces), one word in three of the rest kept whole.
  whole = sorted({w for i, w in enumerate(dict.fromkeys(words)) if len(w) < 9 and i % 3 == 0 and set(w) <= set(chars)})
  pieces = ["##ing", "##tion", "##ed", "##s", "##er", "##ly", "un", "hyper"]
  head = ["<s>", "<pad>", "</s>", "<unk>", "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  body = list(dict.fromkeys(chars + ["##" + c for c in chars] + pieces + whole))
  return head + [t for t in body if t not in head] + ["<mask>"]


def mpnet() -> tuple:
  # A small WordPiece vocabulary laid out as MPNet's (<s> <pad> </s> <unk> first, BERT's [PAD] [UNK] [CLS]
  # [SEP] [MASK] after them, <mask> last; [UNK] is the unknown token, as in microsoft/mpnet-base).
  vocab = _mpnet_st_vocab(sentences())
  config = transformers.MPNetConfig(
      vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=53,
      max_position_embeddings=MAX_LENGTH + 2 + 4, layer_norm_eps=1e-5, pad_token_id=1)
  tokenizer = transformers.MPNetTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
  return transformers.MPNetModel, config, tokenizer, "mean", True


def modernbert() -> tuple:
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(TOKENIZERS / "modernbert_json"))
  config = transformers.ModernBertConfig(
      vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40,
      max_position_embeddings=MAX_LENGTH + 32, local_attention=16, global_attn_every_n_layers=2,
      global_rope_theta=10000.0, local_rope_theta=500.0, norm_eps=1e-5,
      pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
      bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
  return transformers.ModernBertModel, config, tokenizer, "cls", False


def xlm_roberta() -> tuple:
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(TOKENIZERS / "xlm_roberta_json"))
  config = transformers.XLMRobertaConfig(
      vocab_size=len(tokenizer), hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=45,
      max_position_embeddings=MAX_LENGTH + 2 + 4, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1)
  return transformers.XLMRobertaModel, config, tokenizer, "mean", True


FOLDERS = {"mpnet_st": mpnet, "modernbert_st": modernbert, "xlm_roberta_st": xlm_roberta}


def build(name: str) -> dict[str, str]:
  from sentence_transformers import SentenceTransformer
  from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

  model_class, config, tokenizer, pooling_mode, normalize = FOLDERS[name]()
  torch.manual_seed(_seed(name))
  model = model_class(config).eval().float()
  randomize_(model, _seed(name))
  out = TESTDATA / name
  if out.exists():
    shutil.rmtree(out)
  with tempfile.TemporaryDirectory() as tmp:
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    transformer = Transformer(tmp, max_seq_length=MAX_LENGTH)
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling_mode)]
    SentenceTransformer(modules=modules + ([Normalize()] if normalize else []), device="cpu").save(str(out))
  (out / "README.md").unlink(missing_ok=True)  # the model card: dates and versions only

  texts = sentences()
  st = SentenceTransformer(str(out), device="cpu").eval()
  assert st.max_seq_length == MAX_LENGTH, st.max_seq_length
  emb = st.encode(texts, batch_size=8, convert_to_numpy=True, show_progress_bar=False)
  enc = st.tokenizer(texts, padding="longest", truncation=True, max_length=MAX_LENGTH, return_tensors="np")
  assert enc["input_ids"].shape[1] == MAX_LENGTH  # the long sentence is truncated
  np.savez_compressed(out / "golden.npz", sentences=np.asarray(texts, dtype=np.str_),
                      embeddings=emb.astype(np.float32), input_ids=enc["input_ids"].astype(np.int32),
                      attention_mask=enc["attention_mask"].astype(np.int32))
  size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
  return {"n": str(len(texts)), "vocab": str(len(tokenizer)), "bytes": str(size)}


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--only", default="", help="comma-separated folder names (default: all)")
  args = parser.parse_args(argv)
  torch.set_num_threads(1)
  torch.use_deterministic_algorithms(True)
  transformers.logging.set_verbosity_error()
  for name in [n for n in args.only.split(",") if n] or list(FOLDERS):
    print(name, build(name), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
