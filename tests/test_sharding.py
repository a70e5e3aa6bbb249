"""Sharding: golden parameter shapes / partition specs per family, and the rules' error paths."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from tests import structure
from bert_jax import sharding


@pytest.mark.parametrize("case", sorted(structure.CASES))
def test_structure_matches_golden(case):
  golden = json.loads((structure.GOLDEN_DIR / f"{case}.json").read_text())
  current = json.loads(json.dumps(structure.structure(**structure.CASES[case])))
  assert sorted(current) == sorted(golden), "parameter set changed"
  for name in golden:
    assert current[name] == golden[name], name


def test_mesh_fill_and_errors():
  assert sharding.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)
  assert sharding.mesh_shape({"data": 1, "fsdp": -1, "tensor": 1}, 8) == (1, 8, 1)
  with pytest.raises(ValueError, match="at most one axis"):
    sharding.mesh_shape({"data": -1, "fsdp": -1}, 8)
  with pytest.raises(ValueError, match="needs 12 devices"):
    sharding.mesh_shape({"data": 3, "fsdp": 4, "tensor": 1}, 8)
  with pytest.raises(ValueError, match="do not divide"):
    sharding.mesh_shape({"data": -1, "fsdp": 3}, 8)


def test_unknown_logical_axis_raises():
  class Odd(nn.Module):
    @nn.compact
    def __call__(self, x):
      w = self.param("w", nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "mystery")), (4, 4))
      return x @ w
  boxed = jax.eval_shape(Odd().init, jax.random.key(0), jnp.zeros((1, 4)))["params"]
  with pytest.raises(ValueError, match="'mystery' has no sharding rule"):
    sharding.param_specs(boxed, sharding.DEFAULT_RULES, {"data": 1, "fsdp": 2, "tensor": 2})


def test_unnamed_parameter_raises():
  boxed = jax.eval_shape(nn.Dense(3).init, jax.random.key(0), jnp.zeros((1, 4)))["params"]
  with pytest.raises(ValueError, match="without logical axis names"):
    sharding.param_specs(boxed, sharding.DEFAULT_RULES, {"data": 1, "fsdp": 1, "tensor": 1})


def test_resolution_by_hand():
  rules = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("vocab", "tensor"), ("length", None))
  sizes = {"data": 2, "fsdp": 2, "tensor": 4}
  # fsdp is taken by batch, so embed stays replicated in an activation.
  assert sharding.resolve_spec(("batch", "length", "embed"), (8, 16, 32), rules, sizes)[0] == P(("data", "fsdp"), None, None)
  # 30522 rows do not divide by 4: replicated, with a note.
  spec, notes = sharding.resolve_spec(("vocab", "embed"), (30522, 64), rules, sizes)
  assert spec == P(None, "fsdp") and "30522" in notes[0]


def test_named_shardings_place_params_on_8_devices():
  from bert_jax.models import build
  from bert_jax.models.model import EncoderModel
  assert jax.device_count() == 8
  model = EncoderModel(build("bert", "tiny", scan_layers=True), head="mlm")
  ids = jnp.ones((8, 16), jnp.int32)
  boxed = jax.eval_shape(model.init, jax.random.key(0), ids)["params"]
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  shardings = sharding.named_shardings(boxed, mesh, sharding.DEFAULT_RULES)
  init = jax.jit(lambda k: nn.meta.unbox(model.init(k, ids)["params"]), out_shardings=shardings)
  params = init(jax.random.key(0))
  kernel = params["encoder"]["layers"]["mlp"]["wi"]["kernel"]
  assert kernel.sharding.spec == P(None, "fsdp", "tensor")
  assert kernel.addressable_shards[0].data.shape == (2, 64, 256)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.DEFAULT_RULES):
    out = jax.jit(model.apply)({"params": params}, ids)
  single = model.apply({"params": jax.device_get(params)}, ids)
  np.testing.assert_allclose(out.logits, single.logits, atol=1e-5)
