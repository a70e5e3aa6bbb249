"""Text -> tokenized pretraining examples in ArrayRecord shards: cached, resumable, one set per process.

    prepared = prepare(data_config, "mlm_nsp", tokenizer, split="train", seed=0, out_dir="/tmp/run/prepared")
    prepared.paths, prepared.num_examples, prepared.format      # what the loader reads

Command line (prepares train and validation; the loader finds them with data.cache_dir=DIR):

    python -m bert_jax.data.pretraining.prepare --train='data/*.txt.gz' --tokenizer=DIR --out=DIR \
        [--objective=mlm|mlm_nsp|mlm_sop] [--max_length=128] [--packing] [--seed=0]

Which examples (see bert_jax/data/examples.py): mlm_nsp -> BERT sentence pairs
with next-sentence labels, mlm_sop -> ALBERT sentence-order pairs, mlm ->
RoBERTa FULL-SENTENCES (or, with data.packing, documents back to back in rows
filled to the brim, one segment each, split where a row ends). Examples depend only on the documents, the
tokenizer, these settings and the seed, so they are made once and masked at
load time.

Layout, one folder per (split, settings, inputs, process):

    out_dir/<split>-<kind>-L<max_length>-<fingerprint hash>-p<i>of<n>/
      shard-00000.array_record   examples of one group of documents (~shard_bytes of text)
      shard-00000.json           its counts; written before the shard is renamed into place
      manifest.json              written last: present and matching means done

The fingerprint holds the input files' names, sizes and mtimes (or the TFDS
dataset, split and size), a hash of the tokenizer and the example settings; any
change gives a new folder. A rerun after an interruption redoes only the
shards that are missing. Process i of n takes documents i, i+n, ... and writes
only its own folder, so hosts never write the same file.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence

from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from bert_jax import assets
from bert_jax.data.pretraining import corpus as corpus_lib
from bert_jax.data.pretraining import examples as examples_lib
from bert_jax.data.pretraining import records
from bert_jax.data.pretraining.config import DEFAULTS, OBJECTIVES, data_config, resolve
from bert_jax.runtime import fileio

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SHARD_BYTES = 16 << 20  # text per shard: bounds memory while building examples
_ENCODE_CHUNK = 8192  # lines per encode_batch call: parallel in Rust, yet regular progress
_PROGRESS_EVERY_S = 5.0


@dataclasses.dataclass(frozen=True)
class ExampleSettings:
  """Everything besides the inputs that decides the examples."""

  kind: str  # "nsp" | "sop" | "full_sentences" | "packed_documents"
  max_length: int
  short_seq_prob: float
  nsp_random_prob: float
  seed: int

  @classmethod
  def create(cls, objective: str, data_config, seed: int) -> ExampleSettings:
    if objective not in OBJECTIVES:
      raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if data_config.packing and objective != "mlm":
      raise ValueError(f"data.packing=True works with objective 'mlm' only: a packed row holds several "
                       f"documents but {objective!r} has one pair label per row")
    kind = {"mlm_nsp": "nsp", "mlm_sop": "sop"}.get(objective)
    kind = kind or ("packed_documents" if data_config.packing else "full_sentences")
    return cls(kind, int(data_config.max_length), float(data_config.short_seq_prob),
               float(data_config.nsp_random_prob), int(seed))

  @property
  def has_pair_labels(self) -> bool:
    return self.kind in ("nsp", "sop")


@dataclasses.dataclass(frozen=True)
class Prepared:
  """A finished shard set: directory, its ArrayRecord paths and how to decode them."""

  directory: str
  paths: list[str]
  format: records.RecordFormat
  num_examples: int
  settings: ExampleSettings
  manifest: dict


def tokenizer_hash(tokenizer) -> str:
  """Hash of everything that decides the ids: the serialized backend, its kind and specials."""
  text = json.dumps([tokenizer.backend.to_str(), tokenizer.kind, tokenizer.special_ids, tokenizer.sep_id])
  return hashlib.sha256(text.encode()).hexdigest()


def _examples(documents, template, settings: ExampleSettings, rng: random.Random) -> Iterator[examples_lib.Example]:
  length = settings.max_length
  if settings.kind == "nsp":
    return examples_lib.nsp_examples(documents, template, length, rng, short_seq_prob=settings.short_seq_prob,
                                     random_next_prob=settings.nsp_random_prob)
  if settings.kind == "sop":
    return examples_lib.sop_examples(documents, template, length, rng, short_seq_prob=settings.short_seq_prob)
  if settings.kind == "full_sentences":
    return examples_lib.sentence_examples(documents, template, length, cross_documents=True)
  return examples_lib.document_rows(documents, template, length)


class _Progress:
  """Logs documents/s, tokens/s and an ETA (from the share of the input read) every few seconds."""

  def __init__(self, name: str, source):
    self.name, self.source, self.total = name, source, max(source.total_bytes, 1)
    self.start = self.last = time.monotonic()
    self.documents = self.tokens = self.examples = 0

  def add(self, documents: int = 0, tokens: int = 0, examples: int = 0, force: bool = False) -> None:
    self.documents += documents
    self.tokens += tokens
    self.examples += examples
    now = time.monotonic()
    if not force and now - self.last < _PROGRESS_EVERY_S:
      return
    self.last = now
    elapsed = max(now - self.start, 1e-9)
    done = min(self.source.bytes_read / self.total, 1.0)
    eta = f"{elapsed * (1 - done) / done:.0f}s" if done > 0 else "?"
    log.info("prepare %s: %d documents (%.0f/s), %.2fM tokens (%.0f/s), %d examples, %.0f%% read, ETA %s",
             self.name, self.documents, self.documents / elapsed, self.tokens / 1e6, self.tokens / elapsed,
             self.examples, 100 * done, eta)


def _tokenize(tokenizer, groups: list[corpus_lib.Lines], progress: _Progress) -> list[list[list[int]]]:
  """Documents of lines -> documents of id lists (sentences and documents that tokenize to nothing dropped)."""
  lines = [line for document in groups for line in document]
  ids: list[list[int]] = []
  for start in range(0, len(lines), _ENCODE_CHUNK):
    # The backend directly: the wrapper's Encoding copies offsets and tokens we do not need.
    encodings = tokenizer.backend.encode_batch(lines[start:start + _ENCODE_CHUNK], add_special_tokens=False)
    chunk = [e.ids for e in encodings]
    ids.extend(chunk)
    progress.add(tokens=sum(map(len, chunk)))
  documents, position = [], 0
  for document in groups:
    sentences = [s for s in ids[position:position + len(document)] if s]
    position += len(document)
    if sentences:
      documents.append(sentences)
  progress.add(documents=len(groups))
  return documents


def _write_json(path: str, value: dict) -> None:
  fileio.write_atomic(path, json.dumps(value, indent=1, sort_keys=True))


def _read_json(path: str) -> dict | None:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


def _groups(documents: Iterator[tuple[int, corpus_lib.Lines]], shard_bytes: int) -> Iterator[list[corpus_lib.Lines]]:
  """Documents in groups of about shard_bytes of text and at least 2 documents.

  NSP draws random segments from the other documents of the same group, so a
  group of one document would not do; a small last group joins the one before.
  """
  pending, group, size = None, [], 0
  for _, lines in documents:
    group.append(lines)
    size += sum(map(len, lines))
    if size >= shard_bytes and len(group) >= 2:
      if pending is not None:
        yield pending
      pending, group, size = group, [], 0
  if pending is not None and group and (size < shard_bytes // 2 or len(group) < 2):
    pending, group = pending + group, []
  yield from (g for g in (pending, group) if g)


def _write_shard(path: str, examples: Iterator[examples_lib.Example], fmt: records.RecordFormat) -> int:
  """Writes the examples to an ArrayRecord file at path; returns how many there were."""
  writer = ArrayRecordWriter(path, "group_size:1,uncompressed")  # group_size 1: fast random reads
  count = 0
  try:
    for example in examples:
      writer.write(records.encode(example, fmt))
      count += 1
  finally:
    writer.close()
  return count


def prepare(
    data_config, objective: str, tokenizer, *, split: str = "train", seed: int = 0,
    process_index: int = 0, process_count: int = 1, out_dir: str, shard_bytes: int = SHARD_BYTES,
) -> Prepared:
  """Prepares (or finds) the examples of one split for one process; see the module docstring.

  split "train" reads data.train (minus the last data.validation_documents
  documents when data.validation is empty), documents process_index::process_count.
  split "validation" reads data.validation, or those held-out documents; every
  process prepares all of it.
  """
  data_config = resolve(data_config)
  settings = ExampleSettings.create(objective, data_config, seed)
  if split == "train":
    spec, what = data_config.train, "data.train"
    holdout = 0 if data_config.validation else int(data_config.validation_documents)
    role, index, count = "train", process_index, process_count
  elif split == "validation":
    if data_config.validation:
      spec, what, holdout, role = data_config.validation, "data.validation", 0, "train"
    elif int(data_config.validation_documents) > 0:
      spec, what, holdout, role = data_config.train, "data.train", int(data_config.validation_documents), "heldout"
    else:
      raise ValueError("no validation data: data.validation is empty and data.validation_documents is 0")
    index, count = 0, 1
  else:
    raise ValueError(f"split must be 'train' or 'validation', got {split!r}")

  source = corpus_lib.open_corpus(spec, split=split, text_key=data_config.text_key, what=what)
  template = examples_lib.Template.from_tokenizer(tokenizer)
  if settings.kind == "packed_documents":  # a row opens with a piece of at least MIN_PIECE tokens
    needed = template.num_specials(pair=False) + examples_lib.MIN_PIECE
  else:  # a token of text per segment
    needed = template.num_specials(pair=settings.has_pair_labels) + (2 if settings.has_pair_labels else 1)
  if settings.max_length < needed:
    raise ValueError(f"data.max_length={settings.max_length} is too short: {settings.kind} examples need "
                     f">= {needed} tokens")
  fmt = records.RecordFormat.for_vocabulary(tokenizer.max_id, packed=settings.kind == "packed_documents")
  fingerprint = {
      "format_version": FORMAT_VERSION, "split": split, "role": role, "holdout": holdout,
      "process": [index, count], "source": source.fingerprint(), "tokenizer": tokenizer_hash(tokenizer),
      "settings": dataclasses.asdict(settings), "record_format": dataclasses.asdict(fmt), "shard_bytes": shard_bytes,
  }
  digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
  directory = os.path.join(out_dir, f"{split}-{settings.kind}-L{settings.max_length}-{digest}"
                                    f"-p{process_index}of{process_count}")
  manifest_path = os.path.join(directory, "manifest.json")
  manifest = _read_json(manifest_path)
  complete = (manifest is not None and manifest.get("fingerprint") == fingerprint
              and all(os.path.exists(os.path.join(directory, s["file"])) for s in manifest["shards"]))
  if not complete:
    manifest = _build(directory, source, fingerprint, settings, template, tokenizer, fmt,
                      holdout=holdout, role=role, index=index, count=count, shard_bytes=shard_bytes,
                      name=f"{split} (process {process_index}/{process_count})")
    _write_json(manifest_path, manifest)
  else:
    log.info("prepare %s: using %s (%d examples)", split, directory, manifest["num_examples"])
  return Prepared(directory, [os.path.join(directory, s["file"]) for s in manifest["shards"]], fmt,
                  manifest["num_examples"], settings, manifest)


def _build(directory, source, fingerprint, settings, template, tokenizer, fmt, *, holdout, role, index, count,
           shard_bytes, name) -> dict:
  os.makedirs(directory, exist_ok=True)
  for entry in os.listdir(directory):  # a killed run's half-written shards (this process alone writes here)
    if entry.startswith(".shard-") and entry.endswith(".tmp"):
      os.remove(os.path.join(directory, entry))
  progress = _Progress(name, source)
  documents = corpus_lib.select_documents(source, holdout=holdout, role=role, process_index=index, process_count=count)
  shards = []
  for number, group in enumerate(_groups(documents, shard_bytes)):
    file = f"shard-{number:05d}.array_record"
    path = os.path.join(directory, file)
    stats_path = path[: -len(".array_record")] + ".json"
    stats = _read_json(stats_path)
    if stats is None or not os.path.exists(path):
      tokens_before = progress.tokens
      documents_ids = _tokenize(tokenizer, group, progress)
      tokens = progress.tokens - tokens_before
      seed_text = f"{settings.seed}/{fingerprint['split']}/{index}/{number}"
      rng = random.Random(int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "little"))
      # Counts first, shard last: a shard under its final name is always complete. The shard is
      # written to a temporary file that takes its name only when the block ends, after the counts.
      with fileio.atomic_path(path) as temporary:
        try:
          written = _write_shard(temporary, _examples(documents_ids, template, settings, rng), fmt)
        except ValueError as e:
          raise ValueError(f"{source.what}={source.spec!r}, {name}, shard {number}: {e}") from e
        stats = {"documents": len(documents_ids), "tokens": tokens, "examples": written}
        progress.add(examples=written)
        _write_json(stats_path, stats)
    else:  # done in an earlier run
      reader = ArrayRecordReader(path)
      found = reader.num_records()
      reader.close()
      if found != stats["examples"]:
        raise ValueError(f"{path} holds {found} examples but {stats_path} says {stats['examples']}; delete both")
      progress.add(stats["documents"], stats["tokens"], stats["examples"])
    shards.append({"file": file, **stats})
  progress.add(force=True)
  total = sum(s["examples"] for s in shards)
  if not total:
    raise ValueError(f"{source.what}={source.spec!r} gives no examples for {name}: "
                     f"{sum(s['documents'] for s in shards)} documents; need more text")
  shards = [s for s in shards if s["examples"]]
  return {"fingerprint": fingerprint, "shards": shards, "num_examples": total,
          "num_documents": sum(s["documents"] for s in shards), "num_tokens": sum(s["tokens"] for s in shards),
          "seconds": round(time.monotonic() - progress.start, 2)}


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m bert_jax.data.pretraining.prepare", description=__doc__.split("\n")[0])
  parser.add_argument("--train", default=None,
                      help="text globs (comma-separated) or tfds:<name>; default: the bundled corpus")
  parser.add_argument("--validation", default="", help="same syntax; empty: hold out the last documents of --train")
  parser.add_argument("--tokenizer", required=True, help="tokenizer folder")
  parser.add_argument("--out", required=True, help="output folder (use it as data.cache_dir)")
  parser.add_argument("--objective", default="mlm", choices=OBJECTIVES)
  parser.add_argument("--max_length", type=int, default=DEFAULTS["max_length"])
  parser.add_argument("--short_seq_prob", type=float, default=DEFAULTS["short_seq_prob"])
  parser.add_argument("--nsp_random_prob", type=float, default=DEFAULTS["nsp_random_prob"])
  parser.add_argument("--packing", action=argparse.BooleanOptionalAction, default=DEFAULTS["packing"])
  parser.add_argument("--validation_documents", type=int, default=DEFAULTS["validation_documents"])
  parser.add_argument("--text_key", default=DEFAULTS["text_key"])
  parser.add_argument("--seed", type=int, default=0, help="the training run's seed (examples depend on it)")
  parser.add_argument("--process_index", type=int, default=0)
  parser.add_argument("--process_count", type=int, default=1)
  return parser


def main(argv: Sequence[str] | None = None) -> None:
  from bert_jax.data.tokenizers import load_tokenizer  # pylint: disable=g-import-not-at-top

  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  overrides = {k: getattr(args, k) for k in ("validation", "tokenizer", "max_length", "short_seq_prob",
                                              "nsp_random_prob", "packing", "validation_documents", "text_key")}
  overrides["train"] = args.train or assets.corpus_glob()
  config = data_config(**overrides)
  tokenizer = load_tokenizer(args.tokenizer)
  for split in ("train", "validation"):
    if split == "validation" and not config.validation and not config.validation_documents:
      continue
    prepared = prepare(config, args.objective, tokenizer, split=split, seed=args.seed, out_dir=args.out,
                       process_index=args.process_index, process_count=args.process_count)
    print(f"{split}: {prepared.num_examples} examples in {prepared.directory}")


if __name__ == "__main__":
  main(sys.argv[1:])
