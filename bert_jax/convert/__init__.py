"""Every checkpoint folder format: Hugging Face folders both ways, bert_jax folders, sentence-transformers files."""
