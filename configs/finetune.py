"""Fine-tuning: one task table (bert_jax.config_lib.FINETUNE_TASKS), one config file.

    python -m bert_jax.main --config=configs/finetune.py:classify --workdir=/tmp/ft \
        --config.init_from=PATH --config.data.train=train.tsv --config.data.validation=dev.tsv

Tasks: classify (TSV/CSV/JSONL `sentence` [`sentence2`] `label`, or tfds:glue/NAME),
regress (STS-B style scores), tag (CoNLL files), qa (SQuAD JSON), contrastive
(sentence embeddings from pairs/triplets), rerank (cross-encoder). Several seeds:
--config.seeds=5. Without --config.data.* the classify/regress tasks run on the
bundled movie-sentiment TSVs.
"""

from bert_jax import config_lib


def get_config(task: str = "classify"):
  return config_lib.finetune_config(task)
