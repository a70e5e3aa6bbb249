"""Parameter shapes and partition specs of each family's tiny config, as pinned in tests/testdata/partition_specs.

Regenerate after an intended change with `python tests/structure.py` and review the diff.
"""

import json
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bert_jax import sharding  # noqa: E402
from bert_jax.models import build  # noqa: E402
from bert_jax.models.model import EncoderModel  # noqa: E402

GOLDEN_DIR = pathlib.Path(__file__).parent / "testdata" / "partition_specs"
MESH = {"data": 2, "fsdp": 2, "tensor": 2}
CASES = {
    "bert": dict(family="bert", head="pretraining"),
    "roberta": dict(family="roberta", head="mlm"),
    "albert": dict(family="albert", head="pretraining"),
    "deberta": dict(family="deberta", head="mlm"),
}


def structure(family: str, head: str) -> dict:
  model = EncoderModel(build(family, "tiny", scan_layers=family != "albert"), head=head)
  boxed = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8), jnp.int32))["params"]
  specs, _ = sharding.param_specs(boxed, sharding.DEFAULT_RULES, MESH)
  out = {}
  for name, names, shape in sharding._leaves_with_names(boxed):
    out[name] = {"shape": list(shape), "logical": list(names),
                 "spec": [list(s) if isinstance(s, tuple) else s for s in specs[name]]}
  return out


if __name__ == "__main__":
  GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
  for case, kw in CASES.items():
    (GOLDEN_DIR / f"{case}.json").write_text(json.dumps(structure(**kw), indent=1, sort_keys=True) + "\n")
    print("wrote", GOLDEN_DIR / f"{case}.json")
