"""distributed.py: the job description from flags or the environment, validated before jax starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from onesearch_jax.distributed import DistributedConfig

ROOT = Path(__file__).resolve().parents[1]


def test_the_environment_describes_a_job():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert DistributedConfig.from_environment(env) == DistributedConfig(
        coordinator_address="10.0.0.2:1234", num_processes=4, process_id=3
    )
    assert DistributedConfig.from_environment({}) == DistributedConfig()
    with pytest.raises(ValueError, match="JAX_PROCESS_ID must be a non-negative integer, got 'one'"):
        DistributedConfig.from_environment({**env, "JAX_PROCESS_ID": "one"})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"coordinator_address": "localhost", "num_processes": 2, "process_id": 0}, "must be host:port"),
        ({"coordinator_address": "h:1", "num_processes": 0, "process_id": 0}, "num_processes must be an int >= 1"),
        ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, "process_id 2 is not below"),
        ({"coordinator_address": "h:1"}, "coordinator_address given without num_processes, process_id"),
    ],
)
def test_a_bad_job_description_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        DistributedConfig(**fields)


def test_process_flags_are_refused_by_single_process_commands(tmp_path):
    run = subprocess.run([sys.executable, "-m", "onesearch_jax.main", "world", f"--output_dir={tmp_path}",
                          "--multiprocess"], cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 2
    assert "error: world runs in one process: --multiprocess and --coordinator_address" in run.stderr
