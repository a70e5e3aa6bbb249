"""The keys every run shares, for the `configs/*.py` files; the files own their own tables.

Every config file starts from `base_config()`, so all runs share one set of keys (the
contract in DESIGN.md) and `--config.K=V` overrides work the same everywhere; the family
table lives in configs/pretrain.py, the fine-tuning recipes in configs/finetune.py and the
task table in bert_jax/tasks/registry.py. `model_config(config)` turns `config.model` into
the frozen ModelConfig at the boundary; an unknown key raises, naming it.
"""

from __future__ import annotations

import ml_collections

from bert_jax import models, sharding
from bert_jax.data.pretraining.config import data_config
from bert_jax.models.config import ModelConfig


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
  c.profile_steps = 0             # > 0: trace that many steps after the first into WORKDIR/profile
                                  # (bert_jax/runtime/profiling.py: reading the trace, the CPU flag)

  c.data = data_config()          # the data section: keys and meanings in bert_jax/data/pretraining/config.py

  c.model = model_section(models.build("bert", "tiny"))

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"      # adamw | lamb
  c.optimizer.learning_rate = 1e-4  # peak learning rate
  c.optimizer.warmup_steps = 1_000  # linear warmup (or warmup_ratio * total_steps when > 0)
  c.optimizer.warmup_ratio = 0.0  # overrides warmup_steps when > 0
  c.optimizer.schedule = "linear"  # decay after warmup: linear | cosine | polynomial | constant | wsd
  c.optimizer.decay_ratio = 0.1   # wsd: the last fraction of the steps, decaying as 1 - sqrt (before: constant)
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

  # objective "distill_mlm": config.model is the student (bert_jax/tasks/pretrain/distillation.py). The
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

