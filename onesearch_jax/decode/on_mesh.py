"""Compiling a decoder for a mesh: jits with explicit shardings, called under the mesh.

A decoder is two programs: the encoder (:func:`make_encoder`: the encoder and every decoder layer's
cross-attention keys and values, once per query), compiled with the process's XLA defaults, and
the decoding loop, compiled with the decoders' own options (:func:`jit_on_mesh`). On CPU those
options turn YNNPACK's reductions on for the loop's full-vocabulary log-softmax; inside one program
with the encoder they would also take the encoder's softmax and normalisations and materialise
their broadcasts (four ``[64, 64, 256]`` constant tensors per call in the tiny model). The encoder
program alone takes 33-39 ms per 64 queries of 64 tokens with XLA's defaults and 37-46 ms with
YNNPACK's reductions (tiny model, float32, this project's 2-core machine).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh

from onesearch_jax.models import partitioning
from onesearch_jax.xla_flags import decode_compiler_options


def jit_on_mesh(
    fn: Callable[..., Any],
    mesh: Mesh,
    rules: Any,
    *,
    in_shardings: Any,
    out_shardings: Any,
    compiler_options: dict[str, str] | None = None,
):
    """``fn`` jitted with ``in_shardings``/``out_shardings`` and the decoders' compiler options
    (:func:`~onesearch_jax.xla_flags.decode_compiler_options`; ``compiler_options={}`` compiles
    with the process's defaults), each call run under ``mesh`` and the logical-axis ``rules`` (so
    the model's sharding constraints resolve)."""
    options = decode_compiler_options() if compiler_options is None else compiler_options
    jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings,
                     compiler_options=options or None)  # fmt: skip

    def run(*args: Any) -> Any:
        with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
            return jitted(*args)

    return run


def make_encoder(graphdef: nnx.GraphDef, params_shardings: Any, mesh: Mesh, rules: Any):
    """``encode(params, encoder_input_tokens) -> cross_key_values``: the model's
    ``cross_key_values(encode(tokens))`` (no dropout), jitted with the process's XLA defaults, the
    queries and the result sharded over the batch axes."""
    batch = partitioning.batch_sharding(mesh, rules)

    def encode(params: Any, encoder_input_tokens: jax.Array) -> Any:
        model = nnx.merge(graphdef, params)
        return model.cross_key_values(model.encode(encoder_input_tokens, deterministic=True))

    return jit_on_mesh(encode, mesh, rules, in_shardings=(params_shardings, batch), out_shardings=batch,
                       compiler_options={})  # fmt: skip
