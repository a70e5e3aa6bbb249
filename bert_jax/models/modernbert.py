"""ModernBERT (Warner et al., 2024): pre-LN GeGLU layers without biases, rotary positions with a
global layer every third and sliding-window local layers between, a final norm, 8,192 tokens.

tiny is this codebase's own (4 layers); mini and small follow Ettin's 17M and 32M encoders;
base and large are answerdotai/ModernBERT-base and -large (149,014,272 and 394,781,696
parameters as ModernBertModel counts them).
"""

from bert_jax.models.config import ModelConfig

# name: (layers, hidden, heads, intermediate); the GLU's input projection is 2 x intermediate wide.
SIZES = {
    "tiny": (4, 128, 2, 192),
    "mini": (7, 256, 4, 384),
    "small": (10, 384, 6, 576),
    "base": (22, 768, 12, 1152),
    "large": (28, 1024, 16, 2624),
}


def config(size: str = "base", **overrides) -> ModelConfig:
  layers, hidden, heads, intermediate = SIZES[size]
  settings = dict(family="modernbert", vocab_size=50368, hidden_size=hidden, num_layers=layers, num_heads=heads,
                  intermediate_size=intermediate, hidden_act="gelu", max_position_embeddings=8192,
                  type_vocab_size=0, position_ids="none", layer_norm_eps=1e-5, pad_token_id=50283,
                  dropout_rate=0.0, attention_dropout_rate=0.0, norm_position="pre", norm_bias=False,
                  attention_bias=False, mlp_bias=False, mlp_type="glu", rotary_base=160_000.0,
                  local_rotary_base=10_000.0, local_attention=128, global_attn_every_n_layers=3, pooler="none",
                  mlm_act="gelu", mlm_dense_bias=False, mlm_decoder_bias=True, classifier_pooling="cls")
  settings.update(overrides)
  return ModelConfig(**settings)
