"""Data: tokenizers, pretraining examples and the grain input pipeline.

  tokenizers          load / train WordPiece, byte-level BPE and SentencePiece tokenizers
  pretraining_data    make_loader(...): masked pretraining batches, resumable (the trainer's entry)
  pretraining_config  the `data` config keys and defaults
  prepare             text or TFDS -> tokenized examples in ArrayRecord shards (also a CLI)
  corpus              document streams from text files / TFDS, per-process selection
  examples            NSP / SOP sentence pairs, FULL-SENTENCES, first-fit packing
  records             example <-> record bytes, padded batches
  masking             MLM masking in numpy
"""
