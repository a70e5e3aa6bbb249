"""`python -m bert_jax.embed --model=PATH --input=FILE --output=OUT.npy`: one embedding per input line."""

import sys

from bert_jax.runtime import host_allocator

if __name__ == "__main__":
  host_allocator.tune_for_cpu()  # before JAX starts its threads
  from bert_jax.embed import main
  main(sys.argv[1:])
