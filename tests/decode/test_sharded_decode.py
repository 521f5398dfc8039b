"""Beam search and sampling sharded over the data axis of 4 CPU devices equal one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from onesearch_jax.xla_flags import with_xla_defaults

ROOT = Path(__file__).resolve().parents[2]


def test_data_sharded_decoding_equals_one_device():
    env = {
        **os.environ,
        "XLA_FLAGS": with_xla_defaults("--xla_force_host_platform_device_count=4"),
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.decode.sharded_decode"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4 and result["beam_shards"] == 4
    assert result["beam_leaves_equal"] and result["beam_score_diff"] < 1e-5
    assert result["sample_leaves_equal"] and result["sample_logprob_diff"] < 1e-5
