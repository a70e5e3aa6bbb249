"""`python -m bert_jax.embed`: flags, the input file's lines, and the .npy written only when complete.

`run` checks everything that can be checked before the model is loaded (the
output folder, the model folder, every input line), then embeds with
`encoding.embed_with_settings` and writes float32 [lines, hidden]. With
several processes (`processes`), each checks and reads the same input and
process 0 writes the one output.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

from bert_jax.convert.sentence_transformers import POOLINGS
from bert_jax.embed import processes
from bert_jax.embed.encoding import embed_with_settings, load
from bert_jax.embed.settings import LONG_INPUTS, EmbedError, folder_settings, resolve_settings
from bert_jax.runtime import caches, fileio

PROGRESS_MIN_TEXTS = 1000


def read_lines(path: str, allow_empty: bool = False) -> list[str]:
  """The lines of a UTF-8 file (without "\\n" or "\\r\\n"), checked; EmbedError names the bad line."""
  # fileio ends a line at "\n" only: str.splitlines would also split on \x0b, \x1c, U+2028, ...
  try:
    lines = fileio.read_lines(path, error=EmbedError)
  except FileNotFoundError as e:
    raise EmbedError(f"cannot read input {path}: no such file") from e
  if not lines:
    raise EmbedError(f"input {path} is empty: expected one text per line")
  if not allow_empty:
    for number, line in enumerate(lines, 1):
      if not line.strip():
        raise EmbedError(f"{path}:{number}: empty line (every line is one text to embed; "
                         "pass --allow_empty_lines to embed it as an empty string)")
  return lines


def save_npy(path: str, array: np.ndarray) -> None:
  """np.save to a temporary file beside `path`, renamed over it only when complete."""
  # A file object, not the temporary name: np.save would append ".npy" to that.
  with fileio.atomic_path(path) as tmp, open(tmp, "wb") as f:
    np.save(f, array)


def _parser() -> argparse.ArgumentParser:
  from bert_jax import embed  # the package docstring documents the command
  parser = argparse.ArgumentParser(prog="python -m bert_jax.embed", description=embed.__doc__.split("\n")[0])
  parser.add_argument("--model", required=True, help="Hugging Face or bert_jax model folder")
  parser.add_argument("--input", required=True, help="UTF-8 text file, one text per line")
  parser.add_argument("--output", required=True,
                      help=".npy file to write: float32 [lines, hidden] (the last Dense module's width if any)")
  parser.add_argument("--pooling", choices=POOLINGS, default=None, help="default: the folder's, else mean")
  parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                      help="L2-normalize rows (default: on if modules.json has Normalize)")
  parser.add_argument("--max_length", type=int, default=None,
                      help="tokens per sequence (default: max_seq_length, else min(512, position table))")
  parser.add_argument("--long_inputs", choices=LONG_INPUTS, default="truncate")
  parser.add_argument("--batch_size", type=int, default=None,
                      help="rows per batch (a row packs several short texts), rounded up to a multiple of the "
                           "devices; default: ~4096 tokens per device on CPU, ~16384 on accelerators")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="compute dtype")
  parser.add_argument("--allow_empty_lines", action="store_true", help="embed empty lines as empty strings")
  parser.add_argument("--compilation_cache", action=argparse.BooleanOptionalAction, default=True,
                      help=f"keep compiled programs in {caches.path('jax_cache')}")
  processes.add_flags(parser)
  return parser


def main(argv: Sequence[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  with processes.errors_end_this_process():
    try:
      processes.initialize(args, EmbedError)
      run(args)
    except (EmbedError, FileNotFoundError, ValueError, KeyError) as e:
      message = e.args[0] if isinstance(e, KeyError) and e.args else e
      raise SystemExit(f"bert_jax.embed: error: {message}") from e
    processes.written(args.output)


def run(args: argparse.Namespace) -> None:
  """Checks everything that can be checked before the model is loaded, then embeds and writes."""
  if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
    raise EmbedError(f"--output {args.output}: folder {os.path.dirname(os.path.abspath(args.output))} does not exist")
  if not os.path.isdir(args.model):
    raise EmbedError(f"--model {args.model}: not a folder")
  texts = read_lines(args.input, args.allow_empty_lines)
  if args.compilation_cache:
    caches.enable_compilation_cache()
  model, params, tokenizer = load(args.model, args.dtype)
  settings = resolve_settings(folder_settings(args.model, model.config.max_length), model.config.max_length,
                              model.config.hidden_size, pooling=args.pooling, normalize=args.normalize,
                              max_length=args.max_length, long_inputs=args.long_inputs)
  show = len(texts) > PROGRESS_MIN_TEXTS or sys.stderr.isatty()
  vectors = embed_with_settings(model, params, tokenizer, texts, settings, args.batch_size, show)
  if processes.writes():
    save_npy(args.output, vectors)
