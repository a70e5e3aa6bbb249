"""Mesh and logical-axis sharding: declared once, resolved here.

Parameters and key activations carry logical axis names (see models/layers.py);
the config's rules map those names onto the mesh axes ("data", "fsdp",
"tensor"). A logical name that no rule mentions is an error, never silent
replication; a rule may map a name to None to replicate it on purpose.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# (logical name, mesh axis or axes or None). Order matters: flax takes the first
# rule whose mesh axis is still free in that array.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("embed_out", "tensor"),
    ("embed_in", None),
    ("embed_factor", None),
    ("heads", "tensor"),
    ("heads_out", None),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("classes", None),
    ("position", None),
    ("token_type", None),
    ("relpos", None),
    ("norm", None),
    ("layers", None),
    ("conv_window", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


def mesh_shape(sizes: Mapping[str, int], device_count: int) -> tuple[int, int, int]:
  """Mesh sizes for (data, fsdp, tensor); one entry may be -1 (the remaining devices)."""
  shape = [int(sizes.get(a, 1)) for a in MESH_AXES]
  fill = [i for i, s in enumerate(shape) if s == -1]
  if len(fill) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, shape))}")
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh: sizes must be positive or -1, got {dict(zip(MESH_AXES, shape))}")
  known = int(np.prod([s for s in shape if s != -1]))
  if fill:
    if device_count % known:
      raise ValueError(f"mesh: {device_count} devices do not divide by {dict(zip(MESH_AXES, shape))}")
    shape[fill[0]] = device_count // known
  if int(np.prod(shape)) != device_count:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, shape))} needs {int(np.prod(shape))} devices; "
                     f"{device_count} are available")
  return tuple(shape)


def make_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ("data", "fsdp", "tensor") mesh with Auto axes (sharding constraints apply inside jit)."""
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(sizes, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def _leaves_with_names(boxed_tree):
  """(path string, logical names, shape) for every leaf; raises for a leaf without names."""
  out, unnamed = [], []
  for path, leaf in jax.tree_util.tree_flatten_with_path(
      boxed_tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]:
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    if isinstance(leaf, nn.LogicallyPartitioned):
      out.append((name, tuple(leaf.names), tuple(leaf.value.shape)))
    else:
      unnamed.append(name)
  if unnamed:
    raise ValueError(f"parameters without logical axis names: {unnamed[:10]}")
  return out


def resolve_spec(names: Sequence[str | None], shape: Sequence[int], rules, mesh_sizes: Mapping[str, int],
                 where: str = "array") -> tuple[PartitionSpec, list[str]]:
  """PartitionSpec for one array, and notes on dimensions left replicated.

  For each logical name, the first rule whose mesh axes are still free in this
  array and divide the dimension wins; a rule target of None replicates. A name
  with no rule raises. A dimension that no candidate divides (BERT's 30522-row
  vocabulary on tensor=4) stays replicated and is reported in the notes.
  """
  used: set[str] = set()
  spec, notes = [], []
  for name, dim in zip(names, shape):
    if name is None:
      spec.append(None)
      continue
    targets = [t for n, t in rules if n == name]
    if not targets:
      raise ValueError(f"{where}: logical axis {name!r} has no sharding rule (add one, e.g. ({name!r}, None))")
    choice = None
    for target in targets:
      axes = () if target is None else ((target,) if isinstance(target, str) else tuple(target))
      size = int(np.prod([mesh_sizes[a] for a in axes])) if axes else 1
      if any(a in used for a in axes):
        continue
      if dim % size:
        notes.append(f"{where}: dim {dim} ({name}) is not divisible by mesh {axes} = {size}; replicated")
        continue
      choice = axes
      break
    if choice:
      used.update(choice)
      spec.append(choice[0] if len(choice) == 1 else choice)
    else:
      spec.append(None)
  return PartitionSpec(*spec), notes


def param_specs(boxed_tree, rules, mesh_sizes: Mapping[str, int]) -> tuple[dict[str, PartitionSpec], list[str]]:
  """{param path: PartitionSpec} for a boxed abstract tree (jax.eval_shape of init), plus notes."""
  specs, notes = {}, []
  for name, names, shape in _leaves_with_names(boxed_tree):
    spec, leaf_notes = resolve_spec(names, shape, rules, mesh_sizes, where=name)
    specs[name] = spec
    notes += leaf_notes
  return specs, notes


def named_shardings(boxed_tree, mesh: Mesh, rules, log=None):
  """Tree of NamedShardings (same structure as the unboxed tree) on `mesh`."""
  sizes = dict(zip(mesh.axis_names, mesh.devices.shape))
  specs, notes = param_specs(boxed_tree, rules, sizes)
  for note in notes:
    (log or print)(note)
  leaves = _leaves_with_names(boxed_tree)
  structure = jax.tree.structure(nn.meta.unbox(boxed_tree))
  return jax.tree.unflatten(structure, [NamedSharding(mesh, specs[name]) for name, _, _ in leaves])


def rules_from_config(rules) -> tuple[tuple[str, object], ...]:
  """Normalises rules from a ConfigDict (lists become tuples)."""
  out = []
  for name, target in rules:
    if isinstance(target, list):
      target = tuple(target)
    out.append((name, target))
  return tuple(out)


# -- data parallelism for inference (bert_jax.embed, bert_jax.search, the re-ranker) --------------
#
# Inference shards only its batch: every device of every process holds the whole model and a block of
# the batch rows. Each process builds just the rows of its own devices, and results come back per block.

BATCH_SPEC = PartitionSpec(("data", "fsdp"))  # the rows of a batch, as DEFAULT_RULES shard "batch"


def data_parallel_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Every device (default: jax.devices(), all processes) on the "data" axis."""
  return make_mesh({"data": -1}, devices)


def batch_shards(mesh: Mesh) -> int:
  """How many blocks a batch's rows are split into: rows must be a multiple of this."""
  sizes = dict(zip(mesh.axis_names, mesh.devices.shape))
  return sizes["data"] * sizes["fsdp"]


def replicate(tree, mesh: Mesh):
  """`tree` (the same values on every process) placed whole on every device of `mesh`."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def to_host(tree):
  """`tree`'s arrays as numpy on every process, whatever their sharding (a collective with several
  processes: every process calls it, in the same order relative to other collectives).

  One jitted identity replicates the whole tree (one program, not one per leaf), then each process
  reads its first local copy.
  """
  leaves = jax.tree.leaves(tree)
  if jax.process_count() == 1 or all(getattr(x, "is_fully_addressable", True) for x in leaves):
    return jax.device_get(tree)
  mesh = next(x.sharding.mesh for x in leaves if isinstance(getattr(x, "sharding", None), NamedSharding))
  replicated = _replicator(mesh)(tree)
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), replicated)


@functools.lru_cache(maxsize=8)
def _replicator(mesh: Mesh):
  """One jitted identity per mesh (a fresh lambda each call would compile each call)."""
  return jax.jit(lambda tree: tree, out_shardings=NamedSharding(mesh, PartitionSpec()))


def local_row_blocks(rows: int, mesh: Mesh) -> dict[jax.Device, tuple[int, int]]:
  """(start, stop) of the batch rows each of this process's devices holds, for a batch of `rows`."""
  if rows % batch_shards(mesh):
    raise ValueError(f"a batch of {rows} rows does not split over {batch_shards(mesh)} devices")
  index = NamedSharding(mesh, BATCH_SPEC).addressable_devices_indices_map((rows,))
  return {device: slice_.indices(rows)[:2] for device, (slice_,) in index.items()}


def shard_rows(build, rows: int, mesh: Mesh) -> tuple[jax.Array, ...]:
  """Global arrays [rows, ...] split by rows over `mesh`, each process building only the rows it holds.

  build(start, stop) -> a tuple of numpy arrays [stop - start, ...], called once per block of rows
  this process holds (a block shared by several devices is built once).
  """
  sharding = NamedSharding(mesh, BATCH_SPEC)
  blocks = local_row_blocks(rows, mesh)
  built = {span: build(*span) for span in dict.fromkeys(blocks.values())}
  first = next(iter(built.values()))
  return tuple(
      jax.make_array_from_single_device_arrays(
          (rows, *first[k].shape[1:]), sharding,
          [jax.device_put(np.ascontiguousarray(built[span][k]), device) for device, span in blocks.items()])
      for k in range(len(first)))


def local_rows(array: jax.Array) -> list[tuple[int, np.ndarray]]:
  """(first row, rows) of each distinct block of `array` that this process holds, fetched to the host."""
  seen, out = set(), []
  for shard in array.addressable_shards:
    start = shard.index[0].indices(array.shape[0])[0] if shard.index else 0
    if start not in seen:
      seen.add(start)
      out.append((start, np.asarray(shard.data)))
  return out


def gather_rows(values: np.ndarray, rows: np.ndarray, total: int) -> np.ndarray:
  """[total, ...] on every process from each process's `values` [n, ...] for its `rows` [n] (disjoint).

  One process: values scattered into place. Several: an allgather of every process's rows
  (padded to the longest share), so process 0 can write one ordered output.
  """
  out = np.zeros((total, *values.shape[1:]), values.dtype)
  if jax.process_count() == 1:
    out[rows] = values
    return out
  from jax.experimental import multihost_utils
  longest = int(np.max(multihost_utils.process_allgather(np.int64(len(rows)))))
  padded_values = np.zeros((longest, *values.shape[1:]), values.dtype)
  padded_values[:len(rows)] = values
  padded_rows = np.full(longest, -1, np.int64)
  padded_rows[:len(rows)] = rows
  all_values, all_rows = multihost_utils.process_allgather((padded_values, padded_rows))
  used = all_rows >= 0
  out[all_rows[used]] = all_values[used]
  return out
