"""gin configuration as T5X does it: ``--gin_file``, ``--gin.NAME=VALUE``, ``--gin_search_paths``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import gin

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GIN_PREFIX = "--gin."


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
    """Turns each ``--gin.NAME=VALUE`` into ``--gin_bindings=NAME = VALUE`` (T5X's shorthand).

    Raises:
        ValueError: for a ``--gin.NAME`` without ``=VALUE``.
    """
    out = []
    for arg in argv:
        if arg.startswith(GIN_PREFIX):
            name, sep, value = arg[len(GIN_PREFIX) :].partition("=")
            if not sep or not name:
                raise ValueError(f"gin override {arg!r} must look like --gin.NAME=VALUE")
            out.append(f"--gin_bindings={name} = {value}")
        else:
            out.append(arg)
    return out


def parse_gin(search_paths: Sequence[str], files: Sequence[str], bindings: Sequence[str]) -> None:
    """Adds the search paths (then the project root), parses the files, then the bindings.

    Errors name the file or binding that failed, as gin reports them.
    """
    for path in [*search_paths, os.fspath(PROJECT_ROOT)]:
        gin.add_config_file_search_path(path)
    gin.parse_config_files_and_bindings(list(files), list(bindings), finalize_config=False)
