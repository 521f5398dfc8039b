"""Counter-hash dropout: the rate, scaling, reproducibility and independence of its masks; the
position-bias addition whose gradient is a matrix product."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from onesearch_jax.models.dropout import Dropout, dropout, keep_mask
from onesearch_jax.models.layers import add_position_bias

SHAPE = (16, 4, 128, 128)  # 1,048,576 elements, an attention-weights shape


def mask(seed: int, rate: float, shape=SHAPE) -> np.ndarray:
    return np.asarray(jax.jit(keep_mask, static_argnums=(1, 2))(jax.random.key(seed), shape, rate))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_fraction_is_one_minus_rate(rate):
    m = mask(0, rate)
    n = m.size
    sigma = np.sqrt(rate * (1 - rate) / n)
    assert abs(m.mean() - (1 - rate)) < 5 * sigma, (m.mean(), 1 - rate)
    # and in every slice along each axis, not only overall
    for axis in range(m.ndim):
        per_slice = m.mean(axis=tuple(a for a in range(m.ndim) if a != axis))
        slice_sigma = np.sqrt(rate * (1 - rate) / (n / m.shape[axis]))
        assert np.abs(per_slice - (1 - rate)).max() < 6 * slice_sigma, axis


def test_neighbouring_elements_are_uncorrelated():
    m = mask(1, 0.5).astype(np.float64) * 2 - 1  # +-1, mean ~0
    bound = 5 / np.sqrt(m.size)
    for axis in range(m.ndim):
        a = np.moveaxis(m, axis, -1)
        corr = np.mean(a[..., 1:] * a[..., :-1])
        assert abs(corr) < bound * 1.1, (axis, corr)
    # rows of one sequence position, heads of one batch row: whole slices agree at chance
    assert abs(np.mean(m[:, :, 0, :] * m[:, :, 1, :])) < 5 / np.sqrt(m[:, :, 0, :].size)


def test_same_key_same_mask_other_keys_independent():
    np.testing.assert_array_equal(mask(3, 0.1), mask(3, 0.1))
    a, b = mask(3, 0.1), mask(4, 0.1)
    split_a, split_b = (np.asarray(keep_mask(k, SHAPE, 0.1)) for k in jax.random.split(jax.random.key(3)))
    expected = 0.9**2 + 0.1**2  # agreement of two independent masks
    sigma = np.sqrt(expected * (1 - expected) / a.size)
    for x, y in ((a, b), (split_a, split_b), (a, split_a)):
        assert abs(np.mean(x == y) - expected) < 5 * sigma
        # both dropped: 0.01 when independent
        assert abs(np.mean(~x & ~y) - 0.01) < 5 * np.sqrt(0.01 * 0.99 / a.size)


def test_the_mask_does_not_depend_on_the_leading_shape_split():
    """A position's bit depends on its (row, column) index: reshaping the leading axes keeps it."""
    key = jax.random.key(5)
    np.testing.assert_array_equal(
        np.asarray(keep_mask(key, (4, 6, 10), 0.3)).reshape(24, 10), np.asarray(keep_mask(key, (24, 10), 0.3))
    )


def test_dropout_values_and_expectation():
    x = jnp.asarray(np.random.default_rng(0).normal(size=SHAPE).astype(np.float32))
    key = jax.random.key(7)
    y = np.asarray(jax.jit(dropout, static_argnums=2)(x, key, 0.2))
    keep = np.asarray(keep_mask(key, SHAPE, 0.2))
    np.testing.assert_array_equal(y[~keep], 0.0)
    np.testing.assert_allclose(y[keep], np.asarray(x)[keep] / 0.8, rtol=1e-6)
    ones = np.asarray(dropout(jnp.ones(SHAPE), key, 0.2))
    assert abs(ones.mean() - 1.0) < 5 * np.sqrt(0.2 / 0.8 / ones.size)
    assert dropout(x, key, 0.0) is x


def test_bfloat16_keeps_dtype():
    y = dropout(jnp.ones((4, 8), jnp.bfloat16), jax.random.key(0), 0.5)
    assert y.dtype == jnp.bfloat16
    assert set(np.unique(np.asarray(y, np.float32))) <= {0.0, 2.0}


def test_module_deterministic_and_rngs():
    layer = Dropout(0.5)
    x = jnp.ones((8, 8))
    assert layer(x, deterministic=True) is x
    assert Dropout(0.0)(x, deterministic=False) is x
    with pytest.raises(ValueError, match="needs rngs"):
        layer(x, deterministic=False)
    rngs = nnx.Rngs(dropout=0)
    first, second = layer(x, deterministic=False, rngs=rngs), layer(x, deterministic=False, rngs=rngs)
    assert not np.array_equal(np.asarray(first), np.asarray(second))  # each call draws a new key
    again = nnx.Rngs(dropout=0)
    np.testing.assert_array_equal(np.asarray(layer(x, deterministic=False, rngs=again)), np.asarray(first))


@pytest.mark.parametrize("rate", [-0.1, 1.0, "0.1"])
def test_bad_rates_are_refused(rate):
    with pytest.raises(ValueError, match="rate"):
        Dropout(rate)


def test_too_large_shapes_are_refused():
    with pytest.raises(ValueError, match="too large"):
        keep_mask(jax.random.key(0), (2**16, 2**16, 2), 0.1)


def test_add_position_bias_value_and_gradients_match_broadcasting():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 2, 4, 5)).astype(np.float32))
    bias = jnp.asarray(rng.normal(size=(1, 2, 4, 5)).astype(np.float32))
    weight = jnp.asarray(rng.normal(size=(3, 2, 4, 5)).astype(np.float32))

    def loss(fn):
        return lambda a, b: jnp.sum(jnp.tanh(fn(a, b)) * weight)

    np.testing.assert_array_equal(np.asarray(add_position_bias(logits, bias)), np.asarray(logits + bias))
    ours = jax.jit(jax.grad(loss(add_position_bias), argnums=(0, 1)))(logits, bias)
    plain = jax.grad(loss(jnp.add), argnums=(0, 1))(logits, bias)
    for got, want in zip(ours, plain, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_add_position_bias_refuses_a_batched_bias():
    with pytest.raises(ValueError, match=r"\[1, H, Q, K\]"):
        add_position_bias(jnp.zeros((2, 2, 3, 3)), jnp.zeros((2, 2, 3, 3)))
