"""Test helpers: models with numpy-drawn parameters, built without compiling any initialiser.

``nnx.eval_shape`` builds the module abstractly and each parameter is then set from numpy, so a
test pays only for the computation it checks (op-by-op initialisers compile one XLA program per
op and shape, seconds on a small CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from onesearch_jax.models.configs import T5Config
from onesearch_jax.models.encoder_decoder import EncoderDecoder, abstract_model


def _draw(path: tuple, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """T5-like scales: unit embeddings, fan-in kernels, query / sqrt(d_kv), norms near 1."""
    name = path[-1]
    noise = rng.standard_normal(shape).astype(np.float32)
    if name == "scale":
        return 1.0 + 0.1 * noise
    if name in ("embedding", "rel_embedding"):
        return noise
    fan_in = math.prod(shape[:-1]) if name == "out" else shape[0]
    value = noise / math.sqrt(fan_in)
    return value / math.sqrt(shape[-1]) if name == "query" else value


def fill(module: nnx.Module, seed: int = 0, draw: Callable = _draw) -> nnx.Module:
    """Sets every parameter of an (abstract) ``module`` from numpy; returns the module."""
    rng = np.random.default_rng(seed)
    state = nnx.state(module, nnx.Param)
    for path, var in nnx.to_flat_state(state):
        var.set_value(jnp.asarray(draw(path, tuple(var.get_value().shape), rng)))
    nnx.update(module, state)
    return module


def jit_call(module: nnx.Module, *args, **static) -> jnp.ndarray:
    """``module(*args, **static)`` as one compiled program (``static`` are Python values)."""
    return nnx.jit(lambda m, *a: m(*a, **static))(module, *args)


def abstract(factory: Callable[[], nnx.Module]) -> nnx.Module:
    """``factory()`` built by ``nnx.eval_shape``: parameters are shapes only until :func:`fill`."""
    return nnx.eval_shape(factory)


def random_model(config: T5Config, seed: int = 0) -> EncoderDecoder:
    """An :class:`EncoderDecoder` of ``config`` with numpy-drawn parameters."""
    return fill(abstract_model(config), seed)
