"""Export for serving: a model folder to a self-contained folder that runs with jax, numpy and tokenizers only.

    python -m bert_jax.export --model=DIR --out=DIR [--task=embed|classify|tag] \
        [--dtype=float32|bfloat16] [--param_dtype=float32|bfloat16] [--max_length=N] \
        [--platforms=cpu[,cuda,rocm,tpu]] [--pooling=mean|cls|max] [--[no-]normalize] [--no-check]

--model is anything bert_jax loads: a bert_jax checkpoint or fine-tuned folder, a Hugging Face
folder, a sentence-transformers folder (its pooling, Normalize and max_seq_length become the
defaults, as in bert_jax.embed). --task defaults to the folder's head: classify for a
sequence-classification head, tag for a token-classification head, embed otherwise.

The folder (see `artifact` for each file): manifest.json, model.jaxexport (the inference
function as jax.export StableHLO, batch and length symbolic with length <= max_length),
params.safetensors (the function's parameters, an input rather than constants),
tokenizer.json and serve.py, the loader:

    import serve                       # from the folder, with only jax, numpy, tokenizers installed
    model = serve.load(folder)
    model(texts)                       # embed [B, D]; classify logits / probabilities / labels;
                                       # tag per-token logits and per-word tags
    python FOLDER/serve.py < texts.txt # one JSON object per line

Outputs equal bert_jax's in-process ones (bert_jax.embed's vectors; the head's logits) within
1e-6 in float32, for any batch size and length up to max_length; the export checks this on
a few sentences before it replaces --out (--no-check skips it). Inputs longer than
max_length are truncated by default (as bert_jax.embed does; --long_inputs=chunk is not
exported); serve's truncate=False and direct array calls raise instead.

Platforms: lowering needs no hardware, so a CPU host exports for cuda and tpu as well; the
loader refuses a platform the folder was not exported for.

Modules: serving_fn (the function per task, jax.export), artifact (the folder, its
manifest, the check), serve (the standalone loader shipped in the folder).
"""

from bert_jax.export.artifact import ExportError, export_model

__all__ = ["ExportError", "export_model"]
