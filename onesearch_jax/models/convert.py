"""Import a Hugging Face T5 v1.1 checkpoint (``T5ForConditionalGeneration``) into :class:`EncoderDecoder`.

The checkpoint is a directory with ``config.json`` and ``model.safetensors`` (or a sharded
``model.safetensors.index.json``), read with the ``safetensors`` numpy API: no torch at run time.

Names and layouts (HF ``nn.Linear`` weights are ``[out, in]``; ours are ``[in, out]``)::

    shared.weight                                        -> token_embedder.embedding      [V, D]
    {enc,dec}oder.block.0.layer.0.SelfAttention
        .relative_attention_bias.weight  [buckets, H]    -> {enc,dec}oder.relpos_bias.rel_embedding  [H, buckets]
    encoder.block.i.layer.0.layer_norm.weight            -> encoder.layers.i.pre_attention_layer_norm.scale
    encoder.block.i.layer.0.SelfAttention.{q,k,v}.weight -> encoder.layers.i.attention.{query,key,value}  [D, H, d_kv]
    encoder.block.i.layer.0.SelfAttention.o.weight       -> encoder.layers.i.attention.out                 [H, d_kv, D]
    encoder.block.i.layer.1.layer_norm.weight            -> encoder.layers.i.pre_mlp_layer_norm.scale
    encoder.block.i.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight -> encoder.layers.i.mlp.{wi_0,wi_1,wo}
    encoder.final_layer_norm.weight                      -> encoder.encoder_norm.scale
    decoder.block.i.layer.0.{layer_norm, SelfAttention}  -> decoder.layers.i.{pre_self_attention_layer_norm,
                                                                              self_attention}
    decoder.block.i.layer.1.{layer_norm, EncDecAttention}-> decoder.layers.i.{pre_cross_attention_layer_norm,
                                                                              encoder_decoder_attention}
    decoder.block.i.layer.2.{layer_norm, DenseReluDense} -> decoder.layers.i.{pre_mlp_layer_norm, mlp}
    decoder.final_layer_norm.weight                      -> decoder.decoder_norm.scale
    lm_head.weight                                       -> lm_head   [D, V]

Output layer. HF scales the decoder output by ``d_model**-0.5`` when ``scale_decoder_outputs``
(transformers 5 writes it; older configs mean it by ``tie_word_embeddings``) and multiplies by
``lm_head.weight``, which transformers 5 shares with ``shared.weight`` unless the checkpoint holds
a different ``lm_head.weight``. :func:`output_layer` maps each case to our two layouts: tied
(scaled, embedding as head) or untied (own head, the scale folded into it when HF scales).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, so bf16 checkpoints load)
import numpy as np
from flax import nnx
from safetensors import safe_open

from onesearch_jax.models.configs import T5Config
from onesearch_jax.models.encoder_decoder import EncoderDecoder, abstract_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
SUPPORTED_MODEL_TYPES = ("t5", "mt5")  # mT5 is T5 v1.1 with another vocabulary; umT5 differs
# Present in some checkpoints, unused by T5 (HF ignores it on load too).
IGNORED_TENSORS = frozenset({"decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"})
# Copies of shared.weight that older checkpoints store; they must equal it.
EMBEDDING_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# Fields of T5Config that a caller may choose for an imported checkpoint (the rest is its shape).
OVERRIDABLE = ("dropout_rate", "dtype")

Path_ = str | os.PathLike[str]
Transform = Callable[[np.ndarray], np.ndarray]


class CheckpointError(ValueError):
    """The checkpoint does not describe a T5 v1.1 model this importer can load."""


def read_hf_config(directory: Path_) -> dict[str, Any]:
    """``config.json`` of an HF checkpoint directory, as a dict."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found: an HF checkpoint directory holds config.json and model.safetensors")
    return json.loads(path.read_text())


def read_safetensors(directory: Path_) -> dict[str, np.ndarray]:
    """Every tensor of ``model.safetensors`` (or of the shards its index names), as numpy arrays."""
    directory = Path(directory)
    index = directory / WEIGHTS_INDEX_FILE
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / WEIGHTS_FILE).is_file():
        files = [WEIGHTS_FILE]
    else:
        raise CheckpointError(
            f"no {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} in {directory} (PyTorch .bin checkpoints are not read: "
            "re-save with save_pretrained(safe_serialization=True))"
        )
    tensors: dict[str, np.ndarray] = {}
    for name in files:
        with safe_open(str(directory / name), framework="numpy") as f:
            for key in f.keys():  # noqa: SIM118  (safe_open is not a Mapping)
                tensors[key] = f.get_tensor(key)
    return tensors


def config_from_hf(hf_config: Mapping[str, Any], *, tie_word_embeddings: bool, **overrides: Any) -> T5Config:
    """:class:`T5Config` of an HF T5 ``config.json``.

    Args:
        hf_config: the parsed ``config.json``.
        tie_word_embeddings: our output layout, from :func:`output_layer` (HF's flag does not say it).
        **overrides: ``dropout_rate`` and/or ``dtype`` (default: HF's dropout_rate, float32).

    Raises:
        CheckpointError: not a T5 v1.1 (gated-GELU) encoder-decoder, or a field is missing.
    """
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise ValueError(
            f"only {OVERRIDABLE} may be overridden on import (the rest is the checkpoint's shape), got {unknown}"
        )
    model_type = hf_config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(f"config.json model_type is {model_type!r}; supported: {SUPPORTED_MODEL_TYPES}")
    proj = hf_config.get("feed_forward_proj", "relu")
    if proj != "gated-gelu":
        raise CheckpointError(
            f"config.json feed_forward_proj is {proj!r}: only T5 v1.1's 'gated-gelu' (gated tanh-GELU MLP with "
            "wi_0/wi_1/wo) is supported, not original T5's 'relu' or other activations"
        )
    missing = [k for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_layers") if k not in hf_config]
    if missing:
        raise CheckpointError(f"config.json lacks {missing}")
    num_layers = hf_config["num_layers"]
    fields: dict[str, Any] = dict(
        vocab_size=hf_config["vocab_size"],
        d_model=hf_config["d_model"],
        d_kv=hf_config["d_kv"],
        d_ff=hf_config["d_ff"],
        num_heads=hf_config["num_heads"],
        num_encoder_layers=num_layers,
        num_decoder_layers=hf_config.get("num_decoder_layers") or num_layers,
        relative_attention_num_buckets=hf_config.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf_config.get("relative_attention_max_distance", 128),
        dropout_rate=float(hf_config.get("dropout_rate", 0.1)),
        layer_norm_epsilon=float(hf_config.get("layer_norm_epsilon", 1e-6)),
        tie_word_embeddings=tie_word_embeddings,
        dtype="float32",
    )
    return T5Config(**{**fields, **overrides})


def hf_scales_decoder_outputs(hf_config: Mapping[str, Any]) -> bool:
    """Whether HF multiplies the decoder output by ``d_model**-0.5`` before ``lm_head``."""
    if "scale_decoder_outputs" in hf_config:  # transformers >= 5
        return bool(hf_config["scale_decoder_outputs"])
    return bool(hf_config.get("tie_word_embeddings", True))  # transformers 4: the flag meant it


def output_layer(hf_config: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> tuple[bool, np.ndarray | None]:
    """Our output layer for an HF checkpoint: ``(tie_word_embeddings, lm_head [V, D] in HF layout or None)``.

    * scaled, no separate head (or a head equal to the embedding): tied;
    * not scaled: untied, the head being ``lm_head.weight`` or, when absent, a copy of the
      embedding (transformers 5 shares them even for ``tie_word_embeddings=False``);
    * scaled with a different head: untied with the scale folded into the head.
    """
    scale = hf_scales_decoder_outputs(hf_config)
    shared = tensors.get("shared.weight")
    head = tensors.get("lm_head.weight")
    same = head is None or (shared is not None and head.shape == shared.shape and np.array_equal(head, shared))
    if scale and same:
        return True, None
    if head is None:
        head = shared
    if head is None:
        return False, None  # the missing shared.weight is reported by the caller
    head = np.asarray(head, dtype=np.float32)
    if scale:
        head = head * np.float32(hf_config["d_model"] ** -0.5)
    return False, head


def _linear(shape: tuple[int, ...]) -> Transform:
    """HF ``[out, in]`` -> ours ``[in, ...]`` reshaped to ``shape``."""
    return lambda w: np.ascontiguousarray(w.T).reshape(shape)


def _identity(w: np.ndarray) -> np.ndarray:
    return w


def _transpose(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.T)


def name_map(config: T5Config) -> dict[tuple[str | int, ...], tuple[str, Transform]]:
    """Our parameter path -> (HF tensor name, HF-to-ours transform), for every parameter but ``lm_head``."""
    d, h, k = config.d_model, config.num_heads, config.d_kv
    q_kv = _linear((d, h, k))
    out = _linear((h, k, d))
    mapping: dict[tuple[str | int, ...], tuple[str, Transform]] = {
        ("token_embedder", "embedding"): ("shared.weight", _identity),
        ("encoder", "encoder_norm", "scale"): ("encoder.final_layer_norm.weight", _identity),
        ("decoder", "decoder_norm", "scale"): ("decoder.final_layer_norm.weight", _identity),
    }
    for stack in ("encoder", "decoder"):
        mapping[(stack, "relpos_bias", "rel_embedding")] = (
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            _transpose,
        )

    def attention(ours: tuple[str | int, ...], hf: str) -> None:
        for mine, theirs in (("query", "q"), ("key", "k"), ("value", "v")):
            mapping[(*ours, mine)] = (f"{hf}.{theirs}.weight", q_kv)
        mapping[(*ours, "out")] = (f"{hf}.o.weight", out)

    def mlp(ours: tuple[str | int, ...], hf: str) -> None:
        for name in ("wi_0", "wi_1", "wo"):
            mapping[(*ours, name)] = (f"{hf}.{name}.weight", _transpose)

    for i in range(config.num_encoder_layers):
        ours, hf = ("encoder", "layers", i), f"encoder.block.{i}.layer"
        mapping[(*ours, "pre_attention_layer_norm", "scale")] = (f"{hf}.0.layer_norm.weight", _identity)
        attention((*ours, "attention"), f"{hf}.0.SelfAttention")
        mapping[(*ours, "pre_mlp_layer_norm", "scale")] = (f"{hf}.1.layer_norm.weight", _identity)
        mlp((*ours, "mlp"), f"{hf}.1.DenseReluDense")
    for i in range(config.num_decoder_layers):
        ours, hf = ("decoder", "layers", i), f"decoder.block.{i}.layer"
        mapping[(*ours, "pre_self_attention_layer_norm", "scale")] = (f"{hf}.0.layer_norm.weight", _identity)
        attention((*ours, "self_attention"), f"{hf}.0.SelfAttention")
        mapping[(*ours, "pre_cross_attention_layer_norm", "scale")] = (f"{hf}.1.layer_norm.weight", _identity)
        attention((*ours, "encoder_decoder_attention"), f"{hf}.1.EncDecAttention")
        mapping[(*ours, "pre_mlp_layer_norm", "scale")] = (f"{hf}.2.layer_norm.weight", _identity)
        mlp((*ours, "mlp"), f"{hf}.2.DenseReluDense")
    return mapping


def params_from_hf(
    tensors: Mapping[str, np.ndarray], config: T5Config, *, lm_head: np.ndarray | None = None
) -> dict[tuple[str | int, ...], np.ndarray]:
    """Our float32 parameters, by path, from HF tensors (names and layouts as the module docstring).

    Args:
        tensors: HF tensor name -> array.
        config: the model's config (from :func:`config_from_hf`).
        lm_head: the untied head ``[V, D]`` from :func:`output_layer` (required when untied).

    Raises:
        CheckpointError: naming every missing or unexpected tensor, or the first shape mismatch.
    """
    mapping = name_map(config)
    expected = {hf for hf, _ in mapping.values()}
    missing = sorted(expected - set(tensors))
    if not config.tie_word_embeddings and lm_head is None:
        missing.append("lm_head.weight")
    allowed = expected | IGNORED_TENSORS | set(EMBEDDING_COPIES) | {"lm_head.weight"}
    unexpected = sorted(set(tensors) - allowed)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not match T5Config({config.num_encoder_layers}+{config.num_decoder_layers} layers): "
            f"missing tensors {missing}, unexpected tensors {unexpected}"
        )
    for name in EMBEDDING_COPIES:
        if name in tensors and not np.array_equal(tensors[name], tensors["shared.weight"]):
            raise CheckpointError(f"{name} differs from shared.weight; this model shares one input embedding")
    abstract = nnx.state(abstract_model(config), nnx.Param)
    wanted = {path: var.get_value() for path, var in nnx.to_flat_state(abstract)}
    params: dict[tuple[str | int, ...], np.ndarray] = {}
    sources = dict(mapping)
    if lm_head is not None and not config.tie_word_embeddings:
        sources[("lm_head",)] = ("lm_head.weight", _transpose)
    for path, shape_dtype in wanted.items():
        if path not in sources:
            raise CheckpointError(f"no HF tensor maps to parameter {'/'.join(map(str, path))}")
        hf_name, transform = sources[path]
        source = lm_head if path == ("lm_head",) else tensors[hf_name]
        try:
            value = transform(np.asarray(source, dtype=np.float32))
        except ValueError as e:  # a reshape that cannot hold
            raise CheckpointError(
                f"{hf_name} has shape {tuple(np.shape(source))}, which does not fit parameter "
                f"{'/'.join(map(str, path))} of shape {tuple(shape_dtype.shape)}"
            ) from e
        if value.shape != tuple(shape_dtype.shape):
            raise CheckpointError(
                f"{hf_name} has shape {tuple(np.shape(source))}; parameter {'/'.join(map(str, path))} needs "
                f"{tuple(shape_dtype.shape)} after conversion, got {value.shape}"
            )
        params[path] = value
    return params


def load_hf_t5(directory: Path_, **overrides: Any) -> EncoderDecoder:
    """An :class:`EncoderDecoder` holding the weights of an HF T5 v1.1 checkpoint directory.

    Args:
        directory: holds ``config.json`` and ``model.safetensors`` (``save_pretrained(safe_serialization=True)``).
        **overrides: ``dropout_rate`` and/or ``dtype`` of the imported model (default float32 activations).

    Raises:
        CheckpointError: unsupported architecture, missing/unexpected tensors, shape mismatches.
    """
    hf_config = read_hf_config(directory)
    tensors = read_safetensors(directory)
    tied, lm_head = output_layer(hf_config, tensors)
    config = config_from_hf(hf_config, tie_word_embeddings=tied, **overrides)
    return model_from_params(config, params_from_hf(tensors, config, lm_head=lm_head))


def model_from_params(config: T5Config, params: Mapping[tuple[str | int, ...], np.ndarray]) -> EncoderDecoder:
    """An :class:`EncoderDecoder` of ``config`` with every parameter set from ``params`` (by path)."""
    graphdef, state = nnx.split(abstract_model(config))
    flat = nnx.to_flat_state(state)
    missing = sorted("/".join(map(str, p)) for p, _ in flat if p not in params)
    if missing:
        raise CheckpointError(f"no value for parameters {missing}")
    filled = nnx.from_flat_state([(path, var.replace(jnp.asarray(params[path]))) for path, var in flat])
    return nnx.merge(graphdef, filled)


__all__ = [
    "CheckpointError",
    "config_from_hf",
    "hf_scales_decoder_outputs",
    "load_hf_t5",
    "model_from_params",
    "name_map",
    "output_layer",
    "params_from_hf",
    "read_hf_config",
    "read_safetensors",
]
