"""`python -m bert_jax.report RUN_OR_SWEEP_DIR ...`: a Markdown table and the curves of several runs."""

from bert_jax.report import main

if __name__ == "__main__":
  main()
