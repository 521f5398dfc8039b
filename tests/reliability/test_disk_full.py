"""A full disk: refused before training when the checkpoints cannot fit, and a save that fails
half-way is an error naming the step and the directory, never a checkpoint that restores.

The full disk is simulated: ``disk_usage`` reports little free space, and the file writes of orbax
(its JSON items) or of ``checksums.json`` raise ``OSError(ENOSPC)`` while a step is being written.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import orbax.checkpoint as ocp
import pytest

from onesearch_jax.train import checkpoint_integrity as integrity
from onesearch_jax.train.checkpoints import CheckpointConfig, Checkpointer, CheckpointWriteError, checkpoint_bytes
from tests.train.test_checkpoints import trained_state  # noqa: F401  (fixture)


def _config(tmp_path, **overrides) -> CheckpointConfig:
    fields = {"directory": tmp_path / "ckpt", "save_every_steps": 1, "keep_last": 2, "keep_best": 0,
              "async_save": False} | overrides  # fmt: skip
    return CheckpointConfig(**fields)


def _free(nbytes: int):
    return lambda path: SimpleNamespace(free=nbytes)


def _no_space(path: Path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _bytes_in(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def test_checkpoint_bytes_bounds_what_orbax_writes(tmp_path, trained_state):  # noqa: F811
    state, _ = trained_state
    with Checkpointer(_config(tmp_path)) as checkpointer:
        checkpointer.save(2, state, {"position": 2})
    written = _bytes_in(tmp_path / "ckpt" / "2")  # checksums.json included
    assert written <= checkpoint_bytes(state) <= 3 * written


def test_too_little_space_for_the_kept_checkpoints_is_refused(tmp_path, trained_state):  # noqa: F811
    state, _ = trained_state
    one = checkpoint_bytes(state)
    with Checkpointer(_config(tmp_path, keep_last=2, keep_best=1)) as checkpointer:
        checkpointer.check_free_space(one, disk_usage=_free(4 * one))  # 2 last + 1 best + 1 being written
        with pytest.raises(CheckpointWriteError) as error:
            checkpointer.check_free_space(one, disk_usage=_free(4 * one - 1))
        assert str(error.value) == (
            f"not enough free space for checkpoints in {tmp_path / 'ckpt'}: {4 * one:,} bytes needed, "
            f"{4 * one - 1:,} free (4 more checkpoints of about {one:,} bytes: keep_last + keep_best = 3 kept "
            "and one being written, 0 there already)"
        )
        for step in (1, 2):
            checkpointer.save(step, state, {"position": step})
        checkpointer.check_free_space(one, disk_usage=_free(2 * one))  # two of the kept ones are there
        with pytest.raises(CheckpointWriteError, match=re.escape(f"{2 * one:,} bytes needed, {2 * one - 1:,} free")):
            checkpointer.check_free_space(one, disk_usage=_free(2 * one - 1))


def test_train_run_checks_the_space_before_building_anything(world_records, tmp_path, monkeypatch):
    from onesearch_jax.train.optimizer_config import OptimizerConfig
    from onesearch_jax.train.optimizers import make_optimizer
    from onesearch_jax.train.run import train_run
    from onesearch_jax.train.state import abstract_init
    from tests.train.test_run import checkpoints, setup_for, train_config

    setup = setup_for(train_config(world_records, tmp_path))
    optimizer = OptimizerConfig(learning_rate=3e-3)
    _, abstract, _, _ = abstract_init(setup.model_fn, make_optimizer(optimizer), setup.mesh, setup.rules)
    one = checkpoint_bytes(abstract)
    monkeypatch.setattr(shutil, "disk_usage", _free(one))
    with pytest.raises(CheckpointWriteError) as error:
        train_run(setup, optimizer_config=optimizer, checkpoint_config=checkpoints(tmp_path))
    needed = 6 * one  # keep_last=5, keep_best=0, and one being written
    assert str(error.value).startswith(
        f"not enough free space for checkpoints in {tmp_path / 'checkpoints'}: {needed:,} bytes needed, {one:,} free"
    )
    assert os.listdir(tmp_path / "checkpoints") == []
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "run.json").exists()


@pytest.mark.parametrize("async_save", [False, True])
def test_a_save_that_fails_half_way_is_reported_and_never_restored(tmp_path, trained_state, monkeypatch, async_save):  # noqa: F811
    state, _ = trained_state
    config = _config(tmp_path, keep_last=5, async_save=async_save)
    checkpointer = Checkpointer(config)
    for step in (1, 2):
        checkpointer.save(step, state.replace(step=step), {"position": step})
    checkpointer.wait()

    async def full_disk(self, item, directory):  # orbax's JSON items; the state's arrays are written alongside
        raise _no_space(directory / "metadata")

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", full_disk)
    with pytest.raises(CheckpointWriteError) as error:
        checkpointer.save(3, state.replace(step=3), {"position": 3})
        checkpointer.wait()  # async: the background write fails here
    message = str(error.value)
    assert message.startswith(
        f"writing checkpoint step 3 in {config.path} failed: [Errno 28] No space left on device: "
        f"'{config.path}/3.orbax-checkpoint-tmp/"
    )
    assert message.endswith("; it is not a checkpoint and is never restored (the latest complete step is 2)")
    checkpointer.close()
    monkeypatch.undo()

    # Orbax wrote into a temporary directory and never renamed it to a step: nothing lists it.
    assert sorted(os.listdir(config.path)) == ["1", "2", "3.orbax-checkpoint-tmp"]
    with Checkpointer(config, read_only=True) as reader:
        assert reader.all_steps() == [1, 2] and reader.latest_intact_step() == 2


def test_a_step_whose_checksums_cannot_be_written_is_set_aside(tmp_path, trained_state, monkeypatch):  # noqa: F811
    state, _ = trained_state
    config = _config(tmp_path, keep_last=5)
    write_checksums = integrity.write_checksums

    def full_disk(step_dir: Path) -> None:  # the manifest is started, then the disk is full
        if step_dir.name == "3":
            (step_dir / f".{integrity.CHECKSUMS}.partial").write_text('{"algorithm": "bla')
            raise _no_space(step_dir / f".{integrity.CHECKSUMS}.partial")
        write_checksums(step_dir)

    monkeypatch.setattr(integrity, "write_checksums", full_disk)
    with Checkpointer(config) as checkpointer:
        for step in (1, 2):
            checkpointer.save(step, state.replace(step=step), {"position": step})
        with pytest.raises(CheckpointWriteError) as error:
            checkpointer.save(3, state.replace(step=3), {"position": 3})
        assert checkpointer.all_steps() == [1, 2]
    (moved,) = Path(config.path).glob("3.incomplete-*")
    assert str(error.value) == (
        f"writing the checksums of checkpoint step 3 in {config.path} failed: [Errno 28] No space left on device: "
        f"'{config.path}/3/.{integrity.CHECKSUMS}.partial'; the step is not a checkpoint and is never restored "
        f"(moved to {moved})"
    )
    with Checkpointer(config, read_only=True) as reader:
        assert reader.all_steps() == [1, 2] and reader.latest_intact_step() == 2


def test_an_error_after_orbax_finished_a_step_keeps_that_step(tmp_path, trained_state, monkeypatch):  # noqa: F811
    state, _ = trained_state
    config = _config(tmp_path, keep_last=1)

    def cannot_delete(steps):  # orbax deletes step 1 once step 2 is final
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(Path(config.path) / "1"))

    with Checkpointer(config) as checkpointer:
        checkpointer.save(1, state.replace(step=1), {"position": 1})
        monkeypatch.setattr(checkpointer._manager._checkpoint_deleter, "delete_steps", cannot_delete)
        with pytest.raises(CheckpointWriteError) as error:
            checkpointer.save(2, state.replace(step=2), {"position": 2})
    assert str(error.value) == (
        f"checkpointing in {config.path} failed after steps [2] were complete: [Errno 13] Permission denied: "
        f"'{config.path}/1'"
    )
    assert integrity.verify_checksums(Path(config.path) / "2") is None
    assert (Path(config.path) / "2" / integrity.CHECKSUMS).is_file()
    with Checkpointer(config, read_only=True) as reader:  # step 2 is whole and checksummed
        assert reader.all_steps() == [1, 2] and reader.latest_intact_step() == 2
