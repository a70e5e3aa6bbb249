"""Pretraining of any family at any standard size on the bundled corpus (or your own text).

    python -m bert_jax.main --config=configs/pretrain.py:bert-base --workdir=/tmp/bert
    python -m bert_jax.main --config=configs/pretrain.py:deberta-base \
        --config.data.train='gs://bucket/wiki/*.txt' --workdir=gs://bucket/run1 \
        --config.mesh.fsdp=-1 --config.mesh.data=1 --config.model.dtype=bfloat16

ARG is `<family>-<size>`: family in bert, roberta, albert, deberta (v3 style), modernbert;
size in tiny, mini, small, base, large (albert also xlarge, xxlarge). The
model keeps the family's standard vocabulary (30522, 50265, 30000, 128100, 50368) even
with the small bundled tokenizer, so its parameter count is the reference one.

RoBERTa, DeBERTa and ModernBERT train padding-free by default (data.packing: whole documents'
sentences, several documents to a row, attention and positions per document; the progress line and
metrics.jsonl show the share of real tokens); --config.data.packing=False gives RoBERTa's
FULL-SENTENCES rows instead.

ModernBERT's recipe: MLM only with 30% masking on packed rows (padding-free: several
documents per row, attention and rotary positions per document), warmup-stable-decay.
Context extension: start from a shorter-context run with a longer row and a new rotary base,

    python -m bert_jax.main --config=configs/pretrain.py:modernbert-base --workdir=/tmp/mb8k \
        --config.init_from=/tmp/mb/model --config.data.max_length=8192 --config.model.rotary_base=160000
"""

from bert_jax import assets, config_lib, models

# Family -> what its pretraining recipe changes from the shared defaults (config_lib.base_config):
# the bundled tokenizer, the objective (bert_jax/tasks/registry.py) and the data / optimizer settings.
FAMILIES = {
    "bert": {"tokenizer": "wordpiece", "objective": "mlm_nsp", "data.dynamic_masking": False},
    # Padding-free: documents back to back in full rows, attention and positions per document.
    "roberta": {"tokenizer": "bpe", "objective": "mlm", "data.dynamic_masking": True, "data.packing": True},
    "albert": {"tokenizer": "spm", "objective": "mlm_sop", "data.whole_word_masking": True,
               "optimizer.name": "lamb", "optimizer.learning_rate": 1e-3},
    "deberta": {"tokenizer": "spm", "objective": "mlm", "data.dynamic_masking": True,
                "data.whole_word_masking": False, "data.packing": True},
    "modernbert": {"tokenizer": "bpe", "objective": "mlm", "data.dynamic_masking": True, "data.mask_rate": 0.3,
                   "data.packing": True, "data.max_length": 512, "data.max_predictions": 160,
                   "optimizer.schedule": "wsd", "optimizer.decay_ratio": 0.1, "optimizer.learning_rate": 8e-4,
                   "optimizer.weight_decay": 1e-5},
}
LARGE_SIZES = ("base", "large", "xlarge", "xxlarge")


def pretrain_config(family: str, size: str):
  """The standard pretraining setup of one family and size on the bundled corpus."""
  if family not in FAMILIES:
    raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILIES)}")
  c = config_lib.base_config()
  settings = dict(FAMILIES[family])
  c.data.tokenizer = assets.tokenizer_dir(settings.pop("tokenizer"))
  c.objective = settings.pop("objective")
  for key, value in settings.items():
    section, _, name = key.rpartition(".")
    c[section][name] = value
  if family == "albert" and size in LARGE_SIZES:
    c.optimizer.learning_rate = 1.76e-3
  if family == "modernbert" and size == "large":
    c.optimizer.learning_rate = 5e-4
  # nn.scan keeps compile time flat in depth, what matters for 24+ layers on pods. Up to base
  # size the layers run faster unrolled (CPU: 13% per step for bert-small, 8% for bert-base and
  # deberta-base) and compile in seconds, once per shape with the persistent cache.
  cfg = models.build(family, size)
  # ALBERT shares one layer; ModernBERT's first layer differs from the others (no attention norm).
  scan = family not in ("albert", "modernbert") and cfg.num_layers >= 24
  c.model = config_lib.model_section(cfg.replace(scan_layers=scan))
  c.batch_size = 256 if size in LARGE_SIZES else 64
  c.total_steps = 100_000
  c.optimizer.warmup_steps = 10_000 if c.batch_size == 256 else 1_000
  return c


def get_config(arg: str = "bert-base"):
  family, _, size = arg.partition("-")
  return pretrain_config(family, size or "base")
