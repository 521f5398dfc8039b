"""Compiling a decoder for a mesh: one jit with explicit shardings, called under the mesh."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh

from onesearch_jax.xla_flags import decode_compiler_options


def jit_on_mesh(fn: Callable[..., Any], mesh: Mesh, rules: Any, *, in_shardings: Any, out_shardings: Any):
    """``fn`` jitted with ``in_shardings``/``out_shardings`` and the decoders' compiler options
    (:func:`~onesearch_jax.xla_flags.decode_compiler_options`), each call run under ``mesh`` and
    the logical-axis ``rules`` (so the model's sharding constraints resolve)."""
    jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings,
                     compiler_options=decode_compiler_options() or None)  # fmt: skip

    def run(*args: Any) -> Any:
        with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
            return jitted(*args)

    return run
