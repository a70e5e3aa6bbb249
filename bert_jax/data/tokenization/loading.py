"""Find and build the tokenizer of a model folder; check it fits the model.

Files are tried in this order (the first present wins):
  tokenizer.json              any family, as saved by the Rust library
  vocab.txt                   WordPiece (BERT)
  vocab.json + merges.txt     byte-level BPE (RoBERTa; DeBERTa-v1 by config)
  spm.model / spiece.model / the one *.model    SentencePiece (DeBERTa-v2/v3, ALBERT, XLM-RoBERTa)

Settings come from tokenizer_config.json (do_lower_case, strip_accents,
tokenize_chinese_chars, keep_accents, add_prefix_space, *_token, ...),
special_tokens_map.json and, to tell families apart, config.json `model_type`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import tokenizers

from bert_jax.data.tokenization import pipelines
from bert_jax.data.tokenization.pipelines import SpecialToken, SpecialTokens
from bert_jax.data.tokenization.tokenizer import Kind, Tokenizer

VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json + merges.txt", "spm.model", "spiece.model", "*.model")
def check_fits(tokenizer: Tokenizer, vocab_size: int) -> None:
  """Raises ValueError if the tokenizer can emit an id the model has no embedding for."""
  if tokenizer.max_id >= vocab_size:
    raise ValueError(
        f"tokenizer from {tokenizer.source} does not fit the model: it emits ids up to {tokenizer.max_id} "
        f"({tokenizer.vocab_size} tokens) but the model's vocab_size is {vocab_size}"
    )


def _read_json(path: Path) -> dict[str, Any]:
  if not path.is_file():
    return {}
  try:
    with path.open(encoding="utf-8") as f:
      value = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from e
  if not isinstance(value, dict):
    raise ValueError(f"{path} must hold a JSON object, got {type(value).__name__}")
  return value


class _FolderConfig:
  """The settings files of a folder, merged the way the reference reads them."""

  def __init__(self, folder: Path):
    self.folder = folder
    self.tokenizer = _read_json(folder / "tokenizer_config.json")
    self.special_map = _read_json(folder / "special_tokens_map.json")
    self.model_type = str(_read_json(folder / "config.json").get("model_type", ""))
    self.tokenizer_class = str(self.tokenizer.get("tokenizer_class") or "").removesuffix("Fast")

  def get(self, key: str, default: Any) -> Any:
    value = self.tokenizer.get(key)
    return default if value is None else value

  def specials(self, defaults: SpecialTokens) -> SpecialTokens:
    specials = defaults.override(self.tokenizer).override(self.special_map)
    # tokenizer_config.json's added_tokens_decoder carries lstrip/rstrip flags (RoBERTa's <mask>).
    flags = {
        str(t.get("content")): (bool(t.get("lstrip", False)), bool(t.get("rstrip", False)))
        for t in (self.tokenizer.get("added_tokens_decoder") or {}).values()
        if isinstance(t, dict)
    }
    changes = {}
    for role in pipelines.SPECIAL_ROLES:
      token = getattr(specials, role)
      if token is not None and token.content in flags:
        changes[role] = SpecialToken(token.content, *flags[token.content])
    return dataclasses.replace(specials, **changes)

  def add_extra_specials(self, backend: tokenizers.Tokenizer) -> None:
    """Adds `additional_special_tokens` / `extra_special_tokens` after the named ones, as the reference does."""
    existing = {str(t) for t in backend.get_added_tokens_decoder().values()}
    for key in ("additional_special_tokens", "extra_special_tokens"):
      for value in self.tokenizer.get(key) or []:
        content = value.get("content") if isinstance(value, dict) else value
        if isinstance(content, str) and content not in existing:
          existing.add(content)
          backend.add_special_tokens([SpecialToken(content).added_token()])


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
  """Builds the tokenizer of a model folder (see the module docstring for the files read)."""
  folder = Path(path)
  if not folder.is_dir():
    raise FileNotFoundError(f"tokenizer folder {folder} does not exist or is not a folder")
  config = _FolderConfig(folder)
  if (folder / "tokenizer.json").is_file():
    return _from_tokenizer_json(folder / "tokenizer.json", config)
  if (folder / "vocab.txt").is_file():
    return _from_vocab_txt(folder / "vocab.txt", config)
  if (folder / "vocab.json").is_file() or (folder / "merges.txt").is_file():
    return _from_vocab_json(folder, config)
  model_file = _find_spm_model(folder)
  if model_file is not None:
    return _from_spm_model(model_file, config)
  raise FileNotFoundError(f"no tokenizer in {folder}: looked for {', '.join(VOCAB_FILES)}")


def _find_spm_model(folder: Path) -> Path | None:
  for name in ("spm.model", "spiece.model"):
    if (folder / name).is_file():
      return folder / name
  candidates = sorted(folder.glob("*.model"))
  if len(candidates) > 1:
    raise ValueError(f"{folder} holds several SentencePiece models {[c.name for c in candidates]}; keep one")
  return candidates[0] if candidates else None


def _from_vocab_txt(path: Path, config: _FolderConfig) -> Tokenizer:
  with path.open(encoding="utf-8") as f:
    # As the reference reads it: one token per line, the line number is the id.
    vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
  if not vocab:
    raise ValueError(f"{path} is empty")
  if "do_lower_case" not in config.tokenizer:
    cased = [t for t in vocab if t != t.lower() and not (t.startswith("[") and t.endswith("]"))]
    # Lowercasing by default would make every cased entry unreachable.
    if len(cased) > 0.005 * len(vocab):
      raise ValueError(
          f"{path} looks cased (e.g. {cased[:3]}) but {config.folder} has no tokenizer_config.json "
          f"saying do_lower_case; add one with \"do_lower_case\": false (or true)"
      )
  mpnet = config.tokenizer_class == "MPNetTokenizer" or config.model_type == "mpnet"
  specials = config.specials(pipelines.MPNET_SPECIALS if mpnet else pipelines.BERT_SPECIALS)
  _require_specials(path, vocab, specials)
  backend = pipelines.wordpiece(
      vocab,
      specials,
      lowercase=bool(config.get("do_lower_case", True)),
      strip_accents=config.tokenizer.get("strip_accents"),
      tokenize_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
      double_sep=mpnet,
  )
  config.add_extra_specials(backend)
  return Tokenizer(backend, kind="wordpiece", specials=specials, source=str(config.folder))


def _require_specials(path: Path, vocab: Mapping[str, int], specials: pipelines.SpecialTokens) -> None:
  """The special tokens that frame and pad every sequence must be entries of a vocabulary file: appended
  ids would index rows that a pretrained model's embedding table does not have. The mask token alone may
  come after the vocabulary (as RoBERTa's tokenizers append `<mask>` to a vocab.json without it)."""
  missing = [f"{role} {specials.content(role)!r}" for role in pipelines.SPECIAL_ROLES
             if role != "mask" and specials.content(role) is not None and specials.content(role) not in vocab]
  if missing:
    raise ValueError(f"{path}: the special tokens {', '.join(dict.fromkeys(missing))} are not in the vocabulary; "
                     "expected each as an entry of the file (or name the ones it uses in special_tokens_map.json "
                     "/ tokenizer_config.json)")


def _from_vocab_json(folder: Path, config: _FolderConfig) -> Tokenizer:
  for name in ("vocab.json", "merges.txt"):
    if not (folder / name).is_file():
      raise FileNotFoundError(f"byte-level BPE tokenizer in {folder} needs vocab.json and merges.txt; {name} is missing")
  vocab, merges = tokenizers.models.BPE.read_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
  deberta_v1 = config.tokenizer_class == "DebertaTokenizer" or config.model_type == "deberta"
  specials = config.specials(pipelines.DEBERTA_V1_SPECIALS if deberta_v1 else pipelines.ROBERTA_SPECIALS)
  _require_specials(folder / "vocab.json", vocab, specials)
  backend = pipelines.byte_level_bpe(
      vocab,
      merges,
      specials,
      roberta_template=not deberta_v1,
      add_prefix_space=bool(config.get("add_prefix_space", False)),
      trim_offsets=bool(config.get("trim_offsets", True)),
  )
  config.add_extra_specials(backend)
  return Tokenizer(backend, kind="bpe", specials=specials, source=str(folder))


SPM_CLASSES = {"AlbertTokenizer": "albert", "DebertaV2Tokenizer": "deberta-v2", "XLMRobertaTokenizer": "xlm-roberta"}


def _spm_family(model_file: Path, config: _FolderConfig) -> str:
  """"albert", "deberta-v2" or "xlm-roberta", from the config files or else the file name."""
  if config.tokenizer_class:
    if config.tokenizer_class in SPM_CLASSES:
      return SPM_CLASSES[config.tokenizer_class]
    raise ValueError(
        f"{config.folder}/tokenizer_config.json names tokenizer_class {config.tokenizer_class!r}; "
        f"SentencePiece folders must be one of {sorted(SPM_CLASSES)}"
    )
  if config.model_type in ("albert", "deberta-v2", "deberta", "xlm-roberta"):
    return {"deberta": "deberta-v2"}.get(config.model_type, config.model_type)
  # The file names the reference classes use (ALBERT: spiece.model, DeBERTa-v2/v3: spm.model, XLM-R).
  by_name = {"spiece.model": "albert", "spm.model": "deberta-v2", "sentencepiece.bpe.model": "xlm-roberta"}
  if model_file.name in by_name:
    return by_name[model_file.name]
  raise ValueError(
      f"cannot tell whether {model_file} is an ALBERT or a DeBERTa-v2 tokenizer: add config.json with "
      f"model_type, or tokenizer_config.json with tokenizer_class"
  )


def _from_spm_model(model_file: Path, config: _FolderConfig) -> Tokenizer:
  spm = pipelines.SentencePieceModel.from_bytes(model_file.read_bytes())
  family = _spm_family(model_file, config)
  if family == "xlm-roberta":
    specials = config.specials(pipelines.XLM_ROBERTA_SPECIALS)
    backend = pipelines.xlm_roberta_unigram(spm, specials, add_prefix_space=bool(config.get("add_prefix_space", True)))
    config.add_extra_specials(backend)
    return Tokenizer(backend, kind="sentencepiece", specials=specials, source=str(config.folder))
  albert = family == "albert"
  specials = config.specials(pipelines.ALBERT_SPECIALS if albert else pipelines.DEBERTA_V2_SPECIALS)
  backend = pipelines.sentencepiece_unigram(
      spm,
      specials,
      albert=albert,
      lowercase=bool(config.get("do_lower_case", albert)),  # ALBERT is uncased, DeBERTa cased
      keep_accents=bool(config.get("keep_accents", False)),
      split_by_punct=bool(config.get("split_by_punct", False)),
      add_prefix_space=bool(config.get("add_prefix_space", True)),
  )
  config.add_extra_specials(backend)
  return Tokenizer(backend, kind="sentencepiece", specials=specials, source=str(config.folder))


def _tokenizer_json_kind(backend: tokenizers.Tokenizer, path: Path) -> Kind:
  description = json.loads(backend.to_str())
  model_type = description.get("model", {}).get("type")
  splitting = json.dumps([description.get("pre_tokenizer"), description.get("decoder")])
  if model_type == "WordPiece":
    return "wordpiece"
  if model_type == "BPE" and "ByteLevel" in splitting:
    return "bpe"
  if model_type in ("Unigram", "BPE") and "Metaspace" in splitting:
    return "sentencepiece"
  raise ValueError(f"{path}: unsupported tokenizer model {model_type!r} (WordPiece, byte-level BPE or SentencePiece)")


def _from_tokenizer_json(path: Path, config: _FolderConfig) -> Tokenizer:
  try:
    backend = tokenizers.Tokenizer.from_file(str(path))
  except Exception as e:  # the Rust library raises a bare Exception
    raise ValueError(f"cannot read {path}: {e}") from e
  kind = _tokenizer_json_kind(backend, path)
  vocab = backend.get_vocab(with_added_tokens=True)
  defaults = {
      "wordpiece": pipelines.BERT_SPECIALS,
      "bpe": pipelines.ROBERTA_SPECIALS if "<s>" in vocab else pipelines.DEBERTA_V1_SPECIALS,
      "sentencepiece": pipelines.ALBERT_SPECIALS if "<pad>" in vocab else pipelines.DEBERTA_V2_SPECIALS,
  }[kind]
  # A default the file does not know is dropped; one the config names is added like the reference does.
  defaults = SpecialTokens(**{
      role: token if token is not None and token.content in vocab else None
      for role, token in ((r, getattr(defaults, r)) for r in pipelines.SPECIAL_ROLES)
  })
  specials = config.specials(defaults)
  pipelines.add_special_tokens(backend, specials, keep_existing=True)
  config.add_extra_specials(backend)
  return Tokenizer(backend, kind=kind, specials=specials, source=str(config.folder))
