"""Model family builders: `build(family, size, **overrides) -> ModelConfig`."""

import functools

from bert_jax.models import albert, bert, deberta, distilbert, electra, modernbert, mpnet, roberta, xlm_roberta
from bert_jax.models.config import ModelConfig

FAMILIES = {"bert": bert, "roberta": roberta, "albert": albert, "deberta": deberta, "modernbert": modernbert,
            "xlm-roberta": xlm_roberta, "distilbert": distilbert, "electra": electra, "mpnet": mpnet}


def build(family: str, size: str, **overrides) -> ModelConfig:
  """The standard configuration of `family` at `size` (see each module's SIZES)."""
  if family not in FAMILIES:
    raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILIES)}")
  sizes = FAMILIES[family].SIZES
  if size not in sizes:
    raise ValueError(f"unknown size {size!r} for {family}; expected one of {list(sizes)}")
  return FAMILIES[family].config(size, **overrides)


@functools.lru_cache(maxsize=64)
def count_backbone_params(cfg: ModelConfig) -> int:
  """Parameters of the bare encoder, pooler included where the family has one (as HF's *Model counts).

  Cached per config: tracing the model for its shapes takes ~0.2 s, and a run asks several times.
  """
  import jax
  import jax.numpy as jnp
  from bert_jax.models.model import EncoderModel
  model = EncoderModel(cfg.replace(scan_layers=False), head=None)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8), jnp.int32))
  return sum(int(x.size) for x in jax.tree.leaves(shapes["params"]))
