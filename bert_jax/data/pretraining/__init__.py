"""Pretraining data: corpus -> examples -> ArrayRecord shards -> masked grain batches."""
