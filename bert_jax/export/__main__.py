"""`python -m bert_jax.export`: flags to `artifact.export_model`, a one-line summary of what was written."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bert_jax.convert.sentence_transformers import POOLINGS
from bert_jax.export.artifact import PARAM_DTYPES, ExportError, export_model
from bert_jax.export.serving_fn import PLATFORMS, TASK_HEADS


def _parser() -> argparse.ArgumentParser:
  from bert_jax import export  # the package docstring documents the command
  parser = argparse.ArgumentParser(prog="python -m bert_jax.export", description=export.__doc__.split("\n")[0])
  parser.add_argument("--model", required=True, help="bert_jax, Hugging Face or sentence-transformers model folder")
  parser.add_argument("--out", required=True, help="export folder to write (replaced only once complete)")
  parser.add_argument("--task", choices=tuple(TASK_HEADS), default=None,
                      help="default: classify / tag for a folder with that head, else embed")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                      help="compute dtype (default: the model's)")
  parser.add_argument("--param_dtype", choices=PARAM_DTYPES, default="float32",
                      help="dtype params.safetensors stores (bfloat16 halves the file; compute stays --dtype)")
  parser.add_argument("--max_length", type=int, default=None,
                      help="longest input in tokens (default: max_seq_length, else min(512, position table))")
  parser.add_argument("--platforms", default="cpu", help=f"comma-separated subset of {','.join(PLATFORMS)}")
  parser.add_argument("--pooling", choices=POOLINGS, default=None, help="embed: default the folder's, else mean")
  parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                      help="embed: L2-normalize (default: on if modules.json has Normalize)")
  parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                      help="serve the written folder and compare it with bert_jax in-process before keeping it")
  return parser


def _mib(folder: str, *names: str) -> float:
  return sum(os.path.getsize(os.path.join(folder, name)) for name in names) / 2**20


def main(argv: Sequence[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
  try:
    manifest = export_model(args.model, args.out, task=args.task, dtype=args.dtype, param_dtype=args.param_dtype,
                            max_length=args.max_length, platforms=platforms, pooling=args.pooling,
                            normalize=args.normalize, check=args.check)
  except (ExportError, FileNotFoundError, ValueError, KeyError) as e:
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    raise SystemExit(f"bert_jax.export: error: {message}") from e
  params = manifest["files"]["params"]
  functions = [f["file"] for f in manifest["functions"]]
  lengths = ("symbolic length" if functions == ["model.jaxexport"]
             else f"lengths {','.join(str(f['length']) for f in manifest['functions'])}")
  checked = (f"; matches bert_jax within {manifest['check_difference']:.1e}" if "check_difference" in manifest
             else "; not checked")
  print(f"wrote {args.out}: task {manifest['task']}, max_length {manifest['max_length']} ({lengths}), "
        f"{manifest['dtype']} compute, platforms {','.join(manifest['platforms'])}; "
        f"{len(functions)} function file(s) {_mib(args.out, *functions):.2f} MiB, "
        f"{params} {_mib(args.out, params):.1f} MiB ({manifest['param_dtype']}){checked}")


if __name__ == "__main__":
  main(sys.argv[1:])
