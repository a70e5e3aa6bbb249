"""Every device: embed, search (index, query, evaluate) and rerank split their batches over all devices.

The same commands run on the 8 fake devices of this process, in a process with
one device, and in two processes of 2 devices each joined by jax.distributed
over localhost; the outputs must agree (embeddings cosine >= 0.99999 per row,
identical rankings, equal scores), and only process 0 writes. Tiny random
models (a 2-layer BERT with the bundled WordPiece vocabulary, the 2-layer
cross-encoder of tests/testdata/hf) keep each run to seconds.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import sharding
from bert_jax.embed import encoding, planning
from bert_jax.runtime import peer_watch

# Not tests.conftest: the subprocesses import this module and must keep the environment they are given.
REPO = pathlib.Path(__file__).parent.parent
TESTDATA = REPO / "tests" / "testdata"
WORDS = ("noah built an ark of gopher wood and took the animals two by two before the rain while "
         "elizabeth read the letter from darcy again and grew ashamed of her prejudice at netherfield").split()
COSINE = 0.99999


def _cosine(a, b):
  return np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


# -- the commands, run the same way on every layout of devices -----------------------


def run_commands(inputs: str, out: str, *flags: str) -> None:
  """embed, search index / query / evaluate and rerank on the files of `inputs`, outputs into `out`."""
  from bert_jax.embed import cli as embed_cli
  from bert_jax.search import cli as search_cli
  from bert_jax.search import rerank
  inputs, out = pathlib.Path(inputs), pathlib.Path(out)
  model, index = str(inputs / "encoder"), str(out / "index")
  cache = "--no-compilation_cache"
  embed_cli.main([f"--model={model}", f"--input={inputs / 'texts.txt'}", f"--output={out / 'embeddings.npy'}",
                  "--max_length=24", "--long_inputs=chunk", "--pooling=max", "--batch_size=8", cache, *flags])
  search_cli.main(["index", f"--model={model}", f"--documents={inputs / 'docs.jsonl'}", f"--index={index}",
                   "--chunk_tokens=20", "--chunk_overlap=5", cache, *flags])
  queries = f"--queries={inputs / 'queries.jsonl'}"
  search_cli.main(["query", f"--index={index}", queries, "--mode=dense", "--k=8",
                   f"--output={out / 'dense.jsonl'}", cache, *flags])
  search_cli.main(["evaluate", f"--index={index}", queries, "--k=5", f"--output={out / 'metrics.json'}", cache,
                   *flags])
  rerank.main([f"--model={inputs / 'cross_encoder'}", f"--input={inputs / 'candidates.jsonl'}",
               f"--output={out / 'ranked.jsonl'}", "--batch_size=12", *flags])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """A tiny encoder folder, a cross-encoder folder, and the input files of `run_commands`."""
  from bert_jax.convert.pretrained import export_hf
  from bert_jax.data.tokenizers import bundled_tokenizer, load_tokenizer
  from bert_jax.models.config import ModelConfig
  from bert_jax.models.model import EncoderModel
  root = tmp_path_factory.mktemp("every_device_inputs")
  vocab = bundled_tokenizer("wordpiece")
  cfg = ModelConfig(vocab_size=load_tokenizer(vocab).vocab_size, hidden_size=32, num_layers=2, num_heads=2,
                    intermediate_size=37, max_position_embeddings=64)
  model = EncoderModel(cfg)
  export_hf(str(root / "encoder"), model, model.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))["params"],
            tokenizer_from=vocab)
  shutil.copytree(TESTDATA / "hf" / "bert_cross_encoder", root / "cross_encoder")
  (root / "cross_encoder" / "vocab.txt").write_text(
      "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, 97)]) + "\n")
  (root / "cross_encoder" / "tokenizer_config.json").write_text('{"do_lower_case": true}')

  rng = np.random.default_rng(0)
  sentence = lambda low, high: " ".join(rng.choice(WORDS, rng.integers(low, high)))  # noqa: E731
  (root / "texts.txt").write_text("".join(sentence(1, 40) + "\n" for _ in range(60)))
  docs = [{"id": f"d{i}", "text": sentence(3, 45)} for i in range(30)]
  (root / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
  queries = [{"id": f"q{i}", "query": sentence(2, 6), "relevant": [f"d{rng.integers(30)}"]} for i in range(9)]
  (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
  words = lambda n: " ".join(f"w{i}" for i in rng.integers(5, 97, n))  # noqa: E731
  candidates = [{"id": f"q{i}", "query": words(3), "passages": [words(rng.integers(2, 12)) for _ in range(7)]}
                for i in range(5)]
  (root / "candidates.jsonl").write_text("".join(json.dumps(c) + "\n" for c in candidates))
  return root


@pytest.fixture(scope="module")
def eight_devices(inputs, tmp_path_factory):
  """The outputs of this process's 8 devices."""
  assert jax.device_count() == 8
  out = tmp_path_factory.mktemp("eight_devices")
  run_commands(str(inputs), str(out))
  return out


def _subprocess_env(devices: int, shared_cache: bool = True) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if not shared_cache:  # as tests/test_multiprocess.py: no compilation cache shared between the processes
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
  return env


DRIVER = "import sys; from tests.test_every_device import run_commands; run_commands(*sys.argv[1:])"


def _assert_same_outputs(ours: pathlib.Path, reference: pathlib.Path) -> None:
  """The files of `run_commands` agree: vectors by cosine, rankings exactly, scores to float32 noise."""
  a, b = np.load(ours / "embeddings.npy"), np.load(reference / "embeddings.npy")
  assert a.shape == b.shape == (60, 32) and _cosine(a, b).min() >= COSINE

  assert (ours / "index" / "chunks.jsonl").read_text() == (reference / "index" / "chunks.jsonl").read_text()
  a, b = np.load(ours / "index" / "embeddings.npy"), np.load(reference / "index" / "embeddings.npy")
  assert a.shape == b.shape and a.shape[0] > 30 and _cosine(a, b).min() >= COSINE  # some documents chunked
  info = [json.loads((d / "index" / "index.json").read_text()) for d in (ours, reference)]
  assert [{k: v for k, v in i.items() if k != "created"} for i in info] == [
      {k: v for k, v in info[1].items() if k != "created"}] * 2

  def ranked(folder, name, key):
    rows = [json.loads(line) for line in (folder / name).read_text().splitlines()]
    return [[r[key] for r in row["results" if name == "dense.jsonl" else "passages"]] for row in rows]
  for name, doc in (("dense.jsonl", "doc"), ("ranked.jsonl", "id")):
    assert ranked(ours, name, doc) == ranked(reference, name, doc), name
    np.testing.assert_allclose(np.concatenate(ranked(ours, name, "score")),
                               np.concatenate(ranked(reference, name, "score")), atol=1e-5)

  metrics = [json.loads((d / "metrics.json").read_text())["metrics"] for d in (ours, reference)]
  for mode in ("bm25", "dense", "hybrid"):
    assert metrics[0][mode] == pytest.approx(metrics[1][mode], abs=1e-9), mode


def test_eight_devices_match_one_device(inputs, eight_devices, tmp_path):
  run = subprocess.run([sys.executable, "-c", DRIVER, str(inputs), str(tmp_path)], cwd=REPO,
                       env=_subprocess_env(1), capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stdout + run.stderr
  _assert_same_outputs(eight_devices, tmp_path)


def test_two_processes_match_one_process(inputs, eight_devices, tmp_path):
  """Two processes x 2 devices: the same files, written by process 0 alone."""
  port = 20000 + (os.getpid() * 11) % 20000
  logs = [tmp_path / f"process_{i}.log" for i in range(2)]
  out = tmp_path / "out"
  out.mkdir()
  env = _subprocess_env(2, shared_cache=False)
  procs = []
  for i, log in enumerate(logs):
    with open(log, "w") as f:
      procs.append(subprocess.Popen(
          [sys.executable, "-c", DRIVER, str(inputs), str(out), f"--coordinator_address=localhost:{port}",
           "--num_processes=2", f"--process_id={i}"], cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT))
  try:
    codes = [p.wait(timeout=300) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  text = [log.read_text() for log in logs]
  assert codes == [0, 0], "\n".join(text)[-6000:]
  assert "| recall@1 |" in text[0] and "| recall@1 |" not in text[1]  # process 0 prints, process 1 does not
  _assert_same_outputs(out, eight_devices)


def test_a_process_failing_alone_stops_the_other_at_once(inputs, tmp_path):
  """Process 1 cannot read its input: it exits with the message, process 0 stops within seconds
  (peer links, not the heartbeat timeout), and no output appears."""
  port = 20000 + (os.getpid() * 13 + 1) % 20000
  out = tmp_path / "out.npy"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "bert_jax.embed", f"--model={inputs / 'encoder'}",
       f"--input={inputs / 'texts.txt' if i == 0 else tmp_path / 'missing.txt'}", f"--output={out}",
       "--no-compilation_cache", f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
      cwd=REPO, env=_subprocess_env(2, shared_cache=False), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(2)]
  try:
    failed = procs[1].wait(timeout=120)
    start = time.time()
    stopped = procs[0].wait(timeout=120)
    waited = time.time() - start
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  logs = [p.stdout.read() for p in procs]
  assert failed == 1 and "missing.txt: no such file" in logs[1], logs[1]
  assert stopped == peer_watch.EXIT_LOST_PEER and waited < 30, logs[0]
  assert not out.exists()


# -- the pieces ----------------------------------------------------------------------


def test_rows_are_built_and_gathered_per_device():
  mesh = sharding.data_parallel_mesh()
  built = []

  def build(start, stop):
    built.append((start, stop))
    rows = np.arange(start, stop)
    return rows[:, None] * np.ones((1, 3), np.int32), rows.astype(np.float32)

  matrix, vector = sharding.shard_rows(build, 16, mesh)
  assert sorted(built) == [(2 * i, 2 * i + 2) for i in range(8)]  # each device's block, built once
  assert matrix.shape == (16, 3) and len(matrix.sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(matrix)[:, 0], np.arange(16))
  blocks = sharding.local_rows(vector * 2)
  assert sorted(start for start, _ in blocks) == list(range(0, 16, 2))
  starts = np.concatenate([start + np.arange(len(rows)) for start, rows in blocks])
  gathered = sharding.gather_rows(np.concatenate([rows for _, rows in blocks]), starts, 16)
  np.testing.assert_array_equal(gathered, 2 * np.arange(16))
  with pytest.raises(ValueError, match="12 rows does not split over 8 devices"):
    sharding.shard_rows(build, 12, mesh)


def test_plan_rows_split_over_the_devices():
  lengths = np.random.default_rng(3).integers(2, 200, size=300)
  for rows in (None, 5):
    batches = planning.plan_batches(lengths, 128, rows, tokens_per_batch=2048, compile_cost=3000, row_multiple=8)
    assert all(b.shape[0] % 8 == 0 for b in batches)
    assert sorted(np.concatenate([b.windows[b.windows >= 0] for b in batches])) == list(range(300))


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_the_program_splits_rows_without_collectives(pooling):
  """Rows stay on their device from input to pooled vector: no all-gather or all-reduce in the program."""
  from bert_jax.models.config import ModelConfig
  from bert_jax.models.model import EncoderModel
  model = EncoderModel(ModelConfig(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=24,
                                   max_position_embeddings=32))
  mesh = sharding.data_parallel_mesh()
  params = sharding.replicate(model.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))["params"], mesh)
  spec = jax.ShapeDtypeStruct((16, 32), jnp.int32, sharding=jax.sharding.NamedSharding(mesh, sharding.BATCH_SPEC))
  compiled = encoding.embed_batch.lower(params, spec, spec, spec, spec, model=model, pooling=pooling,
                                        normalize=True, num_segments=4).compile()
  hlo = compiled.as_text()
  assert not [op for op in ("all-gather", "all-reduce", "all-to-all", "collective-permute") if op in hlo]
  assert compiled.output_shardings.spec[0] in (("data", "fsdp"), "data")


def test_progress_counts_its_share(capsys):
  owner = np.array([0, 0, 1, 2, 3])  # text 0 has two windows
  progress = encoding.Progress(4, owner, enabled=True, share=np.array([0, 1, 3]))
  assert progress.total == 2  # texts 0 and 2
  progress.update(np.array([0, 1, 3]))
  progress.close()
  assert "embedded 2/2 texts on process 0 of 1 (its share)" in capsys.readouterr().err
