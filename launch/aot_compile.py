"""Compile the real train step of any config for a TPU slice ahead of time, on a CPU machine.

    pip install "jax[tpu]==0.10.2"        # libtpu, matching the installed jax; no TPU needed
    python launch/aot_compile.py --topology=v5p-64 --config=configs/pretrain.py:bert-large \
        --config.batch_size=1024 --config.data.max_length=512 --config.mesh.fsdp=-1 --config.mesh.data=1 \
        --config.model.dtype=bfloat16

Builds exactly what `bert_jax.main` runs (model, objective, optimizer, the
(data, fsdp, tensor) mesh over the slice's chips, parameter and state
shardings, batch sharding, donation) from abstract shapes only: nothing is
allocated. It lowers and compiles the train step for the named topology with
libtpu's compiler and prints, per chip: parameter + optimizer state, batch,
XLA's temporaries and the total against the chip's HBM, whether it fits, the
model FLOPs of one step and the step time and tokens/s that 40% MFU would give.
A program that does not fit is reported as such (the compiler's own
out-of-memory verdict), with the numbers it gave.

`--config.model.attention_impl=splash` compiles the Pallas splash kernel (models/splash.py)
for the TPU: global layers with the packed rows' segment ids, ModernBERT's local layers with
its sliding window as well; the kernel has no probability dropout and no score bias, so
BERT needs `--config.model.attention_dropout_rate=0` and DeBERTa / MPNet are refused.

Topologies: v4-8 ... v4-4096, v5e-1 ... v5e-256, v5p-8 ... v5p-1024, v6e-1 ... v6e-256
(the chip counts of Cloud TPU slice names), or a raw libtpu name such as `v5e:4x4`.
`--topology=cpu` compiles for this machine's CPU devices instead (handy for testing;
use XLA_FLAGS=--xla_force_host_platform_device_count=N for N of them).
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys

# Compile for TPU from a CPU process: JAX itself must not try to open a TPU backend here.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.DEFINE_string("topology", None, "TPU slice (v5p-64, v5e-16, v4-32, v6e-16, or v5e:4x4) or cpu.")
flags.DEFINE_float("mfu", 0.4, "MFU assumed for the step-time estimate.")
flags.DEFINE_string("json", "", "Also write the report as JSON to this file.")
flags.mark_flags_as_required(["config", "topology"])

GiB = 1024 ** 3
# Per generation: (libtpu topology prefix, chip config, chips per host, HBM bytes per chip, bf16 peak FLOP/s).
GENERATIONS = {
    "v4": ("v4", "megacore", (2, 2, 1), 32 * GiB, 275e12),
    "v5e": ("v5e", "default", (2, 2, 1), 16 * GiB, 197e12),
    "v5p": ("v5", "megacore", (2, 2, 1), 95 * GiB, 459e12),
    "v6e": ("v6e", "default", (2, 2, 1), 32 * GiB, 918e12),
}
# Slice shapes by chip count (Cloud TPU's names count TensorCores for v4/v5p: 2 per chip).
SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
             512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16"}
SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}


def parse_topology(name: str) -> dict:
  """'v5p-64' -> libtpu topology name, chip config, host bounds, chips, HBM per chip, peak FLOP/s."""
  raw = re.fullmatch(r"(v4|v5e|v5|v6e):(\d+(?:x\d+)+)", name)
  match = re.fullmatch(r"(v4|v5e|v5p|v6e)-(\d+)", name)
  if raw:
    generation = {"v5": "v5p"}.get(raw.group(1), raw.group(1))
    dims = [int(d) for d in raw.group(2).split("x")]
    chips, topology = int(__import__("math").prod(dims)), name
  elif match:
    generation, count = match.group(1), int(match.group(2))
    chips = count // 2 if generation in ("v4", "v5p") else count
    shapes = SHAPES_3D if generation in ("v4", "v5p") else SHAPES_2D
    if chips not in shapes:
      per_chip = 2 if generation in ("v4", "v5p") else 1
      known = [f"{generation}-{c * per_chip}" for c in shapes]
      raise SystemExit(f"--topology={name}: no {generation} slice with {chips} chips; expected one of {known}")
    topology = f"{GENERATIONS[generation][0]}:{shapes[chips]}"
  else:
    raise SystemExit(f"--topology={name!r}: expected a slice name like v5p-64, v5e-16, v4-32, v6e-8, or v5e:4x4")
  prefix, chip_config, host_bounds, hbm, peak = GENERATIONS[generation]
  if chips < 4:
    host_bounds = (1, chips, 1) if generation in ("v5e", "v6e") else host_bounds
  return {"name": name, "topology": topology, "chip_config": chip_config, "host_bounds": host_bounds,
          "chips": chips, "hbm_bytes": hbm, "peak_flops": peak}


def batch_shapes(config, data_objective: str) -> dict:
  """The pretraining loader's batch (see bert_jax/data/pretraining_data.py) as ShapeDtypeStructs, global."""
  import jax
  import jax.numpy as jnp
  b, length, m = config.batch_size, config.data.max_length, config.data.max_predictions
  shapes = {"input_ids": (b, length), "attention_mask": (b, length), "token_type_ids": (b, length),
            "masked_positions": (b, m), "masked_ids": (b, m)}
  out = {k: jax.ShapeDtypeStruct(s, jnp.int32) for k, s in shapes.items()}
  out["masked_weights"] = jax.ShapeDtypeStruct((b, m), jnp.float32)
  out["example_weights"] = jax.ShapeDtypeStruct((b,), jnp.float32)
  if data_objective in ("mlm_nsp", "mlm_sop"):
    out["pair_labels"] = jax.ShapeDtypeStruct((b,), jnp.int32)
  if config.data.packing:
    out["segment_ids"] = jax.ShapeDtypeStruct((b, length), jnp.int32)
  return out


def compile_for(config, devices, chip: dict) -> dict:
  """Lowers and compiles the train step for `devices`; returns the per-chip report."""
  import flax.linen as nn
  import jax
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P

  from bert_jax import config_lib, loop, sharding, steps, train
  from bert_jax.models import flops
  from bert_jax.runtime import hardware
  from bert_jax.tasks import registry
  cfg = config_lib.model_config(config)
  rules = sharding.rules_from_config(config.sharding_rules)
  mesh = sharding.make_mesh(config.mesh.to_dict(), devices)
  loop.validate(config, mesh, cfg)
  objective = train.make_objective(config, cfg)
  total_steps = max(int(config.total_steps), 1)
  setup = loop.setup_state(objective, config.optimizer, total_steps, cfg.num_layers, train.input_shape(config),
                           mesh, rules)
  abstract_params, state_in, shardings = setup.abstract_params, setup.abstract, setup.shardings
  batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
  data_objective = registry.get(config.objective, registry.PRETRAIN).data_objective
  batch_in = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
              for k, v in batch_shapes(config, data_objective).items()}
  step = jax.jit(functools.partial(steps.train_step, objective=objective, tx=setup.tx, schedule=setup.schedule,
                                   accum_steps=int(config.optimizer.grad_accum_steps)),
                 in_shardings=(shardings, batch_sharding), out_shardings=(shardings, NamedSharding(mesh, P())),
                 donate_argnums=(0,))

  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params))
  state_bytes = sum(_shard_bytes(a) for a in jax.tree.leaves(state_in))
  batch_bytes = sum(_shard_bytes(a) for a in jax.tree.leaves(batch_in))
  model_flops = flops.train_flops(cfg, config.batch_size, config.data.max_length, config.data.max_predictions)
  report = {"topology": chip["name"], "libtpu_topology": chip.get("topology"), "chips": len(devices),
            "mesh": dict(zip(mesh.axis_names, mesh.devices.shape)), "family": cfg.family,
            "params": n_params, "batch_size": config.batch_size, "max_length": config.data.max_length,
            "dtype": cfg.dtype, "remat": cfg.remat_policy, "attention_impl": cfg.attention_impl,
            "scan_layers": cfg.scan_layers,
            "state_gib_per_chip": state_bytes / GiB, "batch_gib_per_chip": batch_bytes / GiB,
            "model_tflops_per_step": model_flops / 1e12}
  try:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      compiled = step.lower(state_in, batch_in).compile()
  except Exception as e:  # noqa: BLE001 - the compiler's verdict is the answer
    text = str(e)
    report["fits"] = False
    report["error"] = ("out of memory: " if "RESOURCE_EXHAUSTED" in text or "memory" in text.lower() else "") + \
        text.strip().splitlines()[0][:600]
    return report
  memory = compiled.memory_analysis()
  if memory is not None:
    temp = getattr(memory, "temp_size_in_bytes", 0)
    args = getattr(memory, "argument_size_in_bytes", 0)
    out = getattr(memory, "output_size_in_bytes", 0)
    alias = getattr(memory, "alias_size_in_bytes", 0)
    code = getattr(memory, "generated_code_size_in_bytes", 0)
    total = args + out - alias + temp + code
    report.update(arguments_gib=args / GiB, temporaries_gib=temp / GiB, total_gib_per_chip=total / GiB)
  else:
    total = state_bytes + batch_bytes
    report["total_gib_per_chip"] = total / GiB
  if chip.get("hbm_bytes"):
    report["hbm_gib_per_chip"] = chip["hbm_bytes"] / GiB
    report["fits"] = total <= chip["hbm_bytes"]
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  if analysis and analysis.get("flops"):
    report["xla_tflops_per_chip"] = float(analysis["flops"]) / 1e12
  if chip.get("peak_flops"):
    seconds = model_flops / (FLAGS.mfu * chip["peak_flops"] * len(devices))
    report[f"step_s_at_{int(FLAGS.mfu * 100)}pct_mfu"] = seconds
    report["tokens_per_s_estimate"] = config.batch_size * config.data.max_length / seconds
  return report


def _shard_bytes(struct) -> int:
  shape = struct.sharding.shard_shape(struct.shape)
  return int(__import__("numpy").prod(shape, dtype="int64")) * struct.dtype.itemsize


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax
  if FLAGS.topology == "cpu":
    chip = {"name": "cpu"}
    devices = jax.devices("cpu")
  else:
    from jax.experimental import topologies
    chip = parse_topology(FLAGS.topology)
    try:
      desc = topologies.get_topology_desc(platform="tpu", topology_name=chip["topology"],
                                          chip_config_name=chip["chip_config"],
                                          chips_per_host_bounds=chip["host_bounds"], num_slices=1)
    except Exception as e:  # noqa: BLE001
      raise SystemExit(f"cannot describe TPU topology {chip['topology']} ({type(e).__name__}: {e}); is libtpu "
                       'installed? pip install "jax[tpu]==' + jax.__version__ + '"') from None
    devices = desc.devices
  report = compile_for(FLAGS.config, devices, chip)
  print(format_report(report))
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(report, f, indent=2)
  if report.get("fits") is False:
    sys.exit(2)


def format_report(r: dict) -> str:
  lines = [f"{r['family']} ({r['params']:,} params with heads), batch {r['batch_size']} x {r['max_length']}, "
           f"{r['dtype']}, remat {r['remat']}, attention {r.get('attention_impl', 'xla')} on {r['topology']} "
           f"({r['chips']} chips), mesh {r['mesh']}"]
  lines.append(f"  params + optimizer state per chip: {r['state_gib_per_chip']:.2f} GiB; "
               f"batch per chip: {r['batch_gib_per_chip'] * 1024:.1f} MiB")
  if "error" in r:
    lines.append(f"  DOES NOT COMPILE: {r['error']}")
    return "\n".join(lines)
  if "temporaries_gib" in r:
    lines.append(f"  XLA: arguments {r['arguments_gib']:.2f} GiB, temporaries {r['temporaries_gib']:.2f} GiB, "
                 f"total {r['total_gib_per_chip']:.2f} GiB per chip")
  if "hbm_gib_per_chip" in r:
    verdict = "fits" if r["fits"] else "DOES NOT FIT"
    lines.append(f"  HBM per chip {r['hbm_gib_per_chip']:.0f} GiB: {verdict}")
  lines.append(f"  model FLOPs per step: {r['model_tflops_per_step']:.1f} TFLOP")
  key = next((k for k in r if k.startswith("step_s_at_")), None)
  if key:
    lines.append(f"  at {key.split('_at_')[1].replace('pct_mfu', '% MFU')}: {r[key]:.3f} s/step, "
                 f"{r['tokens_per_s_estimate']:,.0f} tokens/s")
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main)
