"""BERT (Devlin et al., 2019): post-LN, learned absolute positions, token types, tanh pooler."""

from bert_jax.models.config import ModelConfig

# name: (layers, hidden, heads); intermediate = 4 * hidden. tiny/mini/small follow Google's BERT miniatures.
SIZES = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


def config(size: str = "base", **overrides) -> ModelConfig:
  layers, hidden, heads = SIZES[size]
  settings = dict(family="bert", vocab_size=30522, hidden_size=hidden, num_layers=layers, num_heads=heads,
                  intermediate_size=4 * hidden, hidden_act="gelu", max_position_embeddings=512,
                  type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
  settings.update(overrides)
  return ModelConfig(**settings)
