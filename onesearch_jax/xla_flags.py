"""XLA flags that onesearch sets by default, before jax starts its backends.

One default today, for the CPU backend: ``--xla_cpu_experimental_ynn_fusion_type=`` (empty: no
YNNPACK library fusions; XLA's own loop fusions and Eigen matrix products run instead). The
YNNPACK fusions that jaxlib 0.10 enables on CPU run this model's small batched attention products
and its softmax reductions well below XLA's own kernels: on this project's 2-core CI machine,
``bench/train_step.py`` (tiny model, batch 64 x 256 inputs, bfloat16) measured 1.18 s per step
with them and 1.08 s without; ``weights @ value`` on ``[64, 4, 256, 256] x [64, 4, 256, 32]``
float32 took 18.8 ms with them and 11.6 ms without. The flag concerns the CPU backend only.
The decoders compile with YNNPACK's reductions back on (:func:`decode_compiler_options`, a
per-program compiler option): their full-vocabulary log-softmax is the reverse case.

A flag already in ``XLA_FLAGS`` wins: ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot,reduce``
brings YNNPACK back. The ``onesearch`` command, ``bench/`` and the test suite apply the defaults;
a program that imports onesearch_jax as a library calls :func:`apply_xla_defaults` itself, before
its first jax computation.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import MutableMapping

# name -> value of each default flag.
XLA_DEFAULTS: dict[str, str] = {"xla_cpu_experimental_ynn_fusion_type": ""}
_YNN = "xla_cpu_experimental_ynn_fusion_type"
# Per-program options of the decoders (beam search, sampling, greedy) on CPU: YNNPACK's reduction
# kernels back, for their full-vocabulary log-softmax over [rows, vocab] logits, which XLA's own
# reduction loops run 5x slower (``logsumexp`` of [8192, 2176] float32: 9.5 ms with them, 52-57 ms
# without; ``bench/decode.py``).
DECODE_CPU_OPTIONS: dict[str, str] = {_YNN: "LIBRARY_FUSION_TYPE_REDUCE"}
_applied: set[str] = set()  # the defaults apply_xla_defaults put into this process's XLA_FLAGS


def flag_names(xla_flags: str) -> set[str]:
    """Names of the flags set in an ``XLA_FLAGS`` string (``--name=value`` or ``--name``)."""
    return set(re.findall(r"(?:^|\s)--([A-Za-z0-9_]+)", xla_flags))


def with_xla_defaults(xla_flags: str) -> str:
    """``xla_flags`` with every default it does not set prepended (its own settings come last)."""
    present = flag_names(xla_flags)
    added = [f"--{name}={value}" for name, value in XLA_DEFAULTS.items() if name not in present]
    return " ".join([*added, xla_flags]).strip()


def apply_xla_defaults(environ: MutableMapping[str, str] | None = None) -> str:
    """Put the defaults into ``environ["XLA_FLAGS"]`` (``os.environ`` by default); returns it.

    Raises:
        RuntimeError: jax's backends already started in this process, so XLA has read its flags
            and would silently ignore the new ones.
    """
    if environ is None:
        if "jax" in sys.modules and _backends_started():
            raise RuntimeError("apply_xla_defaults() must run before the first jax computation of the process")
        environ = os.environ
        _applied.update(set(XLA_DEFAULTS) - flag_names(environ.get("XLA_FLAGS", "")))
    environ["XLA_FLAGS"] = with_xla_defaults(environ.get("XLA_FLAGS", ""))
    return environ["XLA_FLAGS"]


def decode_compiler_options() -> dict[str, str]:
    """:data:`DECODE_CPU_OPTIONS` when this process runs on CPU with onesearch's YNNPACK default
    (not a user's own ``XLA_FLAGS`` setting, which is left to apply), else no options."""
    import jax

    return dict(DECODE_CPU_OPTIONS) if _YNN in _applied and jax.default_backend() == "cpu" else {}


def _backends_started() -> bool:
    from jax._src import xla_bridge  # jax has no public "backends started" query

    return xla_bridge.backends_are_initialized()
