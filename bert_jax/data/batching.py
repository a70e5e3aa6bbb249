"""The one length-bucketing rule: a batch's rows are padded up to the next length of a ladder.

Every distinct padded length is one compiled program, so a ladder trades padding against
compilations:

    POWER_OF_TWO  16, 32, 64, 128, ...: few shapes (log2(max_length / 16) + 1); fine-tuning and
                  evaluation batches, where each new shape costs a compilation mid-run
    FINE          multiples of 8 up to 128, of 16 up to 256, then of 64: little padding; the
                  embedding planner (bert_jax.embed) weighs each extra shape's compile cost itself

    bucket_length(37, 128)               -> 64
    bucket_length(37, 128, ladder=FINE)  -> 40
"""

from __future__ import annotations

POWER_OF_TWO = "power_of_two"
FINE = "fine"
MIN_BUCKET = 16  # the shortest power-of-two bucket


def bucket_length(length: int, max_length: int, ladder: str = POWER_OF_TWO) -> int:
  """The padded length of a batch whose longest row has `length` tokens: the ladder's next step, <= max_length."""
  if ladder == POWER_OF_TWO:
    bucket = MIN_BUCKET
    while bucket < length:
      bucket *= 2
  elif ladder == FINE:
    step = 8 if length <= 128 else 16 if length <= 256 else 64
    bucket = -(-length // step) * step
  else:
    raise ValueError(f"unknown bucketing ladder {ladder!r}; expected {POWER_OF_TWO!r} or {FINE!r}")
  return min(bucket, max_length)
