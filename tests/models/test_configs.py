"""T5Config validation, named sizes and the gin files of gin/models/."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gin
import pytest

from onesearch_jax.configurables import ConfiguredT5
from onesearch_jax.models.configs import NAMED_SIZES, T5Config, named_config

GIN_MODELS = Path(__file__).resolve().parents[2] / "gin" / "models"
TINY = dict(d_model=8, d_kv=4, d_ff=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1)


def test_defaults_and_keyword_only():
    config = T5Config(vocab_size=10, **TINY)
    assert (config.relative_attention_num_buckets, config.relative_attention_max_distance) == (32, 128)
    assert (config.dtype, config.layer_norm_epsilon, config.tie_word_embeddings) == ("bfloat16", 1e-6, False)
    with pytest.raises(TypeError):
        T5Config(10, 8, 4, 16, 2, 1, 1)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.d_model = 16  # type: ignore[misc]
    assert config.replace(dtype="float32").dtype == "float32"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(vocab_size=0), "vocab_size must be a positive int"),
        (dict(d_model=8.0), "d_model must be a positive int"),
        (dict(num_heads=True), "num_heads must be a positive int"),
        (dict(num_decoder_layers=-1), "num_decoder_layers must be a positive int"),
        (dict(relative_attention_num_buckets=7), "even int >= 4"),
        (dict(relative_attention_num_buckets=2), "even int >= 4"),
        (dict(relative_attention_max_distance=16), "above relative_attention_num_buckets // 2"),
        (dict(dropout_rate=1.0), "dropout_rate must be in"),
        (dict(dropout_rate=-0.1), "dropout_rate must be in"),
        (dict(tie_word_embeddings=1), "tie_word_embeddings must be a bool"),
        (dict(dtype="float64"), "dtype must be one of"),
        (dict(layer_norm_epsilon=0.0), "layer_norm_epsilon must be > 0"),
    ],
)
def test_validation(change, message):
    with pytest.raises(ValueError, match=message):
        T5Config(**{"vocab_size": 10, **TINY, **change})


def test_named_config():
    small = named_config("small", vocab_size=32128, dtype="float32")
    assert (small.d_model, small.d_ff, small.num_heads, small.num_encoder_layers) == (512, 1024, 6, 8)
    assert small.dtype == "float32"
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        named_config("huge", vocab_size=10)


@pytest.mark.parametrize("name", sorted(NAMED_SIZES))
def test_gin_files_bind_the_named_sizes(name):
    gin.clear_config()
    try:
        gin.parse_config_file(str(GIN_MODELS / f"{name}.gin"))
        config = ConfiguredT5(vocab_size=1000)  # the vocabulary's size comes from the caller
    finally:
        gin.clear_config()
    assert config == named_config(name, vocab_size=1000)


def test_gin_file_without_vocab_size_needs_the_caller():
    gin.clear_config()
    try:
        gin.parse_config_file(str(GIN_MODELS / "tiny.gin"))
        with pytest.raises(TypeError, match="vocab_size"):
            ConfiguredT5()
    finally:
        gin.clear_config()
