"""Fine-tuning: one config file, one recipe table (below); the tasks themselves are in bert_jax/tasks/registry.py.

    python -m bert_jax.main --config=configs/finetune.py:classify --workdir=/tmp/ft \
        --config.init_from=PATH --config.data.train=train.tsv --config.data.validation=dev.tsv

Tasks: classify (TSV/CSV/JSONL `sentence` [`sentence2`] `label`, or tfds:glue/NAME),
regress (STS-B style scores), tag (CoNLL files), qa (SQuAD JSON), contrastive
(sentence embeddings from pairs/triplets), rerank (cross-encoder), align (texts into a
fixed tower's space: --config.data.vectors=emb.npy, texts naming rows). Several seeds:
--config.seeds=5. Without --config.data.* the classify/regress tasks run on the
bundled movie-sentiment TSVs.
"""

from bert_jax import assets, config_lib, models
from bert_jax.tasks import registry

# Task -> the recipe settings that differ from the common fine-tuning defaults below.
RECIPES = {
    # Token-budget steps (bert_jax/data/token_budget.py): batch_size examples a step on average, in
    # one compiled shape (benchmarks/README.md: 1.3-5.6x the examples/s of batch_size examples a step
    # for tag, qa and rerank on CPU, whose varying row counts compile a shape each).
    "classify": {"data.tokens_per_batch": -1},
    "regress": {"data.tokens_per_batch": -1},
    # Longer sentences go in windows overlapping by doc_stride tokens, a quarter of max_length (scale it
    # with max_length): a word read from its max-context window has >= 16 tokens on either side.
    "tag": {"data.max_length": 128, "data.doc_stride": 32, "data.tokens_per_batch": -1},
    "qa": {"data.max_length": 384, "optimizer.learning_rate": 3e-5, "num_epochs": 2.0, "batch_size": 16,
           "data.tokens_per_batch": -1},
    "contrastive": {"data.max_length": 128, "optimizer.learning_rate": 2e-5, "num_epochs": 1.0, "batch_size": 64},
    "rerank": {"data.max_length": 256, "optimizer.learning_rate": 2e-5, "num_epochs": 1.0, "batch_size": 16,
               "data.tokens_per_batch": -1},
    # LiT / CLIP: the temperature starts at 0.07 and is learned. The encoder moves far from where it was
    # pretrained (3e-4, not contrastive's 2e-5), the fresh projection 10x faster still (README.md's
    # caption run and benchmarks/README.md compare the rates).
    "align": {"data.max_length": 64, "data.text_column": "text", "optimizer.learning_rate": 3e-4,
              "num_epochs": 5.0, "batch_size": 64, "temperature": 0.07, "pooling": "mean"},
}


def finetune_config(task: str):
  """The common fine-tuning defaults, then the task's own settings (registry), then its recipe (RECIPES)."""
  spec = registry.get(task, registry.FINETUNE)
  c = config_lib.base_config()
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
  c.best_metric = spec.best_metric  # validation metric that picks the best checkpoint
  c.fresh_head = False            # True: a new task head even when init_from holds one (else it continues)
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
  c.data.packing = True           # padding-free: several examples per row (bert_jax/data/packing.py)
  c.data.pack_length = 0          # tokens per packed row; 0 = data.max_length
  c.data.tokens_per_batch = 0     # > 0: each step a fixed budget of packed rows (this many tokens) holding as
                                  # many examples as fit, at most batch_size; -1: the budget whose steps hold
                                  # batch_size examples on average, at most 1.5x (bert_jax/data/token_budget.py);
                                  # 0: batch_size examples a step
  c.data.doc_stride = 128         # qa, tag: overlap between windows of a long context / sentence
  c.data.max_query_length = 64    # qa: question tokens kept
  c.data.max_answer_length = 30   # qa: longest predicted answer in tokens
  c.data.group_size = 4           # rerank: passages per query in a listwise group (1 positive)
  c.rerank_loss = "listwise"      # rerank: listwise (softmax over the group) | pointwise (binary cross entropy)
  c.temperature = 0.05            # contrastive: similarities divided by this (sentence-transformers' scale 20);
                                  # align: where the learned temperature starts
  c.max_logit_scale = 100.0       # align: the learned 1 / temperature is clamped at this (CLIP); 0 = no clamp
  c.head_lr_multiplier = 10.0     # align: the projection and logit scale step this many times the learning rate
  c.data.vectors = ""             # align: .npy of the fixed tower's embeddings [rows, dim], L2-normalised on load
  c.data.row_column = "row"       # align: the column naming each text's row of data.vectors ("vector" also read)
  c.model = config_lib.model_section(models.build("bert", "mini"))  # the from-scratch backbone (without init_from)
  # Task distillation (classify): a fine-tuned teacher's soft targets plus the hard labels.
  c.distill.alpha_kd = 0.5
  c.distill.alpha_hard = 0.5
  c.optimizer.learning_rate = 5e-5
  c.optimizer.warmup_steps = 0
  c.optimizer.warmup_ratio = 0.1
  c.optimizer.weight_decay = 0.01
  c.optimizer.eps = 1e-8
  registry.apply_overrides(c, spec.overrides)
  registry.apply_overrides(c, RECIPES[task])
  return c


def get_config(task: str = "classify"):
  return finetune_config(task)
