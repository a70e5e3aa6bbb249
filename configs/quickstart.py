"""A tiny BERT on the bundled public-domain corpus that visibly learns in a few minutes on 2 CPU cores.

    python -m bert_jax.main --config=configs/quickstart.py --workdir=/tmp/qs

Run the same command again to resume from the last checkpoint.
"""

from bert_jax import config_lib, models


def get_config():
  c = config_lib.base_config()
  # 2 layers x 128 wide with an 8192-row vocabulary that fits the bundled tokenizer:
  # the standard 30522 rows would spend most of the compute on the output layer.
  # No dropout: a 300-step run of a 1.5M-parameter model cannot overfit, and on CPU the dropout
  # masks' random bits cost a third of the step time.
  c.model = config_lib.model_section(models.build("bert", "tiny", vocab_size=8192, scan_layers=True,
                                                  max_position_embeddings=128, dropout_rate=0.0,
                                                  attention_dropout_rate=0.0))
  c.objective = "mlm"
  c.data.max_length = 128
  c.data.max_predictions = 20
  c.data.dynamic_masking = True
  c.batch_size = 32
  c.total_steps = 300
  c.log_every = 20
  c.eval_every = 100
  c.eval_steps = 10
  c.checkpoint_every = 100
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 40
  c.optimizer.weight_decay = 0.01
  return c
