"""The ``--noxla_defaults`` option of the benchmarks: by default they run with the XLA flags the
``onesearch`` command sets (``onesearch_jax/xla_flags.py``); the option leaves them out."""

from __future__ import annotations

import argparse


def add_xla_defaults_option(parser: argparse.ArgumentParser) -> None:
    """Adds ``--noxla_defaults`` (``args.xla_defaults``, True unless given)."""
    parser.add_argument(
        "--noxla_defaults",
        dest="xla_defaults",
        action="store_false",
        help="leave out onesearch's default XLA flags (onesearch_jax/xla_flags.py), which `onesearch` applies",
    )


def apply_xla_defaults_option(args: argparse.Namespace) -> None:
    """Applies the defaults unless ``--noxla_defaults``; call it before the first jax computation."""
    if args.xla_defaults:
        from onesearch_jax.xla_flags import apply_xla_defaults

        apply_xla_defaults()
