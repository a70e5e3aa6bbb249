"""Fine-tuning tasks: classification and regression, tagging, span QA, contrastive, re-ranking."""
