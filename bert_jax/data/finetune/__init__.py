"""Fine-tuning data readers: labelled tables, TFDS GLUE, CoNLL, SQuAD."""
