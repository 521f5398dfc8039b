"""Checksummed checkpoints: truncation and overwrites are detected; the latest intact step is used."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from onesearch_jax.train import checkpoint_integrity as integrity
from onesearch_jax.train.checkpoints import CheckpointConfig, Checkpointer, abstract_train_state
from tests.train.test_checkpoints import trained_state  # noqa: F401  (fixture)


def _largest_file(step_dir: Path) -> Path:
    return max((p for p in step_dir.rglob("*") if p.is_file() and p.name != integrity.CHECKSUMS),
               key=lambda p: p.stat().st_size)  # fmt: skip


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _overwrite(path: Path) -> None:  # same size, other bytes: orbax alone restores this silently
    with open(path, "r+b") as f:
        f.seek(64)
        f.write(b"\0" * 64)


def _saved(tmp_path, state, async_save=False) -> CheckpointConfig:
    config = CheckpointConfig(directory=tmp_path / "ckpt", save_every_steps=1, keep_last=10, async_save=async_save)
    with Checkpointer(config) as checkpointer:
        for step in (1, 2, 3):
            checkpointer.save(step, state.replace(step=step), {"position": step})
    return config


@pytest.mark.parametrize("async_save", [False, True])
def test_every_saved_step_gets_checksums_that_verify(tmp_path, trained_state, async_save):  # noqa: F811
    state, _ = trained_state
    config = _saved(tmp_path, state, async_save)
    for step in (1, 2, 3):
        manifest = json.loads((Path(config.path) / str(step) / integrity.CHECKSUMS).read_text())
        assert manifest["algorithm"] == "blake2b-128" and len(manifest["files"]) >= 3
        assert integrity.verify_checksums(Path(config.path) / str(step)) is None


@pytest.mark.parametrize("damage", [_truncate, _overwrite])
def test_a_damaged_latest_step_is_set_aside_and_the_previous_one_restored(tmp_path, trained_state, damage):  # noqa: F811
    state, shardings = trained_state
    config = _saved(tmp_path, state)
    bad = _largest_file(Path(config.path) / "3")
    damage(bad)
    abstract = abstract_train_state(jax.eval_shape(lambda s: s, state), shardings)
    with Checkpointer(config, read_only=True) as reader:  # an eval job: skips, renames nothing
        assert reader.latest_intact_step() == 2 and (Path(config.path) / "3").is_dir()
        with pytest.raises(ValueError, match=rf"step 3 .* is corrupt: {bad}"):
            reader.restore(3, abstract_state=abstract)
    with Checkpointer(config) as checkpointer:
        restored, data = checkpointer.restore(abstract_state=abstract)
        assert int(restored.step) == 2 and data == {"position": 2}
        for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(state.params), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert checkpointer.all_steps() == [1, 2]
        assert [p.name.split(".")[0] for p in Path(config.path).glob("3.corrupt-*")] == ["3"]
        assert checkpointer.save(3, state.replace(step=3), {"position": 3})  # the step can be saved again
        assert checkpointer.latest_intact_step() == 3


def test_no_intact_step_names_every_problem(tmp_path, trained_state):  # noqa: F811
    state, _ = trained_state
    config = _saved(tmp_path, state)
    for step in (1, 2, 3):
        _truncate(_largest_file(Path(config.path) / str(step)))
    reader = Checkpointer(config, read_only=True)
    with pytest.raises(FileNotFoundError, match=r"no intact checkpoint .*step 3: .*step 2: .*step 1: "):
        reader.latest_intact_step()
    reader.close()


def test_steps_without_checksums_are_restored_as_before(tmp_path, trained_state):  # noqa: F811
    state, _ = trained_state
    config = _saved(tmp_path, state)
    os.remove(Path(config.path) / "3" / integrity.CHECKSUMS)
    with Checkpointer(config, read_only=True) as reader:
        assert reader.latest_intact_step() == 3
    (Path(config.path) / "2" / integrity.CHECKSUMS).write_text("{broken")
    assert "does not parse" in integrity.verify_checksums(Path(config.path) / "2")
