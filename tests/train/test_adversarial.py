"""FGM (Eq. 7): the perturbation's norm and direction, its zero-gradient case, and the two-pass losses by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onesearch_jax.train.adversarial import fgm_losses, fgm_perturbation

EPSILON = 0.6


def _grad() -> jax.Array:
    return jax.random.normal(jax.random.key(0), (3, 5, 4)) * jnp.array([1e-3, 1.0, 50.0])[:, None, None]


def test_perturbation_has_norm_epsilon_per_example_along_the_gradient():
    grad = _grad()
    r_adv = np.asarray(fgm_perturbation(grad, EPSILON), np.float64)
    norms = np.sqrt(np.sum(r_adv**2, axis=(1, 2)))
    np.testing.assert_allclose(norms, EPSILON, rtol=1e-6)  # every example, whatever its gradient's scale
    g = np.asarray(grad, np.float64)
    want = EPSILON * g / np.sqrt(np.sum(g**2, axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(r_adv, want, rtol=1e-5, atol=1e-7)


def test_zero_gradient_gives_a_zero_perturbation_without_nan():
    grad = _grad().at[1].set(0.0)
    r_adv = np.asarray(jax.jit(fgm_perturbation, static_argnums=1)(grad, EPSILON))
    assert np.all(np.isfinite(r_adv))
    assert not np.any(r_adv[1])
    np.testing.assert_allclose(np.sqrt(np.sum(r_adv[[0, 2]] ** 2, axis=(1, 2))), EPSILON, rtol=1e-6)
    assert not np.any(np.asarray(fgm_perturbation(jnp.zeros((2, 3, 4)), EPSILON)))


def test_perturbation_keeps_the_dtype_and_is_a_constant_for_autodiff():
    grad = _grad()
    assert fgm_perturbation(grad.astype(jnp.bfloat16), EPSILON).dtype == jnp.bfloat16
    through = jax.grad(lambda g: jnp.sum(fgm_perturbation(g, EPSILON) * g))(grad)
    np.testing.assert_allclose(np.asarray(through), np.asarray(fgm_perturbation(grad, EPSILON)), rtol=1e-6)


def test_fgm_losses_by_hand_on_a_quadratic():
    # L(e, k) = k/2 * sum(e^2): g = k e with k = 1 on the clean pass, so r_adv = eps * e_b / ||e_b||,
    # and the perturbed pass (k = 2) is sum((e + r_adv)^2).
    e = jax.random.normal(jax.random.key(1), (2, 3, 4))

    def loss(embeddings, k):
        return 0.5 * k * jnp.sum(jnp.square(embeddings)), embeddings

    def both(embeddings):
        return fgm_losses(loss, embeddings, epsilon=EPSILON, rng=jnp.float32(1.0), adversarial_rng=jnp.float32(2.0))

    (clean, clean_aux), (adversarial, adversarial_aux) = both(e)
    x = np.asarray(e, np.float64)
    r_adv = EPSILON * x / np.sqrt(np.sum(x**2, axis=(1, 2), keepdims=True))
    assert float(clean) == pytest.approx(0.5 * np.sum(x**2), rel=1e-6)
    assert float(adversarial) == pytest.approx(np.sum((x + r_adv) ** 2), rel=1e-6)
    np.testing.assert_allclose(np.asarray(clean_aux), x, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(adversarial_aux), x + r_adv, rtol=1e-5)
    # An outer gradient treats r_adv as a constant: d/de sum((e + r)^2) = 2 (e + r).
    outer = jax.grad(lambda v: both(v)[1][0])(e)
    np.testing.assert_allclose(np.asarray(outer), 2 * (x + r_adv), rtol=1e-5, atol=1e-6)
