"""Sentence embeddings: one vector per line of a text file, from any bert_jax encoder.

    python -m bert_jax.embed --model=PATH --input=FILE --output=OUT.npy \
        [--pooling=mean|cls|max] [--normalize | --no-normalize] [--max_length=N] \
        [--long_inputs=truncate|chunk] [--batch_size=N] [--dtype=float32|bfloat16] [--allow_empty_lines] \
        [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]

PATH is a Hugging Face folder or a bert_jax checkpoint folder; the text is
tokenized with the model's own tokenizer (tokenizer.json / vocab.txt / spm.model
in PATH). OUT.npy is float32 [lines, hidden] (or the last Dense module's width), row
i for line i; it appears only when complete (an existing file is replaced
atomically, or left alone on error).

Defaults follow a sentence-transformers folder when PATH is one, flags override:
  pooling     1_Pooling/config.json (pooling_mode_{mean,cls,max}_tokens); else mean
  normalize   on if modules.json lists a Normalize module; else off
  max_length  sentence_bert_config.json max_seq_length; else min(512, position table)
Dense modules (k_Dense/: a linear map with an Identity, Tanh or ReLU activation, e.g.
the projection the `align` fine-tuning task writes) run after pooling and before
Normalize, as in sentence-transformers. Other modules, other activations and other
orders are refused rather than skipped.

--long_inputs: "truncate" (default) cuts each text at max_length tokens, as
sentence-transformers does. "chunk" embeds overlapping windows of a longer text
(each with the template's [CLS] / [SEP]; consecutive windows share a quarter of
their text tokens) and merges them weighted by each window's real tokens: for
mean pooling that is the mean over all window tokens; cls averages the windows'
first vectors; max takes the maximum. Normalization comes after merging.

Python: `embed_texts(path_or_(model, params, tokenizer), texts, ...)` -> float32
[len(texts), hidden]; the CLI is a thin layer over it.

Modules, in the order a run uses them:
  settings   Settings from the folder's defaults and the flags; EmbedError
  windows    texts -> token windows (truncated, or chunked when long)
  planning   windows packed into rows, rows into batches of a few shapes
  encoding   the jitted encoder + pooling per batch, windows merged per text; embed_texts, load
  cli        flags, reading the input lines, writing the .npy
  processes  several processes: their flags, jax.distributed, process 0 writes

Speed: texts are tokenized in one parallel call, then packed: several short
texts share one row of the batch, each in its own attention segment with its
own positions, so the model sees almost no padding. Row lengths are chosen from
the data (a cost model trades padding and attention against compilations), so
XLA compiles a handful of programs (3 for the 7,960 movie sentences on CPU),
concurrently and while earlier shapes run. The CLI keeps compiled programs in
a persistent cache (~/.cache/bert_jax/jax_cache, or $JAX_COMPILATION_CACHE_DIR;
--no-compilation_cache turns it off) so repeat runs skip compilation.

Every device: the rows of each batch are split over all devices (the token
budget above is per device, --batch_size is rounded up to a multiple of the
devices), the params replicated. With several processes (the flags of
bert_jax.main; none on TPU VMs and SLURM) each process reads the whole input,
packs and encodes the rows of its own devices, and process 0 writes the one
OUT.npy, equal to a one-device run's (float32 noise: cosine >= 0.99999 per row).
"""

from bert_jax.embed.cli import main
from bert_jax.embed.encoding import embed_texts, load
from bert_jax.embed.settings import EmbedError, Settings, folder_settings, resolve_settings

__all__ = ["EmbedError", "Settings", "embed_texts", "folder_settings", "load", "main", "resolve_settings"]
