"""The T5 v1.1 encoder-decoder (Flax NNX), its configs and the HF checkpoint importer.

``T5Config`` and the named sizes import without jax (gin registers them before anything else);
the model classes load jax and flax on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from onesearch_jax.models.configs import DTYPES, NAMED_SIZES, PAD_ID, T5Config, named_config

_LAZY = {
    "EncoderDecoder": "onesearch_jax.models.encoder_decoder",
    "abstract_model": "onesearch_jax.models.encoder_decoder",
    "param_count": "onesearch_jax.models.encoder_decoder",
    "load_hf_t5": "onesearch_jax.models.convert",
}

__all__ = ["DTYPES", "NAMED_SIZES", "PAD_ID", "T5Config", "named_config", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
