"""Pretraining of any family at any standard size on the bundled corpus (or your own text).

    python -m bert_jax.main --config=configs/pretrain.py:bert-base --workdir=/tmp/bert
    python -m bert_jax.main --config=configs/pretrain.py:deberta-base \
        --config.data.train='gs://bucket/wiki/*.txt' --workdir=gs://bucket/run1 \
        --config.mesh.fsdp=-1 --config.mesh.data=1 --config.model.dtype=bfloat16

ARG is `<family>-<size>`: family in bert, roberta, albert, deberta (v3 style);
size in tiny, mini, small, base, large (albert also xlarge, xxlarge). The
model keeps the family's standard vocabulary (30522, 50265, 30000, 128100) even
with the small bundled tokenizer, so its parameter count is the reference one.
"""

from bert_jax import config_lib


def get_config(arg: str = "bert-base"):
  family, _, size = arg.partition("-")
  c = config_lib.pretrain_config(family, size or "base")
  c.batch_size = 256 if size in ("base", "large", "xlarge", "xxlarge") else 64
  c.total_steps = 100_000
  c.optimizer.warmup_steps = 10_000 if c.batch_size == 256 else 1_000
  return c
