"""`python -m bert_jax.data.prepare`: tokenize a corpus into ArrayRecord shards ahead of a run.

The command of `bert_jax.data.pretraining.prepare`, under the name the README gives it:

    python -m bert_jax.data.prepare --train='data/*.txt.gz' --tokenizer=bert_jax/assets/tokenizers/wordpiece \
        --out=/tmp/prepared --objective=mlm_nsp --max_length=128
"""

import sys

if __name__ == "__main__":
  from bert_jax.data.pretraining.prepare import main
  main(sys.argv[1:])
