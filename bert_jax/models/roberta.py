"""RoBERTa (Liu et al., 2019): BERT blocks, byte-level BPE vocabulary, fairseq positions, one token type.

The rest of RoBERTa lives on the data side: dynamic masking, full-sentence packing, no NSP.
"""

from bert_jax.models import bert
from bert_jax.models.config import ModelConfig

SIZES = bert.SIZES


def config(size: str = "base", **overrides) -> ModelConfig:
  layers, hidden, heads = SIZES[size]
  # Positions start after padding_idx=1, so 514 rows hold 512 tokens.
  settings = dict(family="roberta", vocab_size=50265, hidden_size=hidden, num_layers=layers, num_heads=heads,
                  intermediate_size=4 * hidden, hidden_act="gelu", max_position_embeddings=514,
                  type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, position_ids="roberta",
                  mlm_act="gelu")
  settings.update(overrides)
  return ModelConfig(**settings)
