"""The `data` section of a pretraining config: every key, its default and what it means.

    config.data = data_config()                        # the defaults below
    config.data = data_config(max_length=512, packing=True)

Keys (the configs in configs/ set these; unknown keys raise):
  train               comma-separated text-file globs (.gz allowed; one sentence or paragraph per
                      line, blank lines between documents) or tfds:<name>[/<config>][:<split>]
                      (read with tfds.data_source, no TensorFlow); default: the bundled corpus
  validation          same syntax; empty: hold out the last `validation_documents` documents of `train`
  validation_documents  how many documents to hold out when `validation` is empty (never trained on)
  tokenizer           tokenizer folder (the trainer loads it and passes the Tokenizer along)
  text_key            the TFDS feature that holds the text
  max_length          L: tokens per row, special tokens included
  mask_rate           fraction of the non-padding tokens to predict
  max_predictions     M: prediction slots per row; the MLM head runs only there
  whole_word_masking  mask whole words (WordPiece `##`, BPE `Ġ`, SentencePiece `▁` boundaries)
  dynamic_masking     True: new masks every epoch (RoBERTa); False: one mask per example (BERT)
  short_seq_prob      BERT: chance that a sentence-pair example aims at a random shorter length
  nsp_random_prob     NSP: chance that segment B comes from another document
  packing             objective "mlm" only: documents back to back, one segment each (`segment_ids`),
                      split where a row ends, so rows are full; attention and positions per segment
  shuffle             shuffle examples with grain's global index shuffle, a new order every epoch
  cache_dir           where prepared shards go; empty: the shared cache (bert_jax.runtime.caches:
                      $BERT_JAX_CACHE/prepared or ~/.cache/bert_jax/prepared), in a folder named by a
                      fingerprint of the inputs, so runs in any workdir reuse it
  num_workers         0: batches are built in the training process (background threads);
                      N > 0: N grain worker processes
  per_process_shards  False (default): every process prepares the same examples locally and reads its
                      rows of each global batch, so a run gives the same batches, and losses, on any
                      number of processes; True: process i prepares and reads only documents
                      i, i+n, ... (scales to corpora too big to prepare on every host, but the batches
                      then depend on the process count)
"""

from __future__ import annotations

import ml_collections

from bert_jax import assets

OBJECTIVES = ("mlm", "mlm_nsp", "mlm_sop")

# The one table of the data section: key -> default. Every run's config.data starts from it
# (bert_jax.config_lib.base_config); fine-tuning configs add their own reader keys.
DEFAULTS = {
    "train": assets.corpus_glob(),      # text-file globs (.gz ok; blank line between documents) or tfds:NAME
    "validation": "",                   # same syntax; empty = hold out documents of `train`
    "validation_documents": 20,         # documents held out when `validation` is empty
    "tokenizer": assets.tokenizer_dir("wordpiece"),  # tokenizer folder
    "text_key": "text",                 # TFDS feature holding the text
    "max_length": 128,                  # tokens per row, specials included
    "mask_rate": 0.15,                  # fraction of tokens predicted
    "max_predictions": 20,              # fixed number of MLM slots per row (static shapes)
    "whole_word_masking": False,        # mask whole words (WordPiece ##, BPE and SentencePiece word marks)
    "dynamic_masking": True,            # new masks every epoch (RoBERTa) instead of fixed ones (BERT)
    "short_seq_prob": 0.1,              # BERT: probability of a shorter target length
    "nsp_random_prob": 0.5,             # probability that segment B is random (NSP)
    "packing": False,                   # several documents per row with segment-aware attention
    "shuffle": True,                    # a new example order every epoch
    "cache_dir": "",                    # prepared shards; empty = the shared cache (~/.cache/bert_jax/prepared)
    "num_workers": 0,                   # grain worker processes (0 = in-process)
    "per_process_shards": False,        # True: each process prepares only its documents (see above)
}


def data_config(**overrides) -> ml_collections.ConfigDict:
  """DEFAULTS with overrides; unknown keys raise ValueError."""
  unknown = sorted(set(overrides) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"unknown data config keys {unknown}; known: {sorted(DEFAULTS)}")
  return ml_collections.ConfigDict({**DEFAULTS, **overrides})


def resolve(config) -> ml_collections.ConfigDict:
  """A ConfigDict, FrozenConfigDict or dict -> a complete ConfigDict (missing keys take defaults)."""
  values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return data_config(**values)
