"""bert_jax.export: folders served by their own serve.py, without bert_jax, equal bert_jax in-process.

Three tiny random models with the bundled tokenizers, one per task and tokenizer kind:
  embed     BERT + WordPiece, a bert_jax folder with sentence-transformers modules (mean, Dense, Normalize,
            48 tokens)
  classify  RoBERTa + byte-level BPE, a Hugging Face *ForSequenceClassification folder, exported
            for cpu, cuda and tpu at once (lowering needs no hardware; the CPU branch runs here)
  tag       DeBERTa-v2 + SentencePiece, a bert_jax token-classification folder (its relative
            positions need a concrete length: exported at bucket lengths)
Each folder is served in one subprocess that cannot import bert_jax (`python -I`, a meta-path
blocker) at batch sizes 1, 3 and 7 and several lengths, and compared here with bert_jax at 1e-6.
"""

import ast
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
import tokenizers

from bert_jax import embed, models
from bert_jax.convert import sentence_transformers
from bert_jax.convert.pretrained import abstract_params, export_hf, from_pretrained, save_pretrained
from bert_jax.data.tokenizers import bundled_tokenizer, load_tokenizer
from bert_jax.export import ExportError, export_model
from bert_jax.export import __main__ as export_cli
from bert_jax.models.model import EncoderModel
from bert_jax.tasks.finetune.tagging import first_subtokens, word_starts

pytest.importorskip("flatbuffers", reason="jax.export serialization needs the flatbuffers package")

TOLERANCE = 1e-6
LONG = " ".join(["Elizabeth read the letter from Mr. Darcy again and again."] * 12)  # past every max_length
TEXTS = ["Hello world", "The quick brown fox jumps over the lazy dog.", LONG, "Noah built an ark of gopher wood.",
         "a", "And God said, Let there be light: and there was light.", "Mr. Bingley danced twice with Jane.",
         "It is a truth universally acknowledged, that a single man in possession of a good fortune must be in "
         "want of a wife.", "Short one.", "Rain fell for forty days and forty nights upon the earth.", "Why?"]
# Calls of batch size 1, 3 and 7, each padded to its own length.
BATCHES = [(0, 1), (1, 4), (4, 11)]
PAIRS = [["A premise about the weather.", "It rained."], ["Jane danced.", LONG]]
LABELS = {"classify": ("neg", "neu", "pos"), "tag": ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")}

SERVE_CHECK = r'''
import importlib.abc, importlib.util, io, json, sys
import numpy as np

class NoBertJax(importlib.abc.MetaPathFinder):
  """bert_jax is not there, and flatbuffers (which jax does not install) only as the folder's own copy."""
  def find_spec(self, name, path=None, target=None):
    if name == "bert_jax" or name.startswith("bert_jax."):
      raise ModuleNotFoundError(f"the serving check must not import {name}")
    if name == "flatbuffers":
      import importlib.machinery
      spec = importlib.machinery.PathFinder.find_spec(name, [p for p in sys.path if p.endswith("_vendor")])
      if spec is None:
        raise ModuleNotFoundError("flatbuffers is not installed in a jax + tokenizers environment")
      return spec
sys.meta_path.insert(0, NoBertJax())
try:
  import bert_jax
  raise SystemExit("bert_jax is importable")
except ModuleNotFoundError:
  pass

cases = json.load(open(sys.argv[1]))
out = {}
for case in cases:
  spec = importlib.util.spec_from_file_location("serve_" + case["name"], case["folder"] + "/serve.py")
  serve = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(serve)
  model = serve.load(case["folder"], length_multiple=case["length_multiple"])
  for i, (start, stop) in enumerate(case["batches"]):
    result = model([tuple(x) if isinstance(x, list) else x for x in case["inputs"][start:stop]])
    if isinstance(result, dict):
      for key in ("logits", "probabilities", "scores"):
        if key in result:
          out[f"{case['name']}/{i}/{key}"] = np.concatenate([np.asarray(r).reshape(-1) for r in result[key]])
      for key in ("labels", "tags", "tokens", "words"):
        if key in result:
          out[f"{case['name']}/{i}/{key}"] = np.array(json.dumps(result[key]))
    else:
      out[f"{case['name']}/{i}/embeddings"] = result
  if case["name"] == "classify":  # the command once: a line with a tab is a pair
    stdin, stdout = sys.stdin, sys.stdout
    sys.stdin, sys.stdout = io.StringIO("first line\tits pair\nsecond line\n"), io.StringIO()
    serve.main([case["folder"]])
    sys.stdin, printed = stdin, sys.stdout.getvalue()
    sys.stdout = stdout
    out["classify/cli"] = np.array(printed)
assert not any(m == "bert_jax" or m.startswith("bert_jax.") for m in sys.modules), "bert_jax was imported"
assert "_vendor" in sys.modules["flatbuffers"].__file__, sys.modules["flatbuffers"].__file__
np.savez(sys.argv[2], **out)
'''


def _random_model(family: str, tokenizer_kind: str, head: str | None, **overrides):
  tokenizer = load_tokenizer(bundled_tokenizer(tokenizer_kind))
  cfg = models.build(family, "tiny", vocab_size=tokenizer.vocab_size, hidden_size=32, num_layers=2, num_heads=2,
                     intermediate_size=37, max_position_embeddings=80, **overrides)
  model = EncoderModel(cfg, head=head)
  # Random numpy values in the model's shapes: initializing through jax would compile for seconds.
  rng = np.random.default_rng(len(family))
  def fill(path, leaf):
    scale = str(getattr(path[-1], "key", "")) == "scale"
    noise = rng.standard_normal(leaf.shape).astype(np.float32)
    return 1 + 0.1 * noise if scale else 0.2 * noise
  return model, jax.tree_util.tree_map_with_path(fill, abstract_params(model))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """name -> (model folder, export folder, manifest) for embed, classify and tag."""
  root = tmp_path_factory.mktemp("export")
  out = {}
  model, params = _random_model("bert", "wordpiece", None)
  source = str(root / "embed_model")
  save_pretrained(source, model, params, tokenizer_from=bundled_tokenizer("wordpiece"))
  dense = (0.3 * np.random.default_rng(5).standard_normal((24, 32)).astype(np.float32), np.full(24, 0.1, np.float32),
           "Tanh")
  sentence_transformers.write_modules(source, "mean", normalize=True, max_length=48, hidden_size=32, dense=[dense])
  # Through the command (in-process): flags, defaults from the folder, the check before replacing --out.
  export_cli.main([f"--model={source}", f"--out={root / 'embed'}"])
  out["embed"] = (source, str(root / "embed"), json.load(open(root / "embed" / "manifest.json")))

  model, params = _random_model("roberta", "bpe", "classification", num_labels=3, label_names=LABELS["classify"])
  source = str(root / "classify_model")
  export_hf(source, model, params, tokenizer_from=bundled_tokenizer("bpe"))
  manifest = export_model(source, str(root / "classify"), max_length=40, platforms=("cpu", "cuda", "tpu"))
  out["classify"] = (source, str(root / "classify"), manifest)

  model, params = _random_model("deberta", "spm", "token_classification", num_labels=5, label_names=LABELS["tag"])
  source = str(root / "tag_model")
  save_pretrained(source, model, params, tokenizer_from=bundled_tokenizer("spm"))
  manifest = export_model(source, str(root / "tag"), max_length=40, check=False)
  out["tag"] = (source, str(root / "tag"), manifest)
  return out


@pytest.fixture(scope="module")
def served(folders, tmp_path_factory):
  """What each folder's serve.py gives, run in a subprocess without bert_jax, in a folder outside the repo."""
  work = tmp_path_factory.mktemp("serving")
  cases = [
      {"name": "embed", "folder": folders["embed"][1], "inputs": TEXTS, "batches": BATCHES, "length_multiple": 1},
      {"name": "classify", "folder": folders["classify"][1], "inputs": TEXTS[:4] + PAIRS + TEXTS[6:],
       "batches": BATCHES, "length_multiple": 16},
      {"name": "tag", "folder": folders["tag"][1], "inputs": TEXTS[:1] + [["New", "York", "is", "big"]] + TEXTS[2:],
       "batches": BATCHES, "length_multiple": 1},
  ]
  (work / "cases.json").write_text(json.dumps(cases))
  (work / "serve_check.py").write_text(SERVE_CHECK)
  result = subprocess.run([sys.executable, "-I", "serve_check.py", "cases.json", "served.npz"], cwd=work,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  return {k: v for k, v in np.load(work / "served.npz").items()}, cases


def _bert_jax_logits(model, params, encodings, pad_id):
  """bert_jax's head logits of encodings padded to their longest: [B, C] or [B, L, C]."""
  length = max(len(e.ids) for e in encodings)
  ids = np.full((len(encodings), length), pad_id, np.int32)
  mask, types = np.zeros_like(ids), np.zeros_like(ids)
  for row, e in enumerate(encodings):
    ids[row, :len(e)], mask[row, :len(e)], types[row, :len(e)] = e.ids, 1, e.type_ids
  apply = jax.jit(lambda p, i, m, t: model.apply({"params": p}, i, attention_mask=m, token_type_ids=t).logits)
  return np.asarray(apply(params, ids, mask, types))


def test_embeddings_equal_bert_jax_embed_at_every_batch_size(folders, served):
  outputs, _ = served
  source, _, manifest = folders["embed"]
  assert manifest["embed"] == {"pooling": "mean", "normalize": True, "long_inputs": "truncate",
                               "dense": [{"in_features": 32, "out_features": 24, "activation": "Tanh"}]}
  assert manifest["max_length"] == 48 and manifest["functions"] == [{"file": "model.jaxexport", "length": None}]
  reference = embed.embed_texts(source, TEXTS)  # the folder's modules: mean, Dense (tanh), Normalize; 48 tokens
  for i, (start, stop) in enumerate(BATCHES):
    ours = outputs[f"embed/{i}/embeddings"]
    assert ours.shape == (stop - start, 24) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference[start:stop], atol=TOLERANCE, rtol=0)


def test_classifier_logits_probabilities_and_labels_equal_bert_jax(folders, served):
  outputs, cases = served
  source, folder, manifest = folders["classify"]
  assert manifest["platforms"] == ["cpu", "cuda", "tpu"] and manifest["labels"] == list(LABELS["classify"])
  assert manifest["problem_type"] == "single_label_classification"
  model, params = from_pretrained(source, head="classification")
  tokenizer = load_tokenizer(source)
  inputs = cases[1]["inputs"]
  for i, (start, stop) in enumerate(BATCHES):
    # Padded to the batch's longest here, to a multiple of 16 there: padding must not matter.
    encodings = [tokenizer.encode(*(x if isinstance(x, list) else [x]), max_length=40) for x in inputs[start:stop]]
    reference = _bert_jax_logits(model, params, encodings, tokenizer.pad_id)
    np.testing.assert_allclose(outputs[f"classify/{i}/logits"], reference.reshape(-1), atol=TOLERANCE, rtol=0)
    probabilities = np.exp(reference) / np.exp(reference).sum(-1, keepdims=True)
    np.testing.assert_allclose(outputs[f"classify/{i}/probabilities"], probabilities.reshape(-1), atol=TOLERANCE)
    assert json.loads(str(outputs[f"classify/{i}/labels"])) == [LABELS["classify"][c] for c in reference.argmax(-1)]
  rows = [json.loads(line) for line in str(outputs["classify/cli"]).splitlines()]  # the command: one per line
  encodings = [tokenizer.encode("first line", "its pair", max_length=40),
               tokenizer.encode("second line", max_length=40)]
  np.testing.assert_allclose([r["logits"] for r in rows], _bert_jax_logits(model, params, encodings, tokenizer.pad_id),
                             atol=TOLERANCE, rtol=0)
  assert rows[0]["label"] in LABELS["classify"] and set(rows[0]["probabilities"]) == set(LABELS["classify"])


def test_tagger_token_logits_and_word_tags_equal_bert_jax(folders, served):
  outputs, cases = served
  source, folder, manifest = folders["tag"]
  # DeBERTa's relative positions are numpy over the concrete length: one function per bucket length.
  assert [f["length"] for f in manifest["functions"]] == [16, 32, 40] and manifest["fixed_length_reason"]
  model, params = from_pretrained(source, head="token_classification")
  tokenizer = load_tokenizer(source)
  inputs = cases[2]["inputs"]
  for i, (start, stop) in enumerate(BATCHES):
    logits, tags, tokens = [], [], []
    words = [word_starts(item if isinstance(item, list) else item.split()) for item in inputs[start:stop]]
    encodings = [tokenizer.encode(text, max_length=40) for text, _ in words]
    batch_logits = _bert_jax_logits(model, params, encodings, tokenizer.pad_id)
    for (text, starts), encoding, token_logits in zip(words, encodings, batch_logits):
      token_logits = token_logits[:len(encoding)]
      first = first_subtokens(encoding.offsets, encoding.special_tokens_mask, starts)
      word_tags = [None] * len(starts)
      for t in np.flatnonzero(first >= 0):
        word_tags[first[t]] = LABELS["tag"][int(token_logits[t].argmax())]
      logits.append(token_logits.reshape(-1))
      tags.append(word_tags)
      tokens.append(encoding.tokens)
    np.testing.assert_allclose(outputs[f"tag/{i}/logits"], np.concatenate(logits), atol=TOLERANCE, rtol=0)
    assert json.loads(str(outputs[f"tag/{i}/tags"])) == tags
    assert json.loads(str(outputs[f"tag/{i}/tokens"])) == tokens  # the saved SentencePiece tokenizer.json
  long_tags = json.loads(str(outputs["tag/1/tags"]))[1]  # LONG, truncated: its last words are not tagged
  assert long_tags[0] is not None and long_tags[-1] is None
  assert all(tag is not None for tag in json.loads(str(outputs["tag/1/tags"]))[0])  # New York: every word


@pytest.mark.parametrize("name", ["embed", "classify", "tag"])
def test_saved_tokenizer_json_tokenizes_as_bert_jax(folders, name):
  """WordPiece (from a tokenizer.json), byte-level BPE (vocab.json + merges.txt), SentencePiece (spm.model)."""
  source, folder, _ = folders[name]
  ours = tokenizers.Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
  theirs = load_tokenizer(source)
  for text, pair in [(t, None) for t in TEXTS] + [tuple(p) for p in PAIRS]:
    assert ours.encode(text, pair).ids == theirs.encode(text, pair).ids


def test_serve_imports_only_jax_numpy_tokenizers_and_the_standard_library(folders):
  tree = ast.parse(pathlib.Path(folders["embed"][1], "serve.py").read_text())
  imported = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      imported |= {alias.name.split(".")[0] for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
      assert node.level == 0, "no relative imports: the file runs on its own"
      imported.add(node.module.split(".")[0])
  # flatbuffers: imported only to see whether the folder's copy is needed (jax.export's deserializer needs it).
  assert imported - {"__future__"} <= {"jax", "numpy", "tokenizers", "flatbuffers"} | set(sys.stdlib_module_names), \
      imported


def _serve_module(folder):
  spec = importlib.util.spec_from_file_location("serve_in_test", os.path.join(folder, "serve.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_a_manifest_of_another_format_version_is_refused_naming_both(folders, tmp_path):
  folder = tmp_path / "future"
  shutil.copytree(folders["embed"][1], folder)
  manifest = json.loads((folder / "manifest.json").read_text())
  manifest["format_version"] = 2
  (folder / "manifest.json").write_text(json.dumps(manifest))
  serve = _serve_module(folders["embed"][1])
  with pytest.raises(serve.ServingError, match=rf"{folder}: manifest format_version 2, but this loader reads "
                                               r"format_version 1"):
    serve.load(str(folder))
  with pytest.raises(serve.ServingError, match="no manifest.json"):
    serve.load(str(tmp_path))


def test_inputs_longer_than_max_length_raise_unless_truncated(folders):
  serve = _serve_module(folders["classify"][1])
  model = serve.load(folders["classify"][1])
  with pytest.raises(serve.ServingError, match="length 41 exceed max_length=40"):
    model.run(np.ones((2, 41), np.int32))
  with pytest.raises(serve.ServingError, match="more than max_length=40"):
    model([LONG], truncate=False)
  assert model([LONG])["logits"].shape == (1, 3)  # cut to 40 tokens, as bert_jax.embed cuts
  with pytest.raises(serve.ServingError, match=r"input_ids must lie in \[0, "):
    model.run(np.full((1, 4), 10**6, np.int32))


def test_a_folder_for_other_platforms_is_refused(folders, tmp_path):
  source = folders["embed"][0]
  export_model(source, str(tmp_path / "tpu"), platforms=("tpu",), check=False)
  serve = _serve_module(str(tmp_path / "tpu"))
  with pytest.raises(serve.ServingError, match=r"exported for platforms \['tpu'\].*--platforms=tpu,cpu"):
    serve.load(str(tmp_path / "tpu"))


def test_bad_export_input_names_the_problem(folders, tmp_path):
  empty = tmp_path / "not_a_model"
  empty.mkdir()
  with pytest.raises(SystemExit, match=rf"bert_jax.export: error: --model {empty}: neither bert_jax.json"):
    export_cli.main([f"--model={empty}", f"--out={tmp_path / 'out'}"])
  with pytest.raises(SystemExit, match="--model .*missing: not a folder"):
    export_cli.main([f"--model={tmp_path / 'missing'}", f"--out={tmp_path / 'out'}"])
  (tmp_path / "precious").mkdir()
  (tmp_path / "precious" / "notes.txt").write_text("keep me")
  with pytest.raises(ExportError, match="not an export folder"):
    export_model(folders["embed"][0], str(tmp_path / "precious"))
  assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
  with pytest.raises(ExportError, match="longer than the model's position table"):
    export_model(folders["embed"][0], str(tmp_path / "out"), max_length=1000)
  with pytest.raises(ExportError, match="platforms"):
    export_model(folders["embed"][0], str(tmp_path / "out"), platforms=("gpu",))
  assert not (tmp_path / "out").exists()


def test_real_minilm_exports_to_sentence_transformers_embeddings(minilm, tmp_path):
  """all-MiniLM-L6-v2 (a sentence-transformers folder): the served vectors are bert_jax's and the reference's."""
  golden = dict(np.load(pathlib.Path(__file__).parent / "testdata" / "minilm" / "golden.npz"))
  texts = [str(s) for s in golden["sentences"][:8]]
  manifest = export_model(minilm, str(tmp_path / "minilm"), check=False)
  assert manifest["max_length"] == 256 and manifest["embed"]["normalize"]
  served = _serve_module(str(tmp_path / "minilm")).load(str(tmp_path / "minilm"))(texts)
  np.testing.assert_allclose(served, embed.embed_texts(minilm, texts), atol=TOLERANCE, rtol=0)
  np.testing.assert_allclose(served, golden["embeddings"][:8], atol=2e-5)


def test_bfloat16_export_stores_half_the_bytes_and_tracks_bert_jax_bfloat16(folders, tmp_path):
  source, float32_folder, _ = folders["embed"]
  manifest = export_model(source, str(tmp_path / "bf16"), dtype="bfloat16", param_dtype="bfloat16")
  assert manifest["dtype"] == manifest["param_dtype"] == "bfloat16" and manifest["check_difference"] < 0.1
  serve = _serve_module(str(tmp_path / "bf16"))
  assert {a.dtype.name for a in serve.read_safetensors(str(tmp_path / "bf16" / "params.safetensors")).values()} == {
      "bfloat16"}
  size = lambda folder: os.path.getsize(os.path.join(folder, "params.safetensors"))
  assert size(str(tmp_path / "bf16")) < 0.51 * size(float32_folder)
  ours = serve.load(str(tmp_path / "bf16"))(TEXTS[:3])
  np.testing.assert_allclose(ours, embed.embed_texts(source, TEXTS[:3], dtype="bfloat16"), atol=3e-2)


def test_classification_readings_per_problem_type(folders):
  serve = _serve_module(folders["classify"][1])
  logits = np.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]], np.float32)
  model = lambda problem: types.SimpleNamespace(manifest={"problem_type": problem}, labels=["a", "b", "c"])
  single = serve._classes(logits, model("single_label_classification"))
  assert single["labels"] == ["a", "c"] and np.allclose(single["probabilities"].sum(-1), 1)
  multi = serve._classes(logits, model("multi_label_classification"))
  assert multi["labels"] == [["a", "c"], ["c"]]
  assert list(serve._classes(logits[:, :1], model("regression"))["scores"]) == [2.0, -3.0]
