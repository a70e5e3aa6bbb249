"""Data: tokenizers, featurized batches, pretraining examples and fine-tuning readers.

  batching        featurized splits, the one length-bucketing rule, training order, evaluation passes
  tokenizers      load / train WordPiece, byte-level BPE and SentencePiece tokenizers (API and CLI)
  tokenization/   the implementation behind `tokenizers`
  pretraining/    corpus -> examples -> ArrayRecord shards -> masked, resumable grain batches
  finetune/       labelled tables, TFDS GLUE, CoNLL and SQuAD read into plain records
  prepare         `python -m bert_jax.data.prepare` (pretraining/prepare.py under its short name)
"""
