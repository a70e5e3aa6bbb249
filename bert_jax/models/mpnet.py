"""MPNet (Song et al., 2020): BERT's post-LN layers with RoBERTa's position ids and no token types, plus
one relative position bias table (T5's buckets of key minus query position) that every layer adds to its
scaled attention scores.

base is microsoft/mpnet-base (514 positions for 512 tokens after padding_idx 1; 109,486,464 parameters
as MPNetModel counts them, pooler included); the other sizes follow BERT's, with MPNet's vocabulary.
The masked-and-permuted pretraining objective is not here: the MLM head trains it as a masked LM.
"""

from bert_jax.models import bert
from bert_jax.models.config import ModelConfig

SIZES = bert.SIZES


def config(size: str = "base", **overrides) -> ModelConfig:
  layers, hidden, heads = SIZES[size]
  # The LM head applies erf gelu whatever hidden_act says; the bias buckets 32 ways up to distance 128.
  settings = dict(family="mpnet", vocab_size=30527, hidden_size=hidden, num_layers=layers, num_heads=heads,
                  intermediate_size=4 * hidden, hidden_act="gelu", max_position_embeddings=514,
                  type_vocab_size=0, layer_norm_eps=1e-5, pad_token_id=1, position_ids="roberta",
                  relative_attention_num_buckets=32, relative_attention_bucketing=32,
                  relative_attention_max_distance=128, mlm_act="gelu")
  settings.update(overrides)
  return ModelConfig(**settings)
