"""DeBERTa-v3 (He et al., 2021/2023): disentangled attention over log-bucketed relative positions.

v3 style: SentencePiece vocabulary of 128100, no absolute positions in the input,
shared attention keys for positions, LayerNorm on the relative table, c2p + p2c.
"""

from bert_jax.models import bert
from bert_jax.models.config import ModelConfig

SIZES = bert.SIZES


def config(size: str = "base", **overrides) -> ModelConfig:
  layers, hidden, heads = SIZES[size]
  settings = dict(family="deberta-v2", vocab_size=128100, hidden_size=hidden, num_layers=layers, num_heads=heads,
                  intermediate_size=4 * hidden, hidden_act="gelu", max_position_embeddings=512,
                  type_vocab_size=0, layer_norm_eps=1e-7, pad_token_id=0, position_ids="none",
                  embedding_projection="project_then_norm", mask_embeddings=True, mask_padded_queries=True,
                  attention_type="disentangled", pos_att_type=("p2c", "c2p"), max_relative_positions=512,
                  position_buckets=256, share_att_key=True, norm_rel_embeddings=True, pooler="none")
  settings.update(overrides)
  return ModelConfig(**settings)
