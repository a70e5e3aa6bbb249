"""XLA:CPU's matmul at the fine-tuning step's shapes with each dot library it can use: GFLOP/s.

    python benchmarks/cpu_dot_libraries.py [--shapes=1024x384x1536,1024x1536x384,1024x384x384]
        [--reps=30] [--json=benchmarks/results/cpu_dot_libraries.jsonl]

An [M, K] x [K, N] float32 product, compiled once per library through `compiler_options`
(the same flags XLA_FLAGS takes): the default (YNNPACK dot fusions), XNNPACK's and oneDNN's
dot fusions, Eigen (no library fusion), and `xla_cpu_use_onednn`. Median of --reps calls after
one warm-up, and the largest difference from the default's product (libraries sum in their own
order). The default shapes are MiniLM's at 1,024 tokens: the feed-forward in and out, and q/k/v.

A second table times the weight gradient of the same layers, dW [K, N] = x^T . g with x [M, K] and
g [M, N] (the tokens, the first dimension of both, contracted), with the default libraries: as
XLA:CPU lowers it (Eigen: no library fusion takes this layout) against a row-major copy of one
operand's transpose followed by the canonical product YNNPACK takes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import timing

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LIBRARIES = {
    "default (ynn)": None,
    "xnn dot fusion": {"xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
                       "xla_cpu_experimental_ynn_fusion_type": ""},
    "onednn dot fusion": {"xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
                          "xla_cpu_experimental_ynn_fusion_type": ""},
    "eigen": {"xla_cpu_experimental_ynn_fusion_type": ""},
    "xla_cpu_use_onednn": {"xla_cpu_use_onednn": True, "xla_cpu_experimental_ynn_fusion_type": ""},
}


def _append(path: str | None, record: dict) -> None:
  if path:
    with open(path, "a") as f:
      f.write(json.dumps(record) + "\n")


def weight_gradients(shapes: list[tuple[int, int, int]], reps: int, json_path: str | None) -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from bert_jax.models.matmul import row_major_transpose

  forms = {
      "x^T . g as XLA writes it": lambda x, g: jax.lax.dot_general(x, g, (((0,), (0,)), ((), ()))),
      "copy of x^T, then [K, M] . [M, N]": lambda x, g: jnp.dot(row_major_transpose(x), g),
      "copy of g^T, then ([N, M] . [M, K])^T": lambda x, g: jnp.dot(row_major_transpose(g), x).T,
  }
  rng = np.random.default_rng(0)
  print("\n| M x K x N | weight gradient | ms | GFLOP/s | max difference from XLA's |\n|---|---|---|---|---|")
  for m, k, n in shapes:
    x = jnp.asarray(rng.normal(size=(m, k)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(m, n)), jnp.float32)
    reference = None
    for name, form in forms.items():
      compiled = jax.jit(form).lower(x, g).compile()
      out = jax.block_until_ready(compiled(x, g))
      reference = out if reference is None else reference
      seconds = float(np.median(timing.repeated(lambda: compiled(x, g), reps, warmup=0)))
      gflops = 2 * m * k * n / seconds / 1e9
      difference = float(jnp.max(jnp.abs(out - reference)))
      print(f"| {m}x{k}x{n} | {name} | {seconds * 1e3:.2f} | {gflops:.0f} | {difference:.1e} |", flush=True)
      _append(json_path, {"shape": f"{m}x{k}x{n}", "weight_gradient": name, "ms": round(seconds * 1e3, 3),
                          "gflops": round(gflops, 1), "max_difference": difference})


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--shapes", default="1024x384x1536,1024x1536x384,1024x384x384", help="MxKxN, comma-separated")
  parser.add_argument("--reps", type=int, default=30)
  parser.add_argument("--json", default=None, help="append one JSON line per shape and library")
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp
  import numpy as np

  rng = np.random.default_rng(0)
  print("| M x K x N | library | ms | GFLOP/s | max difference from the default |\n|---|---|---|---|---|")
  for spec in args.shapes.split(","):
    m, k, n = map(int, spec.split("x"))
    a = jnp.asarray(rng.normal(size=(m, k)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(k, n)), jnp.float32)
    lowered = jax.jit(jnp.matmul).lower(a, b)
    reference = None
    for name, options in LIBRARIES.items():
      try:
        compiled = lowered.compile(compiler_options=options) if options else lowered.compile()
      except Exception as e:  # a flag this jaxlib does not know
        print(f"| {spec} | {name} | not available: {str(e).splitlines()[0][:80]} | | |")
        continue
      out = jax.block_until_ready(compiled(a, b))
      reference = out if reference is None else reference
      seconds = float(np.median(timing.repeated(lambda: compiled(a, b), args.reps, warmup=0)))
      gflops = 2 * m * k * n / seconds / 1e9
      difference = float(jnp.max(jnp.abs(out - reference)))
      print(f"| {spec} | {name} | {seconds * 1e3:.2f} | {gflops:.0f} | {difference:.1e} |", flush=True)
      _append(args.json, {"shape": spec, "library": name, "ms": round(seconds * 1e3, 3),
                          "gflops": round(gflops, 1), "max_difference": difference})
  weight_gradients([tuple(map(int, spec.split("x"))) for spec in args.shapes.split(",")], args.reps, args.json)


if __name__ == "__main__":
  main()
