"""A truncated or overwritten latest checkpoint is detected, reported and set aside; the previous
intact step is restored, and a training run redoes the lost steps bitwise.

The checkpointer's tests save the stand-in model's state; training runs the stand-in model's loop
and, in the slow test, ``train_run`` with the tiny T5 on the small world's records.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from onesearch_jax.train import checkpoint_integrity as integrity
from onesearch_jax.train.checkpoints import Checkpointer, abstract_train_state
from onesearch_jax.train.optimizer_config import OptimizerConfig
from onesearch_jax.train.run import train_run
from tests.reliability.test_sigterm import train
from tests.train.test_checkpoint_integrity import save_three_steps
from tests.train.test_checkpoints import trained_state  # noqa: F401  (fixture)
from tests.train.test_run import checkpoints, setup_for, train_config
from tests.train.test_trainer import assert_bitwise


def largest_file(step_dir: Path) -> Path:
    return max((p for p in step_dir.rglob("*") if p.is_file() and p.name != integrity.CHECKSUMS),
               key=lambda p: p.stat().st_size)  # fmt: skip


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def overwrite(path: Path) -> None:  # same size, other bytes: orbax alone restores this silently
    with open(path, "r+b") as f:
        f.seek(64)
        f.write(b"\0" * 64)


@pytest.mark.parametrize("damage", [truncate, overwrite])
def test_a_damaged_latest_step_is_set_aside_and_the_previous_one_restored(tmp_path, trained_state, damage):  # noqa: F811
    state, shardings = trained_state
    config = save_three_steps(tmp_path, state)
    bad = largest_file(Path(config.path) / "3")
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
    config = save_three_steps(tmp_path, state)
    for step in (1, 2, 3):
        truncate(largest_file(Path(config.path) / str(step)))
    reader = Checkpointer(config, read_only=True)
    with pytest.raises(FileNotFoundError, match=r"no intact checkpoint .*step 3: .*step 2: .*step 1: "):
        reader.latest_intact_step()
    reader.close()


def test_training_from_a_truncated_latest_checkpoint_redoes_its_steps_bitwise(tmp_path):
    straight = train(tmp_path / "straight")  # the stand-in model, checkpoints at 2, 4, 6 and 7
    copy = tmp_path / "run"
    shutil.copytree(tmp_path / "straight", copy)
    truncate(largest_file(copy / "ckpt" / "7"))
    again = train(copy)
    assert (again.start_step, again.step) == (6, 7)  # resumed from the intact step 6
    assert len(list((copy / "ckpt").glob("7.corrupt-*"))) == 1
    assert_bitwise(again.state, straight.state)  # the redone step 7 is bitwise the same


@pytest.mark.slow  # about a minute: two training runs of the tiny T5, each compiling its step
def test_a_truncated_latest_checkpoint_is_set_aside_and_training_redoes_its_steps(world_records, tmp_path):
    setup = setup_for(dataclasses.replace(train_config(world_records, tmp_path / "straight"), eval_tasks=()))

    def run(model_dir: Path):  # 2 + 2 + 3 steps, checkpoints at 2, 4, 6 and 7, no evaluation
        config = dataclasses.replace(setup.config, model_dir=str(model_dir))
        return train_run(dataclasses.replace(setup, config=config), checkpoint_config=checkpoints(model_dir),
                         optimizer_config=OptimizerConfig(learning_rate=3e-3))  # fmt: skip

    straight = run(tmp_path / "straight")
    copy = tmp_path / "run"
    shutil.copytree(tmp_path / "straight", copy)
    step_dir = copy / "checkpoints" / "7"
    biggest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(biggest, "r+b") as f:
        f.truncate(biggest.stat().st_size // 2)
    again = run(copy)
    assert (again.start_step, again.step) == (6, 7)  # resumed from the intact step 6
    assert len(list((copy / "checkpoints").glob("7.corrupt-*"))) == 1
    for a, b in zip(jax.tree.leaves(again.state.params), jax.tree.leaves(straight.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the redone step 7 is bitwise the same
