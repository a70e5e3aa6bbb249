"""Blockwise global attention (models/chunked_attention.py) by block size: forward and forward + backward.

    python benchmarks/attention_blocks.py [--shape=1x8192x4x64] [--blocks=512x1024,256x512,...]
        [--reps=3] [--json=benchmarks/results/cpu_attention_blocks.jsonl]

The long-context step's global layer at 8,192 tokens runs FlashAttention's algorithm in XLA
loops; its block sizes (`Q_BLOCK`, `K_BLOCK`) were chosen with this script. Each block size is
jitted once, then timed `--reps` times alternating forward and forward + backward (the gradient
of sum(out * cotangent) with respect to q, k and v, as a training step takes it), a key-padding
mask of all ones as the model passes it; the table reports the fastest of the reps, in seconds,
with the one-product path's numbers beside it where they fit in memory (`--one_product`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import timing

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--shape", default="1x8192x4x64", help="batch x length x heads x head_dim")
  parser.add_argument("--blocks", default="512x1024,256x512,256x1024,256x2048,128x2048",
                      help="comma-separated QUERIESxKEYS block sizes")
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--one_product", action="store_true", help="also time the single [l, l] product")
  parser.add_argument("--json", default=None, help="append one JSON line per block size")
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp
  import numpy as np

  from bert_jax.models import attention, chunked_attention

  b, length, heads, dim = map(int, args.shape.split("x"))
  rng = np.random.default_rng(0)
  q, k, v, cotangent = (jnp.asarray(rng.normal(size=(b, length, heads, dim)), jnp.float32) for _ in range(4))
  mask = jnp.ones((b, 1, 1, length), bool)
  scale = dim ** -0.5

  def timed(name, attend):
    loss = lambda q, k, v: jnp.sum(attend(q, k, v) * cotangent)
    forward, backward = jax.jit(loss), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    forward = min(timing.repeated(lambda: forward(q, k, v), args.reps))
    both = min(timing.repeated(lambda: backward(q, k, v), args.reps))
    row = {"shape": args.shape, "blocks": name, "forward_s": round(forward, 4), "forward_backward_s": round(both, 4),
           "device": jax.devices()[0].platform}
    print(f"{name:>12}: forward {forward:.3f} s, forward + backward {both:.3f} s", flush=True)
    if args.json:
      with open(args.json, "a") as f:
        f.write(json.dumps(row) + "\n")

  for spec in args.blocks.split(","):
    q_block, k_block = map(int, spec.split("x"))
    timed(spec, lambda q, k, v, q_block=q_block, k_block=k_block: chunked_attention.flash_attention(
        q, k, v, mask, scale=scale, q_block=q_block, k_block=k_block))
  if args.one_product:
    saved, chunked_attention.CHUNKED_FROM = chunked_attention.CHUNKED_FROM, float("inf")
    try:
      timed("one product", lambda q, k, v: attention.attend(q, k, v, mask, scale=scale))
    finally:
      chunked_attention.CHUNKED_FROM = saved


if __name__ == "__main__":
  main()
