"""Checkpoint conversion: Hugging Face folders <-> bert_jax checkpoint folders."""
