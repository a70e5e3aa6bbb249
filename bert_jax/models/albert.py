"""ALBERT (Lan et al., 2020): factorised embeddings (E -> H), one layer applied N times, SOP.

share_layers="attention" or "ffn" shares only that block (ablations from the paper's table 4).
"""

from bert_jax.models.config import ModelConfig

# name: (layers, hidden, heads, intermediate); embeddings E = 128 throughout, as in the paper.
SIZES = {
    "tiny": (2, 128, 2, 512),
    "mini": (4, 256, 4, 1024),
    "small": (4, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
    "xlarge": (24, 2048, 16, 8192),
    "xxlarge": (12, 4096, 64, 16384),
}


def config(size: str = "base", **overrides) -> ModelConfig:
  layers, hidden, heads, intermediate = SIZES[size]
  settings = dict(family="albert", vocab_size=30000, hidden_size=hidden, num_layers=layers, num_heads=heads,
                  intermediate_size=intermediate, hidden_act="gelu_new", max_position_embeddings=512,
                  type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0, embedding_size=128,
                  share_layers="all", dropout_rate=0.0, attention_dropout_rate=0.0)
  settings.update(overrides)
  return ModelConfig(**settings)
