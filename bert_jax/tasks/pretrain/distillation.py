"""Knowledge distillation (DistilBERT, MiniLM): a teacher's outputs train a smaller student.

The losses are pure functions in distill_losses.py.

DistillationObjective (config.objective = "distill_mlm") distils a teacher
checkpoint (bert_jax or Hugging Face folder) into the student of config.model
during MLM pretraining:

  loss = alpha_kd   * soft-target KL at the masked positions     / masked positions
       + alpha_mlm  * hard MLM cross entropy                    / masked positions
       + alpha_cosine * (1 - cos) of the last hidden states      / tokens
       + alpha_hidden * hidden MSE                               / tokens
       + alpha_attention * last-layer attention KL               / tokens (queries)
       + alpha_value * last-layer value-relation KL              / tokens

The teacher never runs inside the differentiated step: `prepare_batch(batch)`
runs a separately jitted teacher forward (teacher params passed as an argument,
evaluation mode) and adds its outputs to the batch as ordinary [B, ...] arrays,
so the train step stays pure, gradient accumulation splits them like every
other batch array, and the teacher's weights are never baked into the step's
HLO as constants.

Memory: teacher_logits is [B, M, V] float32 per batch. The teacher runs with
unscanned layers, so XLA keeps only the hidden state and maps of the layer read;
a scanned student (scan_layers) hands the maps of all its layers out of the
scan when alpha_attention or alpha_value is on (about what the backward pass
keeps anyway); MFU in the logs counts the student's step only.

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from bert_jax import sharding
from bert_jax.convert import layout
from bert_jax.models.config import ModelConfig
from bert_jax.models.layers import Dense
from bert_jax.models.model import EncoderModel, attention_mask_4d, collect_attention
from bert_jax.tasks.base import Objective, Term, example_weights
from bert_jax.tasks.pretrain.distill_losses import (attention_kl, cosine_embedding_loss, hidden_mse, soft_target_kl,
                                                    value_relation)
from bert_jax.tasks.pretrain.mlm import mlm_sums

# The student's trainable hidden-state projection lives under this top-level params key (only when
# the widths differ and a hidden-state loss is on); `student_params` drops it before saving.
PROJECTION = "distill_projection"

# Loss names, in the order terms and logs list them; each has config.distill.alpha_<name>.
LOSSES = ("kd", "mlm", "cosine", "hidden", "attention", "value")

# The teacher outputs prepare_batch adds, and the losses that need each of them.
TEACHER_KEYS = {"teacher_logits": ("kd",), "teacher_hidden": ("cosine", "hidden"),
                "teacher_attention": ("attention",), "teacher_values": ("value",)}

# Student initialisation from the teacher ------------------------------------------------------------

def teacher_layers_for(student_layers: int, teacher_layers: int) -> list[int]:
  """Evenly spread teacher layers, first and last included: 6 of 12 -> [0, 2, 4, 7, 9, 11] (DistilBERT's)."""
  return [int(i) for i in np.round(np.linspace(0, teacher_layers - 1, student_layers))]


def init_student_from_teacher(student_params: Mapping, student_cfg: ModelConfig, teacher_params: Mapping,
                              teacher_cfg: ModelConfig, layers: Sequence[int] | None = None) -> dict:
  """DistilBERT's initialisation: embeddings, heads and chosen layers copied from the teacher.

  Student layer i gets teacher layer layers[i] (default `teacher_layers_for`); every other
  student parameter that the teacher has (embeddings, MLM head, pooler, DeBERTa's relative
  table) is copied as is; the rest (e.g. the distillation projection) stays. Widths must match
  (ValueError naming the parameters otherwise); ALBERT's shared layers are not supported.
  Returns host (numpy) params in the student's layout (scanned or not).
  """
  for name, cfg in (("student", student_cfg), ("teacher", teacher_cfg)):
    if cfg.share_layers != "none":
      raise ValueError(f"init_student_from_teacher: the {name} shares layers ({cfg.share_layers}); "
                       "only per-layer encoders are supported")
  layers = list(layers) if layers is not None else teacher_layers_for(student_cfg.num_layers, teacher_cfg.num_layers)
  if len(layers) != student_cfg.num_layers or not all(0 <= i < teacher_cfg.num_layers for i in layers):
    raise ValueError(f"init_student_from_teacher: layers {layers} must name {student_cfg.num_layers} teacher "
                     f"layers in [0, {teacher_cfg.num_layers})")
  student = layout.unstack_layers(jax.tree.map(np.asarray, jax.device_get(dict(student_params))))
  teacher = layout.unstack_layers(jax.tree.map(np.asarray, jax.device_get(dict(teacher_params))))
  problems: list[str] = []

  def copy(dst, src, where):
    def one(path, leaf):
      node = src
      for key in path:
        name = getattr(key, "key", key)
        if not isinstance(node, Mapping) or name not in node:
          problems.append(f"{where}{jax.tree_util.keystr(path)}: the teacher has no such parameter")
          return leaf
        node = node[name]
      if np.shape(node) != np.shape(leaf):
        problems.append(f"{where}{jax.tree_util.keystr(path)}: teacher {np.shape(node)} vs student {np.shape(leaf)}")
        return leaf
      return np.asarray(node, leaf.dtype)
    return jax.tree_util.tree_map_with_path(one, dst)

  out = {}
  for key, value in student.items():
    if key == "encoder":
      encoder = {}
      for name, sub in value.items():
        if name.startswith("layer_"):
          source = f"layer_{layers[int(name.removeprefix('layer_'))]}"
          encoder[name] = copy(sub, teacher["encoder"].get(source, {}), f"encoder/{name}<-{source}")
        else:
          encoder[name] = copy(sub, teacher["encoder"].get(name, {}), f"encoder/{name}")
      out[key] = encoder
    elif key in teacher:
      out[key] = copy(value, teacher[key], key)
    else:
      out[key] = value
  if problems:
    raise ValueError("init_student_from_teacher: the teacher does not fit the student (equal widths and the "
                     "same family are needed):\n  " + "\n  ".join(problems[:20]))
  logging.info("student initialised from teacher layers %s", layers)
  return layout.stack_layers(out) if student_cfg.scan_layers else out


# The objective ---------------------------------------------------------------------------------------

def load_teacher(path: str, student_cfg: ModelConfig, head: str | None = "mlm") -> tuple[EncoderModel, dict]:
  """(model, params) of the teacher folder, set up for evaluation-only use beside the student.

  Unscanned layers (so XLA drops the maps of the layers nobody reads), no remat (no gradients),
  and the student's compute dtype.
  """
  from bert_jax.convert.pretrained import from_pretrained
  if not path:
    raise ValueError("config.distill.teacher is empty: set it to the teacher's folder (a bert_jax checkpoint "
                     "folder or a Hugging Face model folder)")
  return from_pretrained(path, head=head, scan_layers=False, remat_policy="none", dtype=student_cfg.dtype)


class DistillationObjective(Objective):
  """MLM pretraining of a student (head "mlm") against a frozen teacher; see the module docstring.

  teacher: (EncoderModel, params) to use instead of loading config.distill.teacher (tests).
  """

  @classmethod
  def from_config(cls, cfg, config):
    return cls(cfg, config.distill)

  def __init__(self, cfg: ModelConfig, distill: ml_collections.ConfigDict,
               teacher: tuple[EncoderModel, Mapping] | None = None):
    self.cfg = cfg
    self.temperature = float(distill.get("temperature", 2.0))
    if self.temperature <= 0:
      raise ValueError(f"config.distill.temperature={self.temperature}: must be > 0")
    self.alpha = {name: float(distill.get(f"alpha_{name}", 0.0)) for name in LOSSES}
    bad = {k: v for k, v in self.alpha.items() if v < 0}
    if bad or not any(self.alpha.values()):
      raise ValueError(f"config.distill alphas {self.alpha}: need all >= 0 and at least one > 0")
    self.init_from_teacher = bool(distill.get("init_from_teacher", False))
    self.teacher_layer = int(distill.get("teacher_layer", -1))

    if teacher is None:
      teacher = load_teacher(distill.teacher, cfg, head="mlm" if self.alpha["kd"] else None)
    self.teacher_model, self.teacher_params = teacher[0], teacher[1]
    tcfg = self.teacher_model.config
    if tcfg.vocab_size != cfg.vocab_size:
      raise ValueError(f"teacher and student must share the vocabulary: the teacher has {tcfg.vocab_size} tokens, "
                       f"config.model.vocab_size is {cfg.vocab_size} (use the teacher's tokenizer and vocab_size)")
    if self.alpha["kd"] and not (self.teacher_model.head_type and self.teacher_model.head_type.masked_lm):
      raise ValueError("alpha_kd > 0 needs a teacher with an MLM head")
    maps = self.alpha["attention"] or self.alpha["value"]
    if maps and tcfg.num_heads != cfg.num_heads:
      raise ValueError(f"alpha_attention / alpha_value need equal head counts: teacher {tcfg.num_heads}, "
                       f"student config.model.num_heads={cfg.num_heads}")
    if self.alpha["attention"] and (tcfg.talking_head or cfg.talking_head):
      # Talking heads mix the probabilities across heads after the softmax: their rows are no
      # longer distributions (they may even be negative), so a KL between them means nothing.
      raise ValueError("alpha_attention > 0 does not work with talking-heads attention (DeBERTa v1 "
                       "talking_head): its mixed maps are not distributions; use alpha_value instead")
    teacher_depth = tcfg.num_layers * (tcfg.inner_group_num if tcfg.share_layers == "all" else 1)
    if not -teacher_depth <= self.teacher_layer <= teacher_depth or (maps and self.teacher_layer == 0):
      raise ValueError(f"config.distill.teacher_layer={self.teacher_layer}: expected -1 (last) or a layer in "
                       f"1..{teacher_depth}")
    self.needs_projection = bool(self.alpha["hidden"] or self.alpha["cosine"]) and tcfg.hidden_size != cfg.hidden_size
    self.projection = Dense((tcfg.hidden_size,), ("embed", "embed_out"), dtype=jnp.dtype(cfg.dtype))
    self.student = {d: EncoderModel(cfg, head="mlm", deterministic=d) for d in (True, False)}
    self.terms = tuple(Term(f"{name}_loss", f"{name}_count", self.alpha[name]) for name in LOSSES if self.alpha[name])
    self.teacher_keys = tuple(k for k, needs in TEACHER_KEYS.items() if any(self.alpha[n] for n in needs))
    self._teacher_fns: dict = {}

  # Params -----------------------------------------------------------------------------------------

  def init(self, rngs, input_ids):
    params = dict(self.student[False].init(rngs, input_ids)["params"])
    if self.needs_projection:
      key = jax.random.fold_in(rngs["params"], 1)
      params[PROJECTION] = self.projection.init(key, jnp.zeros((1, 1, self.cfg.hidden_size), jnp.float32))["params"]
    return params

  @staticmethod
  def student_params(params: Mapping) -> dict:
    """The student model's own params (what to save or fine-tune): without the distillation projection."""
    return {k: v for k, v in params.items() if k != PROJECTION}

  def export(self, params):
    """WORKDIR/model: the student with its MLM head, without the projection."""
    return {"model": (self.student[True], self.student_params(params))}

  def save_student(self, path: str, params: Mapping, **kw) -> None:
    """save_pretrained of the student (head "mlm"), projection dropped; kw go to save_pretrained."""
    from bert_jax.convert.pretrained import save_pretrained
    save_pretrained(path, self.student[True], self.student_params(params), **kw)

  def initial_params(self, params, param_shardings):
    """Fresh-run hook of the trainer: DistilBERT-style copy of teacher layers when distill.init_from_teacher."""
    if not self.init_from_teacher:
      return params
    host = init_student_from_teacher(params, self.cfg, self.teacher_params, self.teacher_model.config)
    return jax.device_put(host, param_shardings)

  # Teacher ----------------------------------------------------------------------------------------

  def place(self, mesh, rules) -> None:
    """Shards the teacher's params on the mesh by the same logical rules as the student's."""
    ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    boxed = jax.eval_shape(self.teacher_model.init, jax.random.key(0), ids)["params"]
    shardings = sharding.named_shardings(boxed, mesh, rules, log=logging.info)
    self.teacher_params = jax.device_put(self.teacher_params, shardings)

  def teacher_outputs(self, teacher_params, inputs: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """The teacher's evaluation-mode outputs the enabled losses read (float32):

    teacher_logits [B, M, V] at masked_positions, teacher_hidden [B, L, H_t] (config.distill.teacher_layer),
    teacher_attention [B, heads, L, L] and teacher_values [B, heads, L, L] (value relations) of that layer.
    """
    tcfg = self.teacher_model.config
    maps = "teacher_attention" in self.teacher_keys or "teacher_values" in self.teacher_keys
    kw = {"masked_positions": inputs["masked_positions"]} if "teacher_logits" in self.teacher_keys else {}
    result = self.teacher_model.apply(
        {"params": teacher_params}, inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"],
        segment_ids=inputs.get("segment_ids"), output_hidden_states="teacher_hidden" in self.teacher_keys,
        mutable=["intermediates"] if maps else False, **kw)
    out, state = result if maps else (result, None)
    layer = self.teacher_layer
    # hidden_states[k] is the output of layer k (0: embeddings); layer k's maps are maps[k - 1].
    map_index = layer - 1 if layer > 0 else layer
    found = {}
    if "teacher_logits" in self.teacher_keys:
      found["teacher_logits"] = out.logits.astype(jnp.float32)
    if "teacher_hidden" in self.teacher_keys:
      found["teacher_hidden"] = out.hidden_states[layer].astype(jnp.float32)
    if "teacher_attention" in self.teacher_keys:
      found["teacher_attention"] = collect_attention(state["intermediates"], tcfg)[map_index]
    if "teacher_values" in self.teacher_keys:
      values = collect_attention(state["intermediates"], tcfg, "attention_values")[map_index]
      found["teacher_values"] = value_relation(values, self._key_mask(inputs))
    return found

  def prepare_batch(self, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """batch plus the teacher's outputs (see teacher_outputs), from a jitted forward of their own.

    The outputs keep the batch's sharding, so they split (gradient accumulation) and shard
    (data parallelism) along axis 0 like the rest of the batch.
    """
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "masked_positions",
                                     "segment_ids") if k in batch}
    placed = getattr(batch["input_ids"], "sharding", None)
    key = placed if isinstance(placed, jax.sharding.NamedSharding) else None
    if key not in self._teacher_fns:
      self._teacher_fns[key] = jax.jit(self.teacher_outputs, **({"out_shardings": key} if key else {}))
    return {**batch, **self._teacher_fns[key](self.teacher_params, inputs)}

  # Sums -------------------------------------------------------------------------------------------

  @staticmethod
  def _key_mask(batch) -> jax.Array:
    """[b, 1, 1 | l, l] bool: keys each token may attend to (segments respected when packed)."""
    attention_mask = batch["attention_mask"]
    segment_ids = batch.get("segment_ids")
    if segment_ids is not None:
      attention_mask = attention_mask * (segment_ids > 0)
    return attention_mask_4d(attention_mask, segment_ids)

  @staticmethod
  def _token_weights(batch) -> jax.Array:
    """[B, L] float32: real tokens of real rows (the queries and hidden states compared)."""
    return batch["attention_mask"].astype(jnp.float32) * example_weights(batch)[:, None]

  def sum_keys(self):
    keys = ["mlm_loss", "mlm_correct", "mlm_count"]
    for name in LOSSES:
      if name != "mlm" and self.alpha[name]:
        keys += [f"{name}_loss", f"{name}_count"]
    return keys

  def totals(self, batch):
    masked = jnp.sum(batch["masked_weights"].astype(jnp.float32))
    tokens = jnp.sum(self._token_weights(batch))
    counts = {"kd_count": masked, "mlm_count": masked, "cosine_count": tokens, "hidden_count": tokens,
              "attention_count": tokens, "value_count": tokens}
    return {k: counts[k] for k in self.count_keys()}

  def sums(self, params, batch, rng):
    missing = [k for k in self.teacher_keys if k not in batch]
    if missing:
      raise KeyError(f"the batch lacks {missing}: pass it through DistillationObjective.prepare_batch first")
    train = rng is not None
    maps = bool(self.alpha["attention"] or self.alpha["value"])
    result = self.student[not train].apply(
        {"params": self.student_params(params)}, batch["input_ids"], batch["attention_mask"],
        batch["token_type_ids"], segment_ids=batch.get("segment_ids"), masked_positions=batch["masked_positions"],
        rngs={"dropout": rng} if train else None, mutable=["intermediates"] if maps else False)
    out, state = result if maps else (result, None)
    sums = mlm_sums(out.logits, batch)  # logged even when alpha_mlm is 0: the metric plain MLM runs report
    tokens = self._token_weights(batch)
    if self.alpha["kd"]:
      masked = batch["masked_weights"].astype(jnp.float32)
      sums["kd_loss"] = soft_target_kl(out.logits, batch["teacher_logits"], self.temperature, masked)
      sums["kd_count"] = jnp.sum(masked)
    if self.alpha["hidden"] or self.alpha["cosine"]:
      hidden = out.last_hidden_state
      if self.needs_projection:
        hidden = self.projection.apply({"params": params[PROJECTION]}, hidden)
      if self.alpha["hidden"]:
        sums["hidden_loss"] = hidden_mse(hidden, batch["teacher_hidden"], tokens)
        sums["hidden_count"] = jnp.sum(tokens)
      if self.alpha["cosine"]:
        sums["cosine_loss"] = cosine_embedding_loss(hidden, batch["teacher_hidden"], tokens)
        sums["cosine_count"] = jnp.sum(tokens)
    if self.alpha["attention"]:
      probs = collect_attention(state["intermediates"], self.cfg)[-1]
      sums["attention_loss"] = attention_kl(probs, batch["teacher_attention"], tokens)
      sums["attention_count"] = jnp.sum(tokens)
    if self.alpha["value"]:
      values = collect_attention(state["intermediates"], self.cfg, "attention_values")[-1]
      relation = value_relation(values, self._key_mask(batch))
      sums["value_loss"] = attention_kl(relation, batch["teacher_values"], tokens)
      sums["value_count"] = jnp.sum(tokens)
    return sums
