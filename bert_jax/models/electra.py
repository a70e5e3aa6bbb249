"""ELECTRA (Clark et al., 2020): BERT layers on embeddings of width E, projected to H when E != H, and
no pooler. The sizes are the discriminators' (google/electra-{small,base,large}-discriminator: 13,483,008,
108,891,648 and 334,092,288 parameters as ElectraModel counts them); the generator is the discriminator's
narrower copy that RTD pretraining builds (tasks/pretrain/rtd.py).
"""

from bert_jax.models.config import ModelConfig

# name: (layers, hidden, heads, intermediate, embedding width E); E == H means no projection.
SIZES = {
    "small": (12, 256, 4, 1024, 128),
    "base": (12, 768, 12, 3072, 768),
    "large": (24, 1024, 16, 4096, 1024),
}


def config(size: str = "base", **overrides) -> ModelConfig:
  layers, hidden, heads, intermediate, embedding = SIZES[size]
  settings = dict(family="electra", vocab_size=30522, hidden_size=hidden, num_layers=layers, num_heads=heads,
                  intermediate_size=intermediate, hidden_act="gelu", max_position_embeddings=512,
                  type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
                  embedding_size=None if embedding == hidden else embedding, pooler="none", mlm_act="gelu")
  settings.update(overrides)
  return ModelConfig(**settings)
