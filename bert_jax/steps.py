"""Pure train and eval steps: no I/O, no globals. State is donated; dropout keys are fold_in(rng, step).

Batch (per step, global): input_ids / attention_mask / token_type_ids int32 [B, L],
masked_positions / masked_ids int32 [B, M], masked_weights float32 [B, M],
optional pair_labels int32 [B] (NSP / SOP) and segment_ids int32 [B, L] (packing).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from bert_jax.models.model import EncoderModel


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 []
  params: Any
  opt_state: Any
  rng: jax.Array           # uint32 key data [2]: checkpoints hold plain arrays
  skipped: jax.Array       # int32 []: updates skipped for non-finite gradients


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-position cross entropy in float32: logits [..., V], labels [...] -> [...]."""
  logits = logits.astype(jnp.float32)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def objective_sums(out, batch: dict, with_pair: bool) -> dict[str, jax.Array]:
  """Sums and counts (not means), so micro-batches and eval batches add up exactly."""
  weights = batch["masked_weights"].astype(jnp.float32)
  ce = cross_entropy(out.logits, batch["masked_ids"])
  correct = (jnp.argmax(out.logits, -1) == batch["masked_ids"]).astype(jnp.float32)
  sums = {"mlm_loss": jnp.sum(ce * weights), "mlm_correct": jnp.sum(correct * weights),
          "mlm_count": jnp.sum(weights)}
  if with_pair:
    labels = batch["pair_labels"]
    valid = batch.get("pair_weights", jnp.ones(labels.shape, jnp.float32))
    sums["pair_loss"] = jnp.sum(cross_entropy(out.pair_logits, labels) * valid)
    sums["pair_correct"] = jnp.sum((jnp.argmax(out.pair_logits, -1) == labels) * valid)
    sums["pair_count"] = jnp.sum(valid)
  return sums


def _forward(model: EncoderModel, params, batch: dict, rng) -> Any:
  return model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                     segment_ids=batch.get("segment_ids"), masked_positions=batch["masked_positions"],
                     rngs={"dropout": rng} if rng is not None else None)


def _loss_from_sums(sums: dict, totals: dict) -> jax.Array:
  loss = sums["mlm_loss"] / jnp.maximum(totals["mlm_count"], 1.0)
  if "pair_loss" in sums:
    loss = loss + sums["pair_loss"] / jnp.maximum(totals["pair_count"], 1.0)
  return loss


def _split(batch: dict, parts: int) -> dict:
  """[B, ...] -> [parts, B / parts, ...] for gradient accumulation."""
  return jax.tree.map(lambda x: x.reshape((parts, x.shape[0] // parts) + x.shape[1:]), batch)


def train_step(state: TrainState, batch: dict, *, model: EncoderModel, tx: optax.GradientTransformation,
               schedule: optax.Schedule, accum_steps: int = 1, with_pair: bool = False):
  """One optimizer step over the global batch (accum_steps micro-batches, summed exactly).

  A non-finite loss or gradient leaves params and optimizer state unchanged and
  sets metrics["nonfinite"]; the trainer then skips or stops, by config.
  """
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  totals = {"mlm_count": jnp.sum(batch["masked_weights"])}
  if with_pair:
    totals["pair_count"] = jnp.sum(batch.get("pair_weights", jnp.ones(batch["pair_labels"].shape)))

  def micro_loss(params, micro, micro_rng):
    sums = objective_sums(_forward(model, params, micro, micro_rng), micro, with_pair)
    return _loss_from_sums(sums, totals), sums

  grad_fn = jax.value_and_grad(micro_loss, has_aux=True)
  if accum_steps == 1:
    (loss, sums), grads = grad_fn(state.params, batch, rng)
  else:
    def body(carry, xs):
      micro, index = xs
      (micro_loss_value, micro_sums), micro_grads = grad_fn(state.params, micro, jax.random.fold_in(rng, index))
      acc_loss, acc_sums, acc_grads = carry
      return (acc_loss + micro_loss_value, jax.tree.map(jnp.add, acc_sums, micro_sums),
              jax.tree.map(jnp.add, acc_grads, micro_grads)), None
    keys = ["mlm_loss", "mlm_correct", "mlm_count"] + (["pair_loss", "pair_correct", "pair_count"] if with_pair else [])
    init = (jnp.zeros((), jnp.float32), {k: jnp.zeros((), jnp.float32) for k in keys},
            jax.tree.map(jnp.zeros_like, state.params))
    (loss, sums, grads), _ = jax.lax.scan(body, init, (_split(batch, accum_steps), jnp.arange(accum_steps)))

  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
  new_state = state.replace(step=state.step + 1, params=keep(new_params, state.params),
                            opt_state=keep(new_opt_state, state.opt_state),
                            skipped=state.skipped + (~finite).astype(jnp.int32))
  metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state.step),
             "nonfinite": (~finite).astype(jnp.int32), **summarize(sums)}
  return new_state, metrics


def summarize(sums: dict) -> dict[str, jax.Array]:
  """Means from sums: mlm_loss, mlm_accuracy (+ pair_loss, pair_accuracy)."""
  out = {"mlm_loss": sums["mlm_loss"] / jnp.maximum(sums["mlm_count"], 1.0),
         "mlm_accuracy": sums["mlm_correct"] / jnp.maximum(sums["mlm_count"], 1.0)}
  if "pair_loss" in sums:
    out["pair_loss"] = sums["pair_loss"] / jnp.maximum(sums["pair_count"], 1.0)
    out["pair_accuracy"] = sums["pair_correct"] / jnp.maximum(sums["pair_count"], 1.0)
  return out


def eval_step(params, batch: dict, *, model: EncoderModel, with_pair: bool = False) -> dict[str, jax.Array]:
  """Sums over one validation batch (deterministic model); the trainer adds them up over batches."""
  return objective_sums(_forward(model, params, batch, None), batch, with_pair)
