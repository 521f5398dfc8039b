"""Schedules against hand-computed values, clipping, weight-decay masking, config validation."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from onesearch_jax.train.optimizers import OptimizerConfig, make_optimizer, make_schedule


def _values(config: OptimizerConfig, steps: list[int]) -> list[float]:
    schedule = make_schedule(config)
    return [float(schedule(step)) for step in steps]


def test_warmup_then_cosine():
    config = OptimizerConfig(
        learning_rate=0.1, warmup_steps=10, decay="cosine", total_steps=110, final_learning_rate_fraction=0.1
    )
    # warm-up 0 -> 0.1 over 10 steps; cosine over the next 100 steps from 0.1 to 0.01.
    want = [0.0, 0.05, 0.1, 0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25))), 0.055, 0.01, 0.01]
    np.testing.assert_allclose(_values(config, [0, 5, 10, 35, 60, 110, 500]), want, rtol=1e-6, atol=1e-9)


def test_rsqrt_after_warmup_and_t5x_constant_warmup():
    config = OptimizerConfig(learning_rate=0.01, warmup_steps=100, decay="rsqrt")
    # 0.01 * sqrt(100 / max(step, 100)) after a linear warm-up.
    np.testing.assert_allclose(
        _values(config, [0, 50, 100, 400, 10_000]), [0.0, 0.005, 0.01, 0.005, 0.001], rtol=1e-6, atol=1e-9
    )
    t5x = OptimizerConfig(learning_rate=0.01, warmup_steps=100, decay="rsqrt", warmup_init_fraction=1.0)
    # T5X's rsqrt_decay with base 0.1: 0.1 / sqrt(max(step, 100)).
    want = [0.1 / math.sqrt(max(step, 100)) for step in (0, 50, 100, 400, 10_000)]
    np.testing.assert_allclose(_values(t5x, [0, 50, 100, 400, 10_000]), want, rtol=1e-6)
    no_warmup = OptimizerConfig(learning_rate=1.0, decay="rsqrt")
    np.testing.assert_allclose(_values(no_warmup, [0, 1, 4, 16]), [1.0, 1.0, 0.5, 0.25], rtol=1e-6)


def test_constant_with_warmup():
    config = OptimizerConfig(learning_rate=2e-3, warmup_steps=4, warmup_init_fraction=0.5)
    np.testing.assert_allclose(_values(config, [0, 2, 4, 1000]), [1e-3, 1.5e-3, 2e-3, 2e-3], rtol=1e-6)


def test_the_optimizer_applies_the_schedule_at_each_step():
    config = OptimizerConfig(name="sgd", learning_rate=0.5, warmup_steps=2, clip_grad_norm=None)
    optimizer = make_optimizer(config)
    params = {"w": jnp.ones((3,))}
    state = optimizer.tx.init(params)
    grads = {"w": jnp.full((3,), 2.0)}
    for step in range(4):
        updates, state = optimizer.tx.update(grads, state, params)
        np.testing.assert_allclose(updates["w"], -2.0 * float(optimizer.schedule(step)), rtol=1e-6)
    assert [float(optimizer.schedule(s)) for s in range(4)] == [0.0, 0.25, 0.5, 0.5]


def test_clipping_bounds_the_global_norm():
    optimizer = make_optimizer(OptimizerConfig(name="sgd", learning_rate=1.0, clip_grad_norm=1.0))
    params = {"a": jnp.zeros((2, 2)), "b": jnp.zeros((3,))}
    state = optimizer.tx.init(params)
    big = {"a": jnp.full((2, 2), 3.0), "b": jnp.full((3,), 4.0)}  # global norm sqrt(36 + 48) ~ 9.17
    update = jax.jit(optimizer.tx.update)
    updates, _ = update(big, state, params)
    assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(updates["a"] / updates["a"][0, 0], 1.0)  # direction kept
    small = {"a": jnp.full((2, 2), 0.1), "b": jnp.zeros((3,))}  # norm 0.2: untouched
    updates, _ = update(small, state, params)
    np.testing.assert_allclose(updates["a"], -0.1, rtol=1e-6)


def test_adamw_decays_matrices_only_by_default():
    config = OptimizerConfig(name="adamw", learning_rate=1.0, weight_decay=0.1, clip_grad_norm=None)
    params = {"matrix": jnp.ones((2, 2)), "scale": jnp.ones((2,))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    for decay_1d, want_scale in ((False, 0.0), (True, -0.1)):
        tx = make_optimizer(OptimizerConfig(**{**config.__dict__, "decay_1d_params": decay_1d})).tx
        updates, _ = tx.update(zeros, tx.init(params), params)
        np.testing.assert_allclose(updates["matrix"], -0.1, rtol=1e-6)  # -lr * wd * p
        np.testing.assert_allclose(updates["scale"], want_scale, rtol=1e-6)


def test_adafactor_factors_large_matrices():
    config = OptimizerConfig(name="adafactor", learning_rate=1e-2, b1=0.0, adafactor_min_dim_size_to_factor=4)
    tx = make_optimizer(config).tx
    params = {"w": jnp.ones((8, 16)), "b": jnp.ones((3,))}
    state = tx.init(params)
    factored = state[1][0]
    assert factored.v_row["w"].shape == (8,) and factored.v_col["w"].shape == (16,)
    grads = {"w": jnp.full((8, 16), 0.5), "b": jnp.full((3,), 0.5)}
    updates, _ = jax.jit(tx.update)(grads, state, params)  # one compile instead of op-by-op dispatch
    assert all(bool(jnp.all(jnp.isfinite(u))) and bool(jnp.all(u < 0)) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "lamb"}, "OptimizerConfig.name must be one of ('adamw', 'adafactor', 'sgd'), got 'lamb'"),
        ({"decay": "linear"}, "OptimizerConfig.decay must be one of"),
        ({"decay": "cosine"}, "decay='cosine' needs total_steps > warmup_steps, got total_steps=None"),
        ({"decay": "cosine", "total_steps": 10, "warmup_steps": 10}, "got total_steps=10, warmup_steps=10"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"num_microbatches": 0}, "num_microbatches must be >= 1, got 0"),
        ({"clip_grad_norm": 0.0}, "clip_grad_norm must be > 0 or None"),
        ({"b2": 1.0}, "0 < b2 < 1"),
        ({"warmup_init_fraction": 2.0}, "warmup_init_fraction must be in [0, 1]"),
    ],
)
def test_bad_optimizer_config(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        OptimizerConfig(**kwargs)
