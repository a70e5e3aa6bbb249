"""DistilBERT (Sanh et al., 2019): BERT-base's width at half its depth (6 layers), no token types and no
pooler; every LayerNorm epsilon 1e-12. base is distilbert-base-uncased (66,362,880 parameters as
DistilBertModel counts them).
"""

from bert_jax.models.config import ModelConfig

# name: (layers, hidden, heads, intermediate)
SIZES = {"base": (6, 768, 12, 3072)}


def config(size: str = "base", **overrides) -> ModelConfig:
  layers, hidden, heads, intermediate = SIZES[size]
  settings = dict(family="distilbert", vocab_size=30522, hidden_size=hidden, num_layers=layers, num_heads=heads,
                  intermediate_size=intermediate, hidden_act="gelu", max_position_embeddings=512,
                  type_vocab_size=0, layer_norm_eps=1e-12, pad_token_id=0, pooler="none")
  settings.update(overrides)
  return ModelConfig(**settings)
