"""XLM-RoBERTa (Conneau et al., 2020): RoBERTa's architecture over a 250,002-token SentencePiece vocabulary
shared by 100 languages. base and large are FacebookAI/xlm-roberta-base and -large (278,043,648 and
559,890,432 parameters as XLMRobertaModel counts them, pooler included).
"""

from bert_jax.models import bert, roberta
from bert_jax.models.config import ModelConfig

SIZES = {name: bert.SIZES[name] for name in ("base", "large")}


def config(size: str = "base", **overrides) -> ModelConfig:
  return roberta.config(size, **{"family": "xlm-roberta", "vocab_size": 250002, **overrides})
