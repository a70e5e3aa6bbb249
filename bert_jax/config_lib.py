"""Shared pieces of the `configs/*.py` files: the default training config and the model section.

Every config file returns an ml_collections ConfigDict built here, so all runs
share one set of keys (the contract in DESIGN.md) and `--config.K=V` overrides
work the same everywhere. `model_config(config)` turns `config.model` into the
frozen ModelConfig at the boundary; an unknown key raises, naming it.
"""

from __future__ import annotations

import os

import ml_collections

from bert_jax import assets, models, sharding
from bert_jax.models.config import ModelConfig


# Family -> (bundled tokenizer, pretraining objective).
FAMILY_DEFAULTS = {
    "bert": ("wordpiece", "mlm_nsp"),
    "roberta": ("bpe", "mlm"),
    "albert": ("spm", "mlm_sop"),
    "deberta": ("spm", "mlm"),
}


def model_section(cfg: ModelConfig) -> ml_collections.ConfigDict:
  """ConfigDict of a ModelConfig (tuples become lists so --config.model.K=V works)."""
  return ml_collections.ConfigDict(cfg.to_dict())


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
  """config.model -> ModelConfig; unknown keys raise KeyError naming them."""
  values = config.model.to_dict()
  try:
    return ModelConfig.from_dict(values)
  except KeyError as e:
    raise KeyError(f"config.model: {e.args[0]}") from None


def base_config() -> ml_collections.ConfigDict:
  """Every key a run reads, with defaults; config files override what they need."""
  c = ml_collections.ConfigDict()
  c.seed = 0                      # params init, data order, masking and dropout all derive from it
  c.total_steps = 10_000          # optimizer steps; 0 = initialise, write the step-0 metrics line, exit
  c.batch_size = 256              # global batch (all processes, all accumulation micro-steps)
  c.log_every = 50                # steps between train metric lines and the progress line
  c.eval_every = 1_000            # steps between evaluations (0 = only at the end)
  c.eval_steps = 20               # validation batches per evaluation (0 = the whole split)
  c.checkpoint_every = 1_000      # steps between checkpoints (a final one is always written)
  c.keep_checkpoints = 3          # newest checkpoints kept
  c.init_from = ""                # bert_jax checkpoint or Hugging Face folder to start from
  c.objective = "mlm"             # mlm | mlm_nsp | mlm_sop | rtd | distill_mlm
  c.nonfinite = "stop"            # stop | skip: what a non-finite loss/gradient does
  c.profile_steps = 0             # >0: write a jax profiler trace of that many steps after warm-up

  c.data = ml_collections.ConfigDict()
  c.data.train = assets.corpus_glob()  # globs of text files (.gz ok; blank line between documents) or tfds:NAME
  c.data.validation = ""          # same; empty = hold out documents from the training corpus
  c.data.validation_documents = 20  # documents held out when data.validation is empty
  c.data.text_key = "text"        # TFDS feature holding the text
  c.data.tokenizer = assets.tokenizer_dir("wordpiece")  # tokenizer folder
  c.data.max_length = 128         # tokens per row, specials included
  c.data.mask_rate = 0.15         # fraction of tokens predicted
  c.data.max_predictions = 20     # fixed number of MLM slots per row (static shapes)
  c.data.whole_word_masking = False  # mask whole words (## / ▁ / Ġ aware)
  c.data.dynamic_masking = True   # new masks every epoch (RoBERTa) instead of fixed ones (BERT)
  c.data.short_seq_prob = 0.1     # BERT: probability of a shorter target length
  c.data.nsp_random_prob = 0.5    # probability that segment B is random (NSP)
  c.data.packing = False          # pack several examples per row with segment-aware attention
  c.data.cache_dir = ""           # prepared shards; empty = the shared cache (bert_jax.runtime.caches: ~/.cache/bert_jax/prepared)
  c.data.num_workers = 0          # grain worker processes (0 = in-process)
  c.data.shuffle = True           # a new example order every epoch
  c.data.per_process_shards = False  # True: each process prepares only its documents (batches then
                                     # depend on the process count); False: same batches on any count

  c.model = model_section(models.build("bert", "tiny"))

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"      # adamw | lamb
  c.optimizer.learning_rate = 1e-4  # peak learning rate
  c.optimizer.warmup_steps = 1_000  # linear warmup (or warmup_ratio * total_steps when > 0)
  c.optimizer.warmup_ratio = 0.0  # overrides warmup_steps when > 0
  c.optimizer.schedule = "linear"  # decay after warmup: linear | cosine | polynomial | constant
  c.optimizer.end_learning_rate = 0.0  # learning rate at total_steps
  c.optimizer.power = 1.0         # polynomial decay power
  c.optimizer.weight_decay = 0.01  # decoupled weight decay (not on LayerNorm, biases)
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-6
  c.optimizer.clip_norm = 1.0     # global-norm clipping (0 = off)
  c.optimizer.grad_accum_steps = 1  # micro-batches per step (batch_size is split across them)
  c.optimizer.layerwise_lr_decay = 1.0  # <1: layer l gets lr * decay^(num_layers - l) (fine-tuning)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                # data-parallel axis (-1 = the devices left over)
  c.mesh.fsdp = 1                 # parameter/optimizer sharding axis
  c.mesh.tensor = 1               # tensor (heads / mlp / vocab) parallel axis
  c.sharding_rules = [list(rule) for rule in sharding.DEFAULT_RULES]  # logical axis -> mesh axes

  c.rtd = ml_collections.ConfigDict()
  c.rtd.generator_scale = 0.5     # generator width and heads relative to the discriminator (ELECTRA: 1/4..1/2)
  c.rtd.generator_depth_scale = 1.0  # generator layers relative to the discriminator (DeBERTa-v3: 0.5, width 1)
  c.rtd.discriminator_weight = 50.0  # lambda in L = L_mlm + lambda L_rtd
  c.rtd.embedding_sharing = "gdes"  # gdes (DeBERTa-v3) | shared (ELECTRA) | none

  # objective "distill_mlm": config.model is the student (bert_jax/tasks/distillation.py). The
  # alphas weigh per-position means; the defaults are DistilBERT's (alpha_ce 5, alpha_mlm 2,
  # alpha_cos 1, T = 2); MiniLM instead uses alpha_attention = alpha_value = 1, the others 0.
  c.distill = ml_collections.ConfigDict()
  c.distill.teacher = ""          # teacher folder: bert_jax checkpoint or Hugging Face (same vocabulary)
  c.distill.temperature = 2.0     # softmax temperature of the soft targets (the KL is scaled by T^2)
  c.distill.alpha_kd = 5.0        # soft-target KL(teacher || student) at the masked positions
  c.distill.alpha_mlm = 2.0       # hard-label MLM cross entropy
  c.distill.alpha_cosine = 1.0    # 1 - cos(student, teacher) of the last hidden states, per token
  c.distill.alpha_hidden = 0.0    # MSE of the last hidden states, per token (projected when widths differ)
  c.distill.alpha_attention = 0.0  # KL of the last layer's attention maps (MiniLM; equal head counts)
  c.distill.alpha_value = 0.0     # KL of the last layer's value relations softmax(V V^T / sqrt(d)) (MiniLM)
  c.distill.teacher_layer = -1    # teacher layer matched to the student's last: -1 = last, k = k-th (1-based)
  c.distill.init_from_teacher = False  # fresh runs: copy embeddings, heads and evenly spread teacher layers
                                       # (6 of 12: 0,2,4,7,9,11; DistilBERT), after init_from; equal widths
  return c


def pretrain_config(family: str, size: str) -> ml_collections.ConfigDict:
  """The standard pretraining setup of one family and size on the bundled corpus."""
  if family not in FAMILY_DEFAULTS:
    raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILY_DEFAULTS)}")
  c = base_config()
  tokenizer, objective = FAMILY_DEFAULTS[family]
  # nn.scan keeps compile time flat in depth, what matters for 24+ layers on pods. Up to base
  # size the layers run faster unrolled (CPU: 13% per step for bert-small, 8% for bert-base and
  # deberta-base) and compile in seconds, once per shape with the persistent cache.
  cfg = models.build(family, size)
  c.model = model_section(cfg.replace(scan_layers=family != "albert" and cfg.num_layers >= 24))
  c.data.tokenizer = assets.tokenizer_dir(tokenizer)
  c.objective = objective
  if family in ("roberta", "deberta"):
    c.data.dynamic_masking = True
  if family == "bert":
    c.data.dynamic_masking = False
  if family in ("albert", "deberta"):
    c.data.whole_word_masking = family == "albert"
  if family == "albert":
    c.optimizer.name = "lamb"
    c.optimizer.learning_rate = 1.76e-3 if size in ("base", "large", "xlarge", "xxlarge") else 1e-3
  return c


# Task -> settings that differ from the common fine-tuning defaults below.
FINETUNE_TASKS = {
    "classify": {"best_metric": "accuracy"},
    "regress": {"best_metric": "spearman", "data.label_column": "score"},
    "tag": {"best_metric": "f1", "data.max_length": 128},
    "qa": {"best_metric": "f1", "data.max_length": 384, "optimizer.learning_rate": 3e-5, "num_epochs": 2.0,
           "batch_size": 16},
    "contrastive": {"best_metric": "spearman", "data.max_length": 128, "optimizer.learning_rate": 2e-5,
                    "num_epochs": 1.0, "batch_size": 64},
    "rerank": {"best_metric": "mrr", "data.max_length": 256, "optimizer.learning_rate": 2e-5, "num_epochs": 1.0,
               "batch_size": 16},
}


def finetune_config(task: str) -> ml_collections.ConfigDict:
  """Fine-tuning defaults for one task of the table above (see bert_jax/finetune.py)."""
  if task not in FINETUNE_TASKS:
    raise ValueError(f"unknown fine-tuning task {task!r}; expected one of {sorted(FINETUNE_TASKS)}")
  c = base_config()
  c.task = task
  c.objective = "finetune"
  c.seeds = 1                     # runs with seeds seed, seed+1, ...; trained together under vmap
  c.num_epochs = 3.0              # used when total_steps <= 0
  c.total_steps = -1              # -1: num_epochs over the training split
  c.batch_size = 32
  c.eval_batch_size = 64
  c.log_every = 50
  c.eval_every = -1               # steps between evaluations; -1 = every epoch; 0 = only at the end
  c.checkpoint_every = -1         # -1 = every epoch
  c.keep_checkpoints = 1
  c.best_metric = ""              # validation metric that picks the best checkpoint ("" = the task's)
  c.pooling = "auto"              # sequence classification input: auto (the checkpoint's sentence-transformers
                                  # pooling, else the pooler) | pooler | cls | mean
  c.data.train = assets.sentiment_file("train")
  c.data.validation = assets.sentiment_file("dev")
  c.data.test = ""                # evaluated once at the end with the best checkpoint
  c.data.tokenizer = ""           # "" = the init_from folder's tokenizer (bundled WordPiece without init_from)
  c.data.text_column = "sentence"
  c.data.pair_column = "sentence2"
  c.data.label_column = "label"
  c.data.tfds_data_dir = ""
  c.data.group_by_length = True   # batches of similar lengths (less padding); still random and resumable
  c.data.doc_stride = 128         # qa: overlap between windows of a long context
  c.data.max_query_length = 64    # qa: question tokens kept
  c.data.max_answer_length = 30   # qa: longest predicted answer in tokens
  c.data.group_size = 4           # rerank: passages per query in a listwise group (1 positive)
  c.rerank_loss = "listwise"      # rerank: listwise (softmax over the group) | pointwise (binary cross entropy)
  c.temperature = 0.05            # contrastive: similarities divided by this (sentence-transformers' scale 20)
  c.model = model_section(models.build("bert", "mini"))  # the from-scratch backbone (without init_from)
  # Task distillation (classify): a fine-tuned teacher's soft targets plus the hard labels.
  c.distill.alpha_kd = 0.5
  c.distill.alpha_hard = 0.5
  c.optimizer.learning_rate = 5e-5
  c.optimizer.warmup_steps = 0
  c.optimizer.warmup_ratio = 0.1
  c.optimizer.weight_decay = 0.01
  c.optimizer.eps = 1e-8
  for key, value in FINETUNE_TASKS[task].items():
    section, _, name = key.rpartition(".")
    (c[section] if section else c)[name] = value
  return c
