"""Nothing in the project deserialises user data with code execution: no pickle, eval, exec,
marshal, shelve, yaml.load or np.load(allow_pickle=True) (an AST scan, so docstrings do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for folder in ("onesearch_jax", "tasks", "bench") for p in (ROOT / folder).rglob("*.py"))
BANNED_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "cloudpickle", "joblib"}
BANNED_CALLS = {"eval", "exec"}


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            out += [f"{where}: imports {n}" for n in names if n.split(".")[0] in BANNED_MODULES]
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        if isinstance(func, ast.Name) and name in BANNED_CALLS:
            out.append(f"{where}: calls {name}()")
        if owner == "yaml" and name in ("load", "load_all", "unsafe_load"):
            out.append(f"{where}: calls yaml.{name}() (use yaml.safe_load)")
        for keyword in node.keywords:
            if keyword.arg == "allow_pickle" and not (
                isinstance(keyword.value, ast.Constant) and keyword.value.value is False
            ):
                out.append(f"{where}: {name}(allow_pickle=...) other than False")
    return out


def test_the_scan_covers_the_package():
    assert len(SOURCES) > 50 and any(p.name == "checkpoints.py" for p in SOURCES)


@pytest.mark.parametrize("source", ["import pickle\n", "x = eval('1')\n", "import yaml\nyaml.load(s)\n",
                                    "import numpy as np\nnp.load(f, allow_pickle=True)\n"])  # fmt: skip
def test_the_scan_finds_each_kind(tmp_path, source):
    path = tmp_path / "probe.py"
    path.write_text(source, encoding="utf-8")
    assert _problems(path)


def test_no_source_deserialises_with_code_execution():
    problems = [p for path in SOURCES for p in _problems(path)]
    assert not problems, "\n".join(problems)
