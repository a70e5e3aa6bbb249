"""Tokenizers for BERT, RoBERTa, ALBERT and DeBERTa; the public names live in `bert_jax.data.tokenizers`."""
