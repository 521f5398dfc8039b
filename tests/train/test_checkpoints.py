"""Checkpointer: sharded save/restore round trip with the data state, keep-last-K, keep-best, errors."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from onesearch_jax.models.partitioning import DEFAULT_RULES, MeshConfig, make_mesh
from onesearch_jax.train.checkpoints import CheckpointConfig, Checkpointer, abstract_train_state, check_writable
from onesearch_jax.train.optimizers import OptimizerConfig, make_optimizer
from onesearch_jax.train.state import TrainState, shard_train_state
from tests.train.mini_model import MiniEncoderDecoder


@pytest.fixture(scope="module")
def trained_state() -> tuple[TrainState, TrainState]:
    """A sharded state after one AdamW update (non-zero moments), and its shardings."""
    optimizer = make_optimizer(OptimizerConfig())
    _, state = TrainState.create(MiniEncoderDecoder(seed=3), optimizer, rng=11)

    @jax.jit
    def update(state: TrainState) -> TrainState:
        grads = jax.tree.map(lambda p: 0.1 * p + 0.01, state.params)
        updates, opt_state = optimizer.tx.update(grads, state.opt_state, state.params)
        return state.replace(
            step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
        )

    state = update(update(state))
    return shard_train_state(state, make_mesh(MeshConfig()), DEFAULT_RULES)


def _config(tmp_path, **overrides) -> CheckpointConfig:
    kwargs = dict(directory=tmp_path / "ckpt", save_every_steps=1, keep_last=10, async_save=False)
    return CheckpointConfig(**(kwargs | overrides))


def _assert_bitwise_equal(a: TrainState, b: TrainState) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    np.testing.assert_array_equal(jax.random.key_data(a.rng), jax.random.key_data(b.rng))
    assert a.rng.dtype == b.rng.dtype
    for x, y in zip(jax.tree.leaves(a.replace(rng=0)), jax.tree.leaves(b.replace(rng=0)), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_round_trip_is_bitwise_with_shardings_and_data_state(tmp_path, trained_state):
    state, shardings = trained_state
    data_state = {"position": 17, "config": {"batch_size": 4, "seed": 0}}
    with Checkpointer(_config(tmp_path), meta={"run": "test"}) as ckpt:
        assert ckpt.save(int(state.step), state, data_state)
        assert ckpt.latest_step() == 2 and ckpt.all_steps() == [2]
        abstract = abstract_train_state(jax.eval_shape(lambda s: s, state), shardings)
        restored, restored_data = ckpt.restore(abstract_state=abstract)
        meta = ckpt.restore_meta()
    _assert_bitwise_equal(restored, state)
    assert int(restored.step) == 2
    assert restored_data == data_state
    assert meta["run"] == "test" and meta["step"] == 2 and "orbax-checkpoint" in meta["versions"]
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings), strict=True):
        assert got.sharding.is_equivalent_to(want, got.ndim)


def test_restore_latest_or_specific_step_and_interval(tmp_path, trained_state):
    state, _ = trained_state
    with Checkpointer(_config(tmp_path, save_every_steps=2)) as ckpt:
        for step in range(1, 7):
            saved = ckpt.save(step, state.replace(step=jnp.int32(step)), {"position": step * 10})
            assert saved == (step % 2 == 0)
        assert ckpt.save(7, state.replace(step=jnp.int32(7)), {"position": 70}, force=True)
        assert not ckpt.save(7, state, {"position": 0}, force=True)  # already saved
        assert ckpt.all_steps() == [2, 4, 6, 7]
        latest, data = ckpt.restore(abstract_state=state)
        assert int(latest.step) == 7 and data == {"position": 70}
        older, data = ckpt.restore(4, abstract_state=state)
        assert int(older.step) == 4 and data == {"position": 40}
        with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 5 in .*ckpt.*\[2, 4, 6, 7\]"):
            ckpt.restore(5, abstract_state=state)


def test_keep_last_deletes_older_checkpoints(tmp_path, trained_state):
    state, _ = trained_state
    with Checkpointer(_config(tmp_path, keep_last=2)) as ckpt:
        for step in range(1, 6):
            ckpt.save(step, state, {"position": step})
        assert ckpt.all_steps() == [4, 5]
    assert sorted(int(p) for p in os.listdir(tmp_path / "ckpt") if p.isdigit()) == [4, 5]


@pytest.mark.parametrize(
    ("mode", "losses", "best"), [("min", [0.5, 0.1, 0.9, 0.8, 0.7], 2), ("max", [0.2, 0.9, 0.1, 0.3, 0.4], 2)]
)
def test_keep_best_keeps_the_best_even_when_older(tmp_path, trained_state, mode, losses, best):
    state, _ = trained_state
    config = _config(tmp_path, keep_last=2, keep_best=1, best_metric="eval/loss", best_mode=mode)
    with Checkpointer(config) as ckpt:
        for step, loss in enumerate(losses, start=1):
            ckpt.save(step, state, {"position": step}, metrics={"eval/loss": loss})
        ckpt.save(6, state, {"position": 6})  # no metrics: kept only as recent
        assert ckpt.all_steps() == [best, 5, 6]
        assert ckpt.best_step() == best
        with pytest.raises(ValueError, match="lack the best metric 'eval/loss'"):
            ckpt.save(7, state, {}, metrics={"train/loss": 1.0})


def test_async_save_then_wait(tmp_path, trained_state):
    state, _ = trained_state
    ckpt = Checkpointer(_config(tmp_path, async_save=True, keep_last=2))
    try:
        for step in (1, 2, 3):
            assert ckpt.save(step, state, {"position": step})
        ckpt.wait()
        assert ckpt.all_steps() == [2, 3]
        restored, data = ckpt.restore(abstract_state=state)
        _assert_bitwise_equal(restored, state)
        assert data == {"position": 3}
    finally:
        ckpt.close()
    # A fresh manager on the same directory sees the finished checkpoints.
    with Checkpointer(_config(tmp_path)) as again:
        assert again.latest_step() == 3


def test_restore_from_empty_directory_names_it(tmp_path, trained_state):
    state, _ = trained_state
    with Checkpointer(_config(tmp_path)) as ckpt:
        assert ckpt.latest_step() is None and ckpt.all_steps() == []
        with pytest.raises(FileNotFoundError, match=f"no checkpoint to restore in {tmp_path / 'ckpt'}"):
            ckpt.restore(abstract_state=state)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_directory_is_reported_before_training(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=f"checkpoint directory {locked / 'ckpt'} is not writable"):
            Checkpointer(CheckpointConfig(directory=locked / "ckpt"))
        with pytest.raises(PermissionError, match="is not writable"):
            check_writable(locked)
    finally:
        locked.chmod(0o700)
    check_writable(locked)


def test_regular_file_as_directory_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match=f"checkpoint directory {blocker} is not writable"):
        check_writable(blocker)
    with pytest.raises(PermissionError, match=f"checkpoint directory {blocker / 'ckpt'} is not writable"):
        Checkpointer(CheckpointConfig(directory=blocker / "ckpt"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"save_every_steps": 0}, "save_every_steps must be an int >= 1"),
        ({"keep_last": 0}, "keep_last must be an int >= 1"),
        ({"keep_best": -1}, "keep_best must be an int >= 0"),
        ({"keep_best": 1, "best_metric": ""}, "best_metric must name a metric"),
        ({"best_mode": "lowest"}, "best_mode must be 'min' or 'max'"),
        ({"directory": ""}, "directory must be non-empty"),
    ],
)
def test_config_is_validated(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        CheckpointConfig(**({"directory": tmp_path} | overrides))
    with pytest.raises(TypeError):
        CheckpointConfig(tmp_path)  # keyword-only
