"""Golden runs: 8 steps of every family's tiny pretraining config and of every fine-tuning task.

Each case is a real `python -m bert_jax.main` run (seed 0, dropout on where the config has it) on
the bundled data: the corpus, the movie-sentiment set, and tagging / QA / pair / ranking files
made deterministically from the corpus. What a run computes (every training loss, every
evaluation and test metric, the parameter counts, the fine-tuning summary) is pinned in
tests/testdata/run_goldens.json; tests/test_run_goldens.py reruns the cases and compares to
relative 1e-6. Only the command line and the run directory's files are used, so the goldens
hold across any reorganisation of the code behind them.

Floating-point results depend on the CPU: XLA:CPU picks its kernels (and so its summation
orders) by instruction set, and a few of the 8-step numbers move by up to ~3e-4 relative
between an AVX2 EPYC and an AVX-512 Xeon. The goldens therefore name the machine class they
were made on (`machine()`: CPU vendor and widest vector ISA). run_goldens.json comes from
REFERENCE_MACHINE; other classes may add their own file (run_goldens_machines/CLASS.json,
written by the same command on such a machine). On a machine whose class has goldens the test
compares everything to relative 1e-6; elsewhere it compares the training losses to the
reference at relative 1e-3 (tests/test_run_goldens.py: CROSS_MACHINE_RTOL), which still
catches a change of what is computed but not the rounding of another ISA, and leaves out the
evaluation metrics, whose rank statistics and argmaxes that rounding can flip.

Two small cases also keep their run directory as it stood right after the step-4 checkpoint
(tests/testdata/run_checkpoints/: that checkpoint and the metrics lines up to step 4): the test
resumes them to step 8 with the current code and compares with the uninterrupted run.

    python -m tests.run_goldens            # regenerate this machine class's goldens (review the diff);
                                           # on REFERENCE_MACHINE also run_goldens.json's checkpoints
    python -m tests.run_goldens bert-tiny  # print one case
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
TESTDATA = REPO / "tests" / "testdata"
GOLDEN_FILE = TESTDATA / "run_goldens.json"
MACHINE_GOLDENS = TESTDATA / "run_goldens_machines"
# Where run_goldens.json and run_checkpoints/ were made (benchmarks/README.md's 2-core EPYC).
REFERENCE_MACHINE = "AuthenticAMD-avx2"
CHECKPOINT_DIR = TESTDATA / "run_checkpoints"
BUNDLED = REPO / "bert_jax" / "assets" / "data"

STEPS = 8
# Shared by every pretraining case: short rows, few predictions, a small batch, eval and
# checkpoints every 4 steps.
PRETRAIN = {"total_steps": STEPS, "batch_size": 8, "data.max_length": 64, "data.max_predictions": 10,
            "log_every": 1, "eval_every": 4, "eval_steps": 2, "checkpoint_every": 4,
            "optimizer.warmup_steps": 2, "data.validation_documents": 3}
# A from-scratch backbone small enough for seconds per run (the bundled WordPiece vocabulary).
# Padded rows (data.packing=False) pin the reference path; "classify-packed" pins packed rows of batch_size
# examples a step, "classify-token-budget" the default (packed, a token budget a step).
FINETUNE = {"total_steps": STEPS, "batch_size": 8, "eval_batch_size": 16, "log_every": 1, "eval_every": 4,
            "data.packing": False,
            "checkpoint_every": 4, "data.max_length": 64, "model.num_layers": 2, "model.hidden_size": 64,
            "model.num_heads": 2, "model.intermediate_size": 128}
# The resumable cases: a model small enough to commit its checkpoint (hidden 16, the 8192-row vocabulary).
SMALL = {"model.hidden_size": 16, "model.num_heads": 2, "model.intermediate_size": 32, "model.num_layers": 2,
         "model.vocab_size": 8192, "keep_checkpoints": 2}

# Keys whose values depend on the machine's speed, not on what the run computes.
_TIMING = re.compile(r"^perf/|_per_sec|/mfu$|time")


# The machine class ------------------------------------------------------------------------------

def machine(cpuinfo: str | None = None) -> str:
  """"VENDOR-ISA": the CPU vendor and the widest vector instruction set XLA:CPU can use (Linux x86)."""
  if cpuinfo is None:
    try:
      cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
      import platform
      return f"{platform.system()}-{platform.machine()}"
  fields = dict(line.split(":", 1) for line in cpuinfo.splitlines()[:40] if ":" in line)
  fields = {k.strip(): v.strip() for k, v in fields.items()}
  flags = set(fields.get("flags", "").split())
  isa = next((name for name in ("avx512f", "avx2", "avx", "sse4_2") if name in flags), "other")
  return f"{fields.get('vendor_id', 'unknown')}-{isa.replace('avx512f', 'avx512')}"


def goldens_for(name: str | None = None) -> tuple[dict, bool]:
  """(goldens, exact): this machine class's goldens if it has a file, else the reference ones;
  exact says whether they were made on this class of machine."""
  name = name or machine()
  path = MACHINE_GOLDENS / f"{name}.json"
  if name != REFERENCE_MACHINE and path.exists():
    return json.loads(path.read_text()), True
  return json.loads(GOLDEN_FILE.read_text()), name == REFERENCE_MACHINE


# Data -------------------------------------------------------------------------------------------

def _documents(name: str, count: int, lines: int) -> list[list[str]]:
  with gzip.open(BUNDLED / f"{name}.txt.gz", "rt", encoding="utf-8") as f:
    documents = f.read().strip("\n").split("\n\n")
  return [d.split("\n")[:lines] for d in documents[:count]]


def _sentiment(split: str, rows: int) -> list[list[str]]:
  with open(BUNDLED / f"movie_sentiment.{split}.tsv", encoding="utf-8") as f:
    lines = f.read().splitlines()
  return [line.split("\t") for line in lines[1:rows + 1]]


def _write_tsv(path: pathlib.Path, header: list[str], rows) -> str:
  path.write_text("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
  return str(path)


def corpus(root: pathlib.Path) -> str:
  """20 Austen and 10 KJV documents of at most 20 paragraphs (the bundled corpus, cut short)."""
  path = root / "corpus.txt"
  if not path.exists():
    documents = _documents("austen", 20, 20) + _documents("kjv", 10, 20)
    path.write_text("\n\n".join("\n".join(d) for d in documents) + "\n", encoding="utf-8")
  return str(path)


def _paragraphs(count: int) -> list[str]:
  out = [p for d in _documents("austen", 40, 40) for p in d if 60 < len(p) < 400]
  return out[:count]


def sentiment(root: pathlib.Path, splits=("train", "dev", "test")) -> dict[str, str]:
  header, rows = ["sentence", "label", "score"], {"train": 160, "dev": 48, "test": 48}
  return {split: _write_tsv(root / f"sentiment.{split}.tsv", header, _sentiment(split, rows[split]))
          for split in splits}


def sentiment_without_test(root: pathlib.Path) -> dict[str, str]:
  return sentiment(root, ("train", "dev"))


def tagging(root: pathlib.Path) -> dict[str, str]:
  """CoNLL files: capitalised runs of words are entities (B-CAP / I-CAP), numbers NUM, the rest O."""
  def conll(paragraphs):
    blocks = []
    for paragraph in paragraphs:
      words = paragraph.split()[:40]
      tags, previous = [], "O"
      for word in words:
        if word[:1].isdigit():
          tag = "B-NUM"
        elif word[:1].isupper():
          tag = "I-CAP" if previous.endswith("CAP") else "B-CAP"
        else:
          tag = "O"
        tags.append(tag)
        previous = tag
      blocks.append("\n".join(f"{w} {t}" for w, t in zip(words, tags)))
    return "\n\n".join(blocks) + "\n"
  paragraphs = _paragraphs(120)
  (root / "tag.train.txt").write_text(conll(paragraphs[:90]), encoding="utf-8")
  (root / "tag.dev.txt").write_text(conll(paragraphs[90:]), encoding="utf-8")
  return {"train": str(root / "tag.train.txt"), "dev": str(root / "tag.dev.txt")}


def squad(root: pathlib.Path) -> dict[str, str]:
  """SQuAD v2 files: the question is a paragraph's first words, the answer the next three (every
  fifth question unanswerable)."""
  def dataset(paragraphs, prefix):
    articles = []
    for i, context in enumerate(paragraphs):
      words = context.split()
      question = " ".join(words[:4]) + "?"
      answer = " ".join(words[4:7])
      qa = {"id": f"{prefix}{i}", "question": question}
      if i % 5 == 4:
        qa.update(answers=[], is_impossible=True)
      else:
        qa.update(answers=[{"text": answer, "answer_start": context.index(answer)}], is_impossible=False)
      articles.append({"title": f"t{i}", "paragraphs": [{"context": context, "qas": [qa]}]})
    return {"version": "v2.0", "data": articles}
  paragraphs = _paragraphs(120)
  (root / "qa.train.json").write_text(json.dumps(dataset(paragraphs[:90], "tr")), encoding="utf-8")
  (root / "qa.dev.json").write_text(json.dumps(dataset(paragraphs[90:], "dv")), encoding="utf-8")
  return {"train": str(root / "qa.train.json"), "dev": str(root / "qa.dev.json")}


def pairs(root: pathlib.Path) -> dict[str, str]:
  """Contrastive pairs (a paragraph's two halves, a hard negative from the next one) and scored dev pairs."""
  paragraphs = _paragraphs(140)
  halves = [(p[:len(p) // 2], p[len(p) // 2:]) for p in paragraphs]
  train = [(a, b, halves[(i + 1) % 100][1]) for i, (a, b) in enumerate(halves[:100])]
  dev = [(a, b if i % 2 == 0 else halves[100 + (i + 7) % 40][1], "1.0" if i % 2 == 0 else "0.0")
         for i, (a, b) in enumerate(halves[100:])]
  return {"train": _write_tsv(root / "pairs.train.tsv", ["sentence", "sentence2", "negative"], train),
          "dev": _write_tsv(root / "pairs.dev.tsv", ["sentence", "sentence2", "label"], dev)}


def ranking(root: pathlib.Path) -> dict[str, str]:
  """Grouped JSON lines: the query is a paragraph's first words, the positive the paragraph."""
  paragraphs = _paragraphs(120)
  def lines(chunk, offset):
    out = []
    for i, passage in enumerate(chunk):
      negatives = [chunk[(i + k) % len(chunk)] for k in (1, 2, 5)]
      out.append(json.dumps({"query": " ".join(passage.split()[:5]), "positives": [passage],
                             "negatives": negatives}))
    return "\n".join(out) + "\n"
  (root / "rank.train.jsonl").write_text(lines(paragraphs[:80], 0), encoding="utf-8")
  (root / "rank.dev.jsonl").write_text(lines(paragraphs[80:], 80), encoding="utf-8")
  return {"train": str(root / "rank.train.jsonl"), "dev": str(root / "rank.dev.jsonl")}


# Cases ------------------------------------------------------------------------------------------

def _pretrain(arg: str, **extra):
  def build(root: pathlib.Path, workdirs: dict[str, pathlib.Path]):
    values = {**PRETRAIN, "data.train": corpus(root), **extra}
    return f"configs/pretrain.py:{arg}", {k: (v(workdirs) if callable(v) else v) for k, v in values.items()}
  return build


def _finetune(task: str, data, **extra):
  def build(root: pathlib.Path, workdirs: dict[str, pathlib.Path]):
    files = data(root)
    values = {**FINETUNE, "data.train": files["train"], "data.validation": files["dev"], **extra}
    if "test" in files:
      values["data.test"] = files["test"]
    return f"configs/finetune.py:{task}", {k: (v(workdirs) if callable(v) else v) for k, v in values.items()}
  return build


def _quickstart(root: pathlib.Path, workdirs):
  return "configs/quickstart.py", {**PRETRAIN, "data.train": corpus(root)}


# name -> (build(root, workdirs) -> (config argument, overrides), cases that must run first)
CASES = {
    "bert-tiny": (_pretrain("bert-tiny"), ()),
    "roberta-tiny": (_pretrain("roberta-tiny", **{"data.packing": False}), ()),  # FULL-SENTENCES
    "roberta-tiny-packed": (_pretrain("roberta-tiny", **{"data.packing": True}), ()),  # the default
    "albert-tiny": (_pretrain("albert-tiny"), ()),
    "deberta-tiny": (_pretrain("deberta-tiny", **{"data.packing": False}), ()),
    "deberta-tiny-packed": (_pretrain("deberta-tiny"), ()),  # the default
    "deberta-tiny-emd": (_pretrain("deberta-tiny", **{"model.emd_layers": 2, "model.scan_layers": False,
                                                      "data.packing": False}), ()),
    "bert-tiny-rtd": (_pretrain("bert-tiny", objective="rtd"), ()),
    "bert-tiny-distill": (_pretrain("bert-tiny", objective="distill_mlm", **{
        "distill.teacher": lambda w: str(w["bert-tiny"] / "model"), "distill.alpha_hidden": 1.0,
        "distill.alpha_attention": 1.0}), ("bert-tiny",)),
    "quickstart": (_quickstart, ()),
    "classify": (_finetune("classify", sentiment), ()),
    "classify-packed": (_finetune("classify", sentiment, **{"data.packing": True, "data.tokens_per_batch": 0}), ()),
    "classify-token-budget": (_finetune("classify", sentiment, **{"data.packing": True}), ()),  # the default
    "classify-seeds": (_finetune("classify", sentiment, seeds=2, **{"optimizer.layerwise_lr_decay": 0.8}), ()),
    "classify-init": (_finetune("classify", sentiment, init_from=lambda w: str(w["bert-tiny"] / "model")),
                      ("bert-tiny",)),
    "classify-distill": (_finetune("classify", sentiment, **{
        "distill.teacher": lambda w: str(w["classify"] / "best")}), ("classify",)),
    "regress": (_finetune("regress", sentiment), ()),
    "tag": (_finetune("tag", tagging), ()),
    "qa": (_finetune("qa", squad, **{"data.max_length": 64, "data.doc_stride": 16, "data.max_query_length": 16}),
           ()),
    "contrastive": (_finetune("contrastive", pairs), ()),
    "rerank": (_finetune("rerank", ranking), ()),
    "rerank-pointwise": (_finetune("rerank", ranking, rerank_loss="pointwise"), ()),
}

# Cases whose run directory at step 4 is committed and resumed by the test.
RESUMABLE = {
    "resume-pretrain": (_pretrain("bert-tiny", **SMALL), ()),
    "resume-finetune": (_finetune("classify", sentiment_without_test, **SMALL), ()),
}


def command(config_arg: str, values: dict, workdir: pathlib.Path) -> list[str]:
  return [sys.executable, "-m", "bert_jax.main", f"--config={config_arg}", f"--workdir={workdir}",
          *(f"--config.{k}={v}" for k, v in values.items())]


def launch(cmd: list[str], cache: pathlib.Path) -> None:
  """Runs one command on one CPU device with its own caches; raises with the output on failure."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu",
         "BERT_JAX_CACHE": str(cache)}
  result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  if result.returncode:
    raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")


def record(workdir: pathlib.Path) -> dict:
  """What the run computed: every metrics line without timings, and the fine-tuning summary."""
  lines = []
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    if line.strip():
      values = json.loads(line)
      lines.append({k: v for k, v in values.items() if not _TIMING.search(k)})
  out = {"metrics": lines}
  if (workdir / "summary.json").exists():
    out["summary"] = json.loads((workdir / "summary.json").read_text())
  return out


def run_case(name: str, root: pathlib.Path, cases: dict = CASES, workdirs: dict | None = None
             ) -> tuple[pathlib.Path, dict]:
  """Runs `name` (and the cases it needs first) under root; returns its workdir and record."""
  workdirs = {} if workdirs is None else workdirs
  build, needs = cases[name]
  for need in needs:
    if need not in workdirs:
      run_case(need, root, CASES, workdirs)
  data_root = root / "data"
  data_root.mkdir(parents=True, exist_ok=True)
  config_arg, values = build(data_root, workdirs)
  workdir = root / name
  launch(command(config_arg, values, workdir), root / "cache")
  workdirs[name] = workdir
  return workdir, record(workdir)


def resume_case(name: str, root: pathlib.Path, checkpoint: pathlib.Path) -> dict:
  """Copies a committed step-4 run directory and resumes it to STEPS with the current code."""
  build, _ = RESUMABLE[name]
  data_root = root / "data"
  data_root.mkdir(parents=True, exist_ok=True)
  config_arg, values = build(data_root, {})
  workdir = root / name
  shutil.copytree(checkpoint, workdir)
  launch(command(config_arg, values, workdir), root / "cache")
  return record(workdir)


def keep_as_interrupted(workdir: pathlib.Path, target: pathlib.Path, step: int) -> None:
  """The run directory as a run killed right after its step-`step` checkpoint leaves it."""
  target.mkdir(parents=True)
  shutil.copytree(workdir / "checkpoints" / str(step), target / "checkpoints" / str(step))
  lines = [line for line in (workdir / "metrics.jsonl").read_text().splitlines()
           if line.strip() and json.loads(line)["step"] <= step]
  (target / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))


def main(argv: list[str]) -> None:
  import tempfile
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    if len(argv) > 1:
      for name in argv[1:]:
        print(json.dumps(run_case(name, root)[1], indent=1))
      return
    here = machine()
    goldens, workdirs = {}, {}
    for name in CASES:
      if name not in workdirs:
        run_case(name, root, CASES, workdirs)
      goldens[name] = record(workdirs[name])
      print(f"{name}: {len(goldens[name]['metrics'])} metrics lines", flush=True)
    if here != REFERENCE_MACHINE:
      # The committed checkpoints (and the RESUMABLE runs, which continue them) stay the reference machine's.
      MACHINE_GOLDENS.mkdir(exist_ok=True)
      (MACHINE_GOLDENS / f"{here}.json").write_text(json.dumps(goldens, indent=1, sort_keys=True) + "\n")
      print(f"goldens of {here} written to {MACHINE_GOLDENS / (here + '.json')}")
      return
    shutil.rmtree(CHECKPOINT_DIR, ignore_errors=True)
    for name in RESUMABLE:
      workdir, goldens[name] = run_case(name, root, RESUMABLE)
      keep_as_interrupted(workdir, CHECKPOINT_DIR / name, STEPS // 2)
      print(f"{name}: run directory at step {STEPS // 2} kept in {CHECKPOINT_DIR / name}", flush=True)
    GOLDEN_FILE.write_text(json.dumps(goldens, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
  main(sys.argv)
