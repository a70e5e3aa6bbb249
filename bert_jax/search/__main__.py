"""`python -m bert_jax.search index|query|evaluate ...`: BM25 + dense hybrid search over a document set."""

import sys

from bert_jax.runtime import host_allocator

if __name__ == "__main__":
  host_allocator.tune_for_cpu()  # before JAX starts its threads
  from bert_jax.search import main
  main(sys.argv[1:])
