"""bert_jax.embed: sentence-transformers parity, chunking, packing, order, bad input."""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import embed
from bert_jax.convert import sentence_transformers
from bert_jax.convert.pretrained import export_hf, from_pretrained
from bert_jax.data import batching
from bert_jax.embed import encoding, planning
from bert_jax.embed.windows import Windows
from bert_jax.models.config import ModelConfig
from bert_jax.models.model import EncoderModel

TESTDATA = pathlib.Path(__file__).parent / "testdata"
REPO = pathlib.Path(__file__).parent.parent


@pytest.fixture(scope="module")
def minilm_loaded(minilm):
  return embed.load(minilm)


@pytest.fixture(scope="module")
def golden():
  return dict(np.load(TESTDATA / "minilm" / "golden.npz"))


def _cosine(a, b):
  return np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _assert_matches(ours, reference):
  assert ours.shape == reference.shape and ours.dtype == np.float32
  assert _cosine(ours, reference).min() >= 0.9999
  np.testing.assert_allclose(ours, reference, atol=2e-5)


def _write_lines(path, lines):
  path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  return path


def _tiny_model_dir(root, minilm, vocab_size=30522, name="tiny"):
  """A random 2-layer BERT in HF layout with MiniLM's tokenizer; no sentence-transformers files."""
  cfg = ModelConfig(vocab_size=vocab_size, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=37,
                    max_position_embeddings=64)
  model = EncoderModel(cfg)
  params = model.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))["params"]
  folder = str(root / name)
  export_hf(folder, model, jax.tree.map(np.asarray, params), tokenizer_from=minilm)
  return folder


# -- sentence-transformers parity ---------------------------------------------------


def test_cli_matches_sentence_transformers(minilm, golden, tmp_path):
  """The whole command, default settings from the folder: mean pooling, Normalize, 256 tokens."""
  texts = _write_lines(tmp_path / "texts.txt", golden["sentences"])  # row 64 is the empty string
  out = tmp_path / "out.npy"
  result = subprocess.run(
      [sys.executable, "-m", "bert_jax.embed", f"--model={minilm}", f"--input={texts}", f"--output={out}",
       "--allow_empty_lines", "--no-compilation_cache"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  _assert_matches(np.load(out), golden["embeddings"])
  assert sorted(os.listdir(tmp_path)) == ["out.npy", "texts.txt"]  # no temporary file left behind


def test_folder_defaults(minilm):
  assert sentence_transformers.folder_defaults(minilm, 512) == {"pooling": "mean", "normalize": True, "max_length": 256}
  assert sentence_transformers.folder_defaults(None, -1) == {"pooling": "mean", "normalize": False, "max_length": 512}


def test_mean_and_cls_match_golden(minilm_loaded, golden):
  texts = list(golden["sentences"])
  _assert_matches(embed.embed_texts(minilm_loaded, texts, max_length=256), golden["mean_embeddings"])
  _assert_matches(embed.embed_texts(minilm_loaded, texts, pooling="cls", max_length=256), golden["cls_embeddings"])


def test_order_is_kept_with_mixed_lengths(minilm_loaded, golden):
  order = np.random.default_rng(0).permutation(len(golden["sentences"]))
  texts = [str(golden["sentences"][i]) for i in order]
  ours = embed.embed_texts(minilm_loaded, texts, max_length=256, normalize=True, batch_size=3)
  _assert_matches(ours, golden["embeddings"][order])


@pytest.mark.parametrize("name", ["mpnet_st", "modernbert_st", "xlm_roberta_st"])
def test_sentence_transformers_folders_of_the_newer_families_match(name):
  """Random MPNet (mean, Normalize), ModernBERT (CLS; windows shorter than the long sentence) and XLM-R
  (Unigram tokenizer.json; mean, Normalize) models saved by sentence-transformers
  (tests/parity/make_st_goldens.py): the reference tokenizer's ids, then its embeddings."""
  from bert_jax.data.tokenizers import load_tokenizer
  folder = str(TESTDATA / name)
  golden = dict(np.load(TESTDATA / name / "golden.npz"))
  texts = [str(s) for s in golden["sentences"]]
  tokenizer = load_tokenizer(folder)
  for text, ids, mask in zip(texts, golden["input_ids"], golden["attention_mask"]):
    assert list(tokenizer.encode(text, max_length=96).ids) == ids[mask.astype(bool)].tolist(), text
  # sentence-transformers 6 keeps max_seq_length (96) as tokenizer_config.json's model_max_length.
  assert sentence_transformers.folder_defaults(folder, 512)["max_length"] == 96
  _assert_matches(embed.embed_texts(folder, texts), golden["embeddings"])


# -- packing ------------------------------------------------------------------------


def test_plan_covers_every_window_once():
  lengths = np.random.default_rng(1).integers(2, 300, size=500)
  for pack in (True, False):
    batches = planning.plan_batches(lengths, 256, None, tokens_per_batch=2048, compile_cost=3000, pack=pack)
    windows = np.concatenate([b.windows[b.windows >= 0] for b in batches])
    assert sorted(windows) == list(range(500))
    for b in batches:
      assert b.shape[1] <= 256 and b.windows.shape[0] == b.shape[0]
      assert all(np.minimum(lengths[row[row >= 0]], 256).sum() <= b.shape[1] for row in b.windows)
    # Packed rows share a few lengths; unpacked rows (DeBERTa-v2 with its conv) get one shape per bucket.
    buckets = {batching.bucket_length(int(min(n, 256)), 256, batching.FINE) for n in lengths}
    assert len({b.shape for b in batches}) <= (12 if pack else len(buckets))


@pytest.mark.parametrize("case", ["roberta_base", "deberta_v3", "deberta_v1", "albert_base"])
def test_packed_rows_equal_rows_of_their_own(case):
  """Texts sharing a row (segments, restarted positions) get the vectors they get alone."""
  model, params = from_pretrained(str(TESTDATA / "hf" / case))
  rng = np.random.default_rng(2)
  lengths = rng.integers(2, 20, size=24)
  ids = [np.r_[3, rng.integers(5, model.config.vocab_size, n - 2), 4].astype(np.int32) for n in lengths]
  windows = Windows(ids, [np.zeros_like(i) for i in ids], np.arange(len(ids)))
  off = encoding.Progress(len(ids), windows.owner, False)
  results = {}
  for pack in (True, False):
    batches = planning.plan_batches(windows.lengths, 32, None, tokens_per_batch=256, compile_cost=0, pack=pack)
    assert any((b.windows >= 0).sum(1).max() > 1 for b in batches) == pack
    results[pack] = encoding.run_batches(model, params, windows, batches, model.config.pad_token_id, "mean", False, off)
  np.testing.assert_allclose(results[True], results[False], atol=1e-5)


# -- long inputs --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(minilm, tmp_path_factory):
  folder = _tiny_model_dir(tmp_path_factory.mktemp("models"), minilm)
  return folder, embed.load(folder)


def _windows_by_hand(tokenizer, text, max_length):
  """[CLS] + a slice of the text tokens + [SEP]; slices of max_length - 2 overlapping by a quarter."""
  ids = tokenizer.encode(text).ids
  body, room = ids[1:-1], max_length - 2
  stride, start, windows = room - room // 4, 0, []
  while True:
    windows.append([ids[0]] + body[start:start + room] + [ids[-1]])
    if start + room >= len(body):
      return windows
    start += stride


def _chunked_by_hand(loaded, text, max_length, pooling):
  """The slow reference: each window alone through the model, then pooled across windows."""
  model, params, tokenizer = loaded
  hidden = [np.asarray(model.apply({"params": params}, np.array([w], np.int32)).last_hidden_state[0])
            for w in _windows_by_hand(tokenizer, text, max_length)]
  if pooling == "mean":
    return np.concatenate(hidden).mean(0)
  if pooling == "max":
    return np.concatenate(hidden).max(0)
  weights = np.array([len(h) for h in hidden], np.float64)
  return np.sum([w * h[0] for w, h in zip(weights, hidden)], 0) / weights.sum()


LONG = ("The film is a long, winding meditation on memory and loss, with a cast that never quite finds "
        "its footing and a score that insists on every feeling. ") * 3


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_chunk_equals_windows_by_hand(tiny, pooling):
  _, loaded = tiny
  assert len(loaded[2].encode(LONG).ids) > 3 * 16  # several windows, the last one short
  ours = embed.embed_texts(loaded, [LONG, "short one"], pooling=pooling, max_length=16, long_inputs="chunk")
  np.testing.assert_allclose(ours[0], _chunked_by_hand(loaded, LONG, 16, pooling), atol=1e-5)
  alone = embed.embed_texts(loaded, ["short one"], pooling=pooling, max_length=16)
  np.testing.assert_allclose(ours[1], alone[0], atol=1e-6)
  normalized = embed.embed_texts(loaded, [LONG], pooling=pooling, max_length=16, long_inputs="chunk",
                                 normalize=True)
  np.testing.assert_allclose(normalized[0], ours[0] / np.linalg.norm(ours[0]), atol=1e-6)


def test_chunk_of_a_text_that_fits_is_truncate(tiny):
  _, loaded = tiny
  tokenizer = loaded[2]
  words = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen".split()
  exact = " ".join(words[:14])
  assert len(tokenizer.encode(exact).ids) == 16
  for texts in ([exact], [exact, LONG]):
    chunked = embed.embed_texts(loaded, texts, max_length=16, long_inputs="chunk", normalize=True)
    truncated = embed.embed_texts(loaded, texts, max_length=16, normalize=True)
    np.testing.assert_allclose(chunked[0], truncated[0], atol=1e-6)
  truncated_by_hand = _windows_by_hand(tokenizer, LONG, 16)[0]
  model, params, _ = loaded
  hidden = model.apply({"params": params}, np.array([truncated_by_hand], np.int32)).last_hidden_state[0]
  np.testing.assert_allclose(truncated[1], np.mean(hidden, 0) / np.linalg.norm(np.mean(hidden, 0)), atol=1e-6)


def test_progress_line(capsys):
  progress = encoding.Progress(3, np.array([0, 1, 1, 2]), enabled=True)
  progress.update(np.array([0, 1, 2, 3]))
  progress.close()
  assert "embedded 3/3 texts" in capsys.readouterr().err


# -- bad input ----------------------------------------------------------------------


OLD = b"previous output, must survive"


def _fails(tmp_path, model, input_path, *flags, expect=()):
  out = tmp_path / "out.npy"
  out.write_bytes(OLD)
  with pytest.raises(SystemExit) as failure:
    embed.main([f"--model={model}", f"--input={input_path}", f"--output={out}", "--no-compilation_cache", *flags])
  message = str(failure.value.code)
  assert message.startswith("bert_jax.embed: error:")
  for fragment in expect:
    assert fragment in message, message
  assert out.read_bytes() == OLD
  assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
  return message


def test_missing_and_empty_input(minilm, tmp_path):
  _fails(tmp_path, minilm, tmp_path / "nope.txt", expect=("nope.txt", "cannot read input"))
  (tmp_path / "empty.txt").write_bytes(b"")
  _fails(tmp_path, minilm, tmp_path / "empty.txt", expect=("empty.txt", "is empty"))


def test_bad_utf8_names_the_line(minilm, tmp_path):
  (tmp_path / "bad.txt").write_bytes(b"fine\nalso fine\nbroken \xff here\n")
  _fails(tmp_path, minilm, tmp_path / "bad.txt", expect=("bad.txt:3:", "not valid UTF-8"))


def test_empty_line_names_the_line(minilm, golden, tmp_path):
  texts = tmp_path / "texts.txt"
  texts.write_text("first\n\nthird\n", encoding="utf-8")
  _fails(tmp_path, minilm, texts, expect=("texts.txt:2:", "empty line", "--allow_empty_lines"))
  texts.write_text("first\n   \nthird\n", encoding="utf-8")
  _fails(tmp_path, minilm, texts, expect=("texts.txt:2:",))
  texts.write_text("Wow\n\n", encoding="utf-8")
  out = tmp_path / "out.npy"
  embed.main([f"--model={minilm}", f"--input={texts}", f"--output={out}", "--allow_empty_lines",
              "--no-compilation_cache"])
  _assert_matches(np.load(out), golden["embeddings"][[65, 64]])  # "Wow", ""


def test_missing_tokenizer(minilm, tmp_path):
  folder = tmp_path / "no_tokenizer"
  folder.mkdir()
  for name in ("config.json", "model.safetensors"):
    os.symlink(os.path.join(minilm, name), folder / name)
  texts = _write_lines(tmp_path / "texts.txt", ["hello"])
  _fails(tmp_path, folder, texts, expect=("no tokenizer", str(folder)))


def test_tokenizer_that_does_not_fit(minilm, tmp_path):
  folder = _tiny_model_dir(tmp_path, minilm, vocab_size=1000, name="small_vocab")
  texts = _write_lines(tmp_path / "texts.txt", ["hello"])
  _fails(tmp_path, folder, texts, expect=("does not fit", "1000"))


def test_bad_settings(minilm, tmp_path):
  texts = _write_lines(tmp_path / "texts.txt", ["hello"])
  _fails(tmp_path, minilm, texts, "--max_length=1000", expect=("max_length=1000", "position table (512"))
  _fails(tmp_path, minilm, texts, "--batch_size=0", expect=("batch_size=0",))
  missing_dir = tmp_path / "nowhere" / "out.npy"
  with pytest.raises(SystemExit, match="nowhere"):
    embed.main([f"--model={minilm}", f"--input={texts}", f"--output={missing_dir}"])


def test_unsupported_sentence_transformers_module(tmp_path):
  (tmp_path / "modules.json").write_text(
      '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},'
      ' {"idx": 1, "name": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]')
  with pytest.raises(sentence_transformers.SentenceTransformersError, match="Dense"):
    sentence_transformers.folder_defaults(str(tmp_path), 512)
