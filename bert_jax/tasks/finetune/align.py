"""Alignment to a fixed tower (`align`): LiT-style contrastive tuning of a text encoder into another space.

The other tower (an image encoder, an older text encoder) is locked: its
embeddings are given once as the rows of an `.npy` matrix [N, D]
(`data.vectors`), and each training / validation text names its row (TSV, CSV
or JSON lines with a `text` and a `row` column, `data.text_column` /
`data.row_column`; several texts may name one row, as the captions of an image
do). The text tower is any bert_jax encoder, pooled (`pooling`: mean or cls),
then a learned linear projection to D; both sides are L2-normalised and
compared by cosine times a learned logit scale (CLIP: initialised at
1 / `temperature` = 1 / 0.07, clamped at `max_logit_scale` = 100). The fresh
projection and logit scale step `head_lr_multiplier` (10) times as far as the
pretrained encoder (`Projection`).

Loss: CLIP's symmetric InfoNCE over the global batch, text -> vector and
vector -> text averaged, every other example's vector (text) a negative. The
batch is sharded over the mesh's data axes but the loss sees all of it: the
[B, B] similarity matrix is computed under jit on the whole global batch (the
compiler gathers the embeddings, they are small), not per device.
Texts of one row in a batch are not negatives of each other: the off-diagonal
pairs that share a row are masked out of both directions' softmax (in the
vector -> text direction each copy of a duplicated vector then picks its own
text among the texts of other rows), so a caption is never pushed away from
its own image. Validation: retrieval both ways (recall@1/5/10 and MRR,
`evaluation.retrieval.text_vector_retrieval`).

The best checkpoint is a sentence-transformers folder Transformer -> Pooling
-> Dense (2_Dense: the projection, Identity activation) -> Normalize, so
`bert_jax.embed --model=WORKDIR/best` (and sentence-transformers) embed
straight into the fixed tower's space. The projection and logit scale train as
top-level `task_*` parameters: bert_jax.finetune keeps them beside the saved
encoder (task_params.npz, for evaluating the folder) and hands them to
`export_files`, which writes the Dense module.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.convert import sentence_transformers
from bert_jax.data.batching import Dataset
from bert_jax.data.finetune import vectors as vector_data
from bert_jax.evaluation.retrieval import text_vector_retrieval
from bert_jax.models.config import ModelConfig
from bert_jax.models.heads import POOLING, l2_normalize
from bert_jax.models.layers import Dense, default_kernel_init, param_with_axes
from bert_jax.tasks.base import (cross_entropy, example_count, example_mask, forward, mask_padding_pairs,
                              weighted_sum)
from bert_jax.tasks.finetune.base import TaskObjective
from bert_jax.tasks.finetune.contrastive import ContrastiveTask, encode_side

PROJECTION, LOGIT_SCALE = "task_projection", "task_logit_scale"  # top-level params outside the encoder
SIDE = "a"  # the texts are the anchors: their token arrays are `a_input_ids` / `a_attention_mask`


class Projection(nn.Module):
  """Pooled text [B, H] -> [B, D] in the fixed tower's space; also holds the log-scale logit scale.

  lr_multiplier m: the parameters are stored divided by m and multiplied by m when used, so Adam
  (whose step does not depend on the gradient's scale) moves these fresh parameters m times
  further per step than the pretrained encoder's. task_params.npz keeps them as stored.
  """

  features: int
  logit_scale_init: float
  lr_multiplier: float = 1.0

  @nn.compact
  def __call__(self, pooled: jax.Array) -> tuple[jax.Array, jax.Array]:
    """-> (projected [B, D] float32, logit_scale [] float32: log of the scale the cosines are multiplied by)."""
    m = self.lr_multiplier
    init = lambda key, shape, dtype=jnp.float32: default_kernel_init(key, shape, dtype) / m
    projected = m * Dense((self.features,), ("embed", "classes"), kernel_init=init, name=PROJECTION)(
        pooled.astype(jnp.float32))
    scale = m * param_with_axes(self, LOGIT_SCALE, nn.initializers.constant(self.logit_scale_init / m), (), ())
    return projected, scale


def symmetric_info_nce(text: jax.Array, vectors: jax.Array, rows: jax.Array, scale: jax.Array, batch=None
                       ) -> tuple[jax.Array, jax.Array]:
  """CLIP's loss with duplicates masked: per example (text -> vector + vector -> text) / 2 [B], and whether
  each text ranks its own vector first among the batch's [B].

  text, vectors: [B, D] L2-normalised; rows: [B] int, the vector row each example names (equal rows:
  the same vector, masked out of each other's negatives); scale: [] the cosine multiplier; batch:
  its example_weights, when present, keep padding examples out of every real one's negatives.
  """
  logits = scale * (text.astype(jnp.float32) @ vectors.astype(jnp.float32).T)   # [B texts, B vectors]
  size = logits.shape[0]
  same_row = (rows[:, None] == rows[None, :]) & ~jnp.eye(size, dtype=bool)
  logits = jnp.where(same_row, -jnp.inf, logits)                                 # symmetric: serves both ways
  if batch is not None:
    logits = mask_padding_pairs(logits, batch)                                   # symmetric too
  labels = jnp.arange(size)
  loss = (cross_entropy(logits, labels) + cross_entropy(logits.T, labels)) / 2
  return loss, jnp.argmax(logits, -1) == labels


class AlignObjective(TaskObjective):
  """The text tower (encoder -> pooling -> projection) against fixed target vectors, symmetric InfoNCE."""

  def __init__(self, cfg: ModelConfig, pooling: str, target_dim: int, temperature: float, max_logit_scale: float,
               head_lr_multiplier: float = 1.0):
    super().__init__(cfg, with_pooler=False)
    self.pooling, self.hidden_size = pooling, cfg.hidden_size
    self.projection = Projection(target_dim, math.log(1.0 / temperature), head_lr_multiplier)
    # CLIP clamps the scale at 100 so that a few confident pairs cannot make the softmax a hard max.
    self.max_log_scale = math.log(max_logit_scale) if max_logit_scale > 0 else None

  def init(self, rngs, input_ids):
    encoder = super().init(rngs, input_ids)
    head = self.projection.init(jax.random.fold_in(rngs["params"], 1), jnp.zeros((1, self.hidden_size)))["params"]
    return {**encoder, **head}

  def totals(self, batch):
    return {"task_count": example_count(batch, f"{SIDE}_")}

  def embed(self, params, batch, rng=None) -> tuple[jax.Array, jax.Array]:
    """-> (L2-normalised texts in the target space [B, D] float32, the cosine multiplier [])."""
    encoder = {k: v for k, v in params.items() if k not in (PROJECTION, LOGIT_SCALE)}
    out = forward(self.model(rng), encoder, batch, rng, prefix=f"{SIDE}_")
    pooled = POOLING[self.pooling](out.last_hidden_state, example_mask(batch, f"{SIDE}_"))
    projected, log_scale = self.projection.apply({"params": {k: params[k] for k in (PROJECTION, LOGIT_SCALE)}},
                                                 pooled)
    if self.max_log_scale is not None:
      log_scale = jnp.minimum(log_scale, self.max_log_scale)
    return l2_normalize(projected), jnp.exp(log_scale)

  def predict(self, params, batch):
    return {"text": self.embed(params, batch)[0]}

  def sums(self, params, batch, rng):
    text, scale = self.embed(params, batch, rng)
    loss, correct = symmetric_info_nce(text, l2_normalize(batch["target"]), batch["row"], scale, batch)
    return {"task_loss": weighted_sum(loss, batch), "task_correct": weighted_sum(correct.astype(jnp.float32), batch),
            "task_count": example_count(batch, f"{SIDE}_")}


class AlignTask(ContrastiveTask):
  """`align`: contrastive's text side (pooling, packing, module files) against a fixed matrix of vectors."""

  name = "align"

  def __init__(self, config, tokenizer):
    super().__init__(config, tokenizer)
    self._vectors: np.ndarray | None = None

  @property
  def vectors(self) -> np.ndarray:
    """float32 [N, D] of data.vectors, L2-normalised (read once, shared by every split)."""
    if self._vectors is None:
      path = self.config.data.vectors
      if not path:
        raise ValueError("config.data.vectors is empty: align needs the .npy file of the fixed tower's "
                         "embeddings [rows, dim] that the texts' row column indexes")
      self._vectors = np.asarray(l2_normalize(vector_data.read_vectors(path)))
    return self._vectors

  def load(self, path, split, labels=None):
    data = self.config.data
    captions = vector_data.read_captions(path, len(self.vectors), text_columns=(data.text_column,)
                                         + vector_data.TEXT_COLUMNS, row_columns=(data.row_column,)
                                         + vector_data.ROW_COLUMNS, vectors=data.vectors)
    arrays = {**encode_side(self.tokenizer, captions.texts, data.max_length, SIDE),
              "row": captions.rows.astype(np.int32)}
    lengths = arrays[f"{SIDE}_attention_mask"].sum(1).astype(np.int32)
    return Dataset(arrays, (f"{SIDE}_input_ids", f"{SIDE}_attention_mask"), lengths, path)

  def train_arrays(self, arrays):
    # Each step gathers its targets from the one matrix: no [texts, D] copy per split.
    return {**arrays, "target": self.vectors[arrays["row"]]}

  def objective(self, cfg, labels):
    if self.config.optimizer.grad_accum_steps != 1:
      raise ValueError("align: optimizer.grad_accum_steps must be 1 (in-batch negatives span the whole batch)")
    if self.config.head_lr_multiplier <= 0:
      raise ValueError(f"config.head_lr_multiplier={self.config.head_lr_multiplier}: expected > 0")
    return AlignObjective(cfg, self._pooling(), int(self.vectors.shape[1]), float(self.config.temperature),
                          float(self.config.max_logit_scale), float(self.config.head_lr_multiplier))

  def metrics(self, dataset, outputs):
    return text_vector_retrieval(outputs["text"], dataset.arrays["row"], self.vectors)

  def metadata(self, labels):
    return {**super().metadata(labels), "target_dim": int(self.vectors.shape[1]), "vectors": self.config.data.vectors,
            "head_lr_multiplier": float(self.config.head_lr_multiplier)}

  def export_files(self, path: str, **task_params) -> None:
    """Transformer -> Pooling -> Dense (the projection) -> Normalize; task_params: the `task_*` parameters
    of the saved step (bert_jax.finetune passes them by name)."""
    projection = task_params[PROJECTION]
    # As stored, divided by the multiplier (Projection); flax's kernel is [in, out], torch's Linear [out, in].
    m = float(self.config.head_lr_multiplier)
    dense = [(m * np.asarray(projection["kernel"]).T, m * np.asarray(projection["bias"]), "Identity")]
    sentence_transformers.write_modules(path, self._pooling(), normalize=True, max_length=self.config.data.max_length,
                                        dense=dense)
