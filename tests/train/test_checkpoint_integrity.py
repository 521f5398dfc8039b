"""Checksummed checkpoints: every saved step gets ``checksums.json``; steps without one restore as before.

Damaged checkpoints (truncated, overwritten) are tested in ``tests/reliability/test_corrupt_checkpoint.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from onesearch_jax.train import checkpoint_integrity as integrity
from onesearch_jax.train.checkpoints import CheckpointConfig, Checkpointer
from tests.train.test_checkpoints import trained_state  # noqa: F401  (fixture)


def save_three_steps(tmp_path, state, async_save=False) -> CheckpointConfig:
    """Saves ``state`` as steps 1, 2 and 3 (data state ``{"position": step}``) under ``tmp_path / "ckpt"``."""
    config = CheckpointConfig(directory=tmp_path / "ckpt", save_every_steps=1, keep_last=10, async_save=async_save)
    with Checkpointer(config) as checkpointer:
        for step in (1, 2, 3):
            checkpointer.save(step, state.replace(step=step), {"position": step})
    return config


@pytest.mark.parametrize("async_save", [False, True])
def test_every_saved_step_gets_checksums_that_verify(tmp_path, trained_state, async_save):  # noqa: F811
    state, _ = trained_state
    config = save_three_steps(tmp_path, state, async_save)
    for step in (1, 2, 3):
        manifest = json.loads((Path(config.path) / str(step) / integrity.CHECKSUMS).read_text())
        assert manifest["algorithm"] == "blake2b-128" and len(manifest["files"]) >= 3
        assert integrity.verify_checksums(Path(config.path) / str(step)) is None


def test_steps_without_checksums_are_restored_as_before(tmp_path, trained_state):  # noqa: F811
    state, _ = trained_state
    config = save_three_steps(tmp_path, state)
    os.remove(Path(config.path) / "3" / integrity.CHECKSUMS)
    with Checkpointer(config, read_only=True) as reader:
        assert reader.latest_intact_step() == 3
    (Path(config.path) / "2" / integrity.CHECKSUMS).write_text("{broken")
    assert "does not parse" in integrity.verify_checksums(Path(config.path) / "2")
