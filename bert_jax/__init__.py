"""bert_jax: BERT, RoBERTa, ALBERT and DeBERTa encoders in JAX/Flax.

    import bert_jax
    model, params = bert_jax.from_pretrained("path/to/model", head="mlm")
    out = model.apply({"params": params}, input_ids, attention_mask=mask)
"""

from bert_jax.convert.pretrained import export_hf, from_pretrained, save_pretrained
from bert_jax.models.config import ModelConfig
from bert_jax.models.model import EncoderModel, EncoderOutput

__all__ = ["EncoderModel", "EncoderOutput", "ModelConfig", "export_hf", "from_pretrained", "save_pretrained"]
__version__ = "0.1.0"
