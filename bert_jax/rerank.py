"""`python -m bert_jax.rerank`: the cross-encoder re-ranker of `bert_jax.search.rerank`, under its short name.

    python -m bert_jax.rerank --model=/tmp/ce/best --input=candidates.jsonl --output=ranked.jsonl --top_k=10
"""

import sys

from bert_jax.runtime import host_allocator

if __name__ == "__main__":
  host_allocator.tune_for_cpu()  # before JAX starts its threads
  from bert_jax.search.rerank import main
  main(sys.argv[1:])
