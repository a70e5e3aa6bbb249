#!/usr/bin/env bash
# A separate virtual environment with the peers the benchmarks compare against:
# Hugging Face transformers + sentence-transformers on PyTorch (CPU) and KerasHub on
# the JAX backend. Never part of the core or test installs.
#
#   bash benchmarks/peers/setup.sh [VENV]      # default ~/.cache/bert_jax/peers
#
# torch is pinned (an unpinned torch pulls a multi-GB CUDA build); JAX is pinned to the
# version bert_jax runs with, so both JAX sides use the same XLA. keras-hub declares
# tensorflow-text (and so TensorFlow, ~2 GB) as a dependency although its backbones and
# task models run on JAX without it: it is installed without dependencies, and the
# ones it imports are listed here.
set -euo pipefail
venv="${1:-$HOME/.cache/bert_jax/peers}"
jax_version="$(python3 -c 'import jax; print(jax.__version__)' 2>/dev/null || echo 0.10.2)"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/pip" install -q "torch==2.13.0" transformers sentence-transformers "jax==$jax_version" "keras>=3.5"
"$venv/bin/pip" install -q --no-deps keras-hub
"$venv/bin/pip" install -q kagglehub regex rich namex optree ml_dtypes h5py absl-py packaging
"$venv/bin/python" - <<'PY'
import os
os.environ["KERAS_BACKEND"] = "jax"
import keras, keras_hub, torch, transformers, sentence_transformers, jax
print("peers ready:", f"torch {torch.__version__}, transformers {transformers.__version__},",
      f"sentence-transformers {sentence_transformers.__version__}, keras {keras.__version__},",
      f"keras-hub {keras_hub.__version__}, jax {jax.__version__}")
PY
echo "$venv/bin/python"
