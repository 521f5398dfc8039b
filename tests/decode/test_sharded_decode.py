"""Beam search and sampling sharded over the data axis of 4 CPU devices equal one device, and each
device decodes its own queries: the compiled programs hold no collective."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from onesearch_jax.xla_flags import with_xla_defaults

ROOT = Path(__file__).resolve().parents[2]


COLLECTIVE = re.compile(r"\b(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)(-start)?\(")


def test_data_sharded_decoding_equals_one_device(tmp_path):
    dump = tmp_path / "hlo"
    flags = (
        f"--xla_force_host_platform_device_count=4 --xla_dump_to={dump} --xla_dump_hlo_as_text "
        "--xla_dump_hlo_module_re=jit_(encode|search|sample)$"
    )
    env = {**os.environ, "XLA_FLAGS": with_xla_defaults(flags), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.decode.sharded_decode"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4 and result["beam_shards"] == 4
    assert result["beam_leaves_equal"] and result["beam_score_diff"] < 1e-5
    assert result["sample_leaves_equal"] and result["sample_logprob_diff"] < 1e-5
    # Every cache gather and top-k stays on the device that holds the query (before the per-query
    # row maps and top_k_per_shard: 19 all-gathers in the search program, 8 in the sampler).
    programs = {path.name.split(".")[1]: path.read_text() for path in dump.glob("*.cpu_after_optimizations.txt")}
    assert {"jit_encode", "jit_search", "jit_sample"} <= set(programs), sorted(programs)
    assert {name: len(COLLECTIVE.findall(text)) for name, text in programs.items()} == dict.fromkeys(programs, 0)
