"""The model's inference function per task, and that function exported to StableHLO with symbolic shapes.

    names, leaves, treedef = flatten_params(serving_params(params))
    fn = inference_function(model, "embed", treedef, pooling="mean", normalize=True)
    functions, why = export_functions(fn, leaves, max_length=256, platforms=("cpu",))
    blob = functions[None].serialize()   # what the folder's model.jaxexport holds

Every task's function takes the same arguments, so one loader calls them all:

    fn(params, input_ids, attention_mask, token_type_ids)
      params          list of arrays in `param_names` order (parameters are inputs, not constants:
                      the StableHLO stays small and the stored dtype can change without re-exporting)
      input_ids       int32 [batch, length], right-padded
      attention_mask  int32 [batch, length], 1 = token
      token_type_ids  int32 [batch, length]
    -> embed     float32 [batch, hidden]: pooled (then any sentence-transformers Dense modules,
                 then L2-normalized when asked) as bert_jax.embed gives it
       classify  float32 [batch, num_labels]: the classification head's logits
       tag       float32 [batch, length, num_labels]: the token-classification head's logits

batch and length are symbolic ("b, l" with l <= max_length), so one artifact serves every
batch size and length up to the limit; the loader compiles each concrete shape on first use.
A model that cannot be traced at a symbolic length (DeBERTa) is exported once per bucket
length (`length_buckets`), batch still symbolic, and the loader pads up to the next bucket.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.embed.encoding import embed_batch
from bert_jax.models.embeddings import segment_position_ids
from bert_jax.models.heads import l2_normalize

# task -> the head `from_pretrained` loads for it (None: the bare encoder).
TASK_HEADS = {"embed": None, "classify": "classification", "tag": "token_classification"}
# jax.export's platform names (jax.default_backend() says "gpu" where these say "cuda" / "rocm").
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


# sentence-transformers Dense activations (`sentence_transformers.ACTIVATIONS`, numpy there) in jax.
DENSE_ACTIVATIONS = {"Identity": lambda x: x, "Tanh": jnp.tanh, "ReLU": jax.nn.relu}


def serving_params(params: Mapping, dense: Sequence = ()) -> dict:
  """The tree the function takes: {"model": the model's params, "dense": [{"weight" [out, in], "bias" [out]}]}.

  dense: the folder's sentence-transformers Dense modules (`sentence_transformers.DenseModule`), embed only.
  """
  tree = {"model": params}
  if dense:
    tree["dense"] = [{"weight": d.weight, **({"bias": d.bias} if d.bias is not None else {})} for d in dense]
  return tree


def flatten_params(tree: Mapping) -> tuple[list[str], list[np.ndarray], jax.tree_util.PyTreeDef]:
  """(names, host arrays, treedef) of a parameter tree; names are "/"-joined paths in the tree's leaf order."""
  leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
  names = ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path) for path, _ in leaves_with_paths]
  return names, [np.asarray(jax.device_get(leaf)) for _, leaf in leaves_with_paths], treedef


def inference_function(model, task: str, treedef: jax.tree_util.PyTreeDef, *, pooling: str = "mean",
                       normalize: bool = False, dense_activations: Sequence[str] = ()) -> Callable:
  """The pure fn(params_list, input_ids, attention_mask, token_type_ids) of the module docstring.

  treedef: the structure of `serving_params` (`flatten_params`), rebuilt inside the function.
  dense_activations: embed, one per Dense module of the tree, run after pooling and before
  normalizing, as sentence-transformers runs Pooling -> Dense -> Normalize.
  The parameters arrive in whatever dtype the folder stores and are used as float32, the
  dtype bert_jax keeps them in (the compute dtype is model.config.dtype, as in-process).
  """
  if task not in TASK_HEADS:
    raise ValueError(f"task={task!r}: expected one of {tuple(TASK_HEADS)}")
  cfg = model.config

  def params_tree(leaves):
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(p).astype(jnp.float32) for p in leaves])

  if task == "embed":
    def embed(leaves, input_ids, attention_mask, token_type_ids):
      tree = params_tree(leaves)
      # One text per row is a packed row with one segment: bert_jax.embed's own program, so the
      # vectors are the ones it gives (segment_ids = the mask, positions restarted as it packs them).
      positions = segment_position_ids(attention_mask, cfg.position_ids, cfg.pad_token_id)
      vectors = embed_batch(tree["model"], input_ids, attention_mask, positions, token_type_ids, model=model,
                            pooling=pooling, normalize=normalize and not dense_activations, num_segments=1)[:, 0]
      for layer, name in zip(tree.get("dense", ()), dense_activations):
        # HIGHEST: bert_jax.embed runs Dense as a float32 host matmul.
        vectors = jnp.dot(vectors, layer["weight"].T, precision=jax.lax.Precision.HIGHEST)
        vectors = DENSE_ACTIVATIONS[name](vectors + layer["bias"] if "bias" in layer else vectors)
      return l2_normalize(vectors) if normalize and dense_activations else vectors
    return embed

  def logits(leaves, input_ids, attention_mask, token_type_ids):
    out = model.apply({"params": params_tree(leaves)["model"]}, input_ids, attention_mask=attention_mask,
                      token_type_ids=token_type_ids)
    return out.logits.astype(jnp.float32)
  return logits


def check_platforms(platforms: Sequence[str]) -> None:
  """Raises ValueError unless `platforms` is a non-empty subset of PLATFORMS."""
  unknown = [p for p in platforms if p not in PLATFORMS]
  if unknown or not platforms:
    raise ValueError(f"platforms={list(platforms)}: expected a non-empty subset of {PLATFORMS}")


def export_function(fn: Callable, param_leaves: Sequence[np.ndarray], *, max_length: int,
                    platforms: Sequence[str] = ("cpu",), length: int | None = None) -> jax.export.Exported:
  """`fn` lowered for `platforms` with input shapes [b, l], l <= max_length (or l = length), params as inputs.

  Lowering needs no hardware of the target platforms: a CPU host exports for TPU and CUDA
  too (the artifact then holds one module with a branch per platform).
  """
  check_platforms(platforms)
  # The bound lets shape checks inside the model (a length against the position table) be
  # decided at export time; the loader enforces it before calling.
  if length is None:
    shape = jax.export.symbolic_shape("b, l", constraints=(f"l <= {max_length}",))
  else:
    shape = (*jax.export.symbolic_shape("b"), length)
  tokens = jax.ShapeDtypeStruct(shape, jnp.int32)
  params = [jax.ShapeDtypeStruct(p.shape, p.dtype) for p in param_leaves]
  return jax.export.export(jax.jit(fn), platforms=tuple(platforms))(params, tokens, tokens, tokens)


def export_functions(fn: Callable, param_leaves: Sequence[np.ndarray], *, max_length: int,
                     platforms: Sequence[str] = ("cpu",)) -> tuple[dict[int | None, jax.export.Exported], str]:
  """({None: one function of symbolic length}, "") or ({length: function} over `length_buckets`, why).

  Some models build tables on the host from the concrete length (DeBERTa's relative-position
  index is numpy over the sequence length), which a symbolic length cannot trace; those get
  one function per bucket length, the batch still symbolic.
  """
  check_platforms(platforms)
  try:
    return {None: export_function(fn, param_leaves, max_length=max_length, platforms=platforms)}, ""
  except Exception as e:  # noqa: BLE001 - whatever stops the symbolic trace; a real bug fails again below
    reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
  functions = {n: export_function(fn, param_leaves, max_length=max_length, platforms=platforms, length=n)
               for n in length_buckets(max_length)}
  return functions, reason


def length_buckets(max_length: int, smallest: int = 16) -> list[int]:
  """Fixed lengths for models that need a concrete one: powers of two from `smallest`, then max_length."""
  lengths = [smallest]
  while lengths[-1] * 2 < max_length:
    lengths.append(lengths[-1] * 2)
  return [n for n in lengths if n < max_length] + [max_length]
