"""LR-ESD's token losses against hand-computed values: KL (Eq. 4), R-Drop's symmetric KL (Eq. 6), focal loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onesearch_jax.train.losses import focal_cross_entropy, symmetric_kl, token_kl
from onesearch_jax.train.step import token_cross_entropy

LN2 = float(np.log(2.0))


def _softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(z, np.float64) / temperature
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.sum(p * np.log(p / q), axis=-1)


# Two target positions over a 4-token vocabulary: position 0 is the first SID token.
TEACHER_PROBS = np.array([[0.5, 0.25, 0.125, 0.125], [0.7, 0.1, 0.1, 0.1]])
STUDENT_PROBS = np.array([[0.25, 0.25, 0.25, 0.25], [0.4, 0.3, 0.2, 0.1]])
TEACHER = jnp.log(jnp.asarray(TEACHER_PROBS, jnp.float32))[None]  # [1, 2, 4] logits
STUDENT = jnp.log(jnp.asarray(STUDENT_PROBS, jnp.float32))[None]


def test_token_kl_on_two_positions_counts_the_first_sid_token():
    # Position 0 by hand: KL(p || uniform) = sum p log(4p) = 0.5 ln 2 + 0 + 2 * 0.125 ln 0.5 = ln 2 / 4.
    first = LN2 / 4
    second = 0.7 * np.log(0.7 / 0.4) + 0.1 * np.log(0.1 / 0.3) + 0.1 * np.log(0.1 / 0.2) + 0.1 * np.log(0.1 / 0.1)
    assert _kl(TEACHER_PROBS, STUDENT_PROBS) == pytest.approx([first, second])
    both = token_kl(TEACHER, STUDENT, jnp.array([[1.0, 1.0]]))
    assert float(both) == pytest.approx(first + second, rel=1e-6)
    assert float(token_kl(TEACHER, STUDENT, jnp.array([[1.0, 0.0]]))) == pytest.approx(first, rel=1e-6)
    assert float(token_kl(TEACHER, STUDENT, jnp.array([[0.0, 1.0]]))) == pytest.approx(second, rel=1e-6)
    weighted = token_kl(TEACHER, STUDENT, jnp.array([[2.0, 0.5]]))
    assert float(weighted) == pytest.approx(2.0 * first + 0.5 * second, rel=1e-6)


def test_token_kl_temperature_scales_both_distributions_and_multiplies_by_tau_squared():
    tau = 2.0
    p, q = _softmax(np.log(TEACHER_PROBS), tau), _softmax(np.log(STUDENT_PROBS), tau)
    want = tau**2 * np.sum(_kl(p, q))
    got = token_kl(TEACHER, STUDENT, jnp.ones((1, 2)), temperature=tau)
    assert float(got) == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        token_kl(TEACHER, STUDENT, jnp.ones((1, 2)), temperature=0.0)


def test_token_kl_gradient_reaches_the_student_only():
    tau, weights = 2.0, jnp.array([[1.0, 0.5]])
    grad_teacher, grad_student = jax.grad(token_kl, argnums=(0, 1))(TEACHER, STUDENT, weights, temperature=tau)
    assert not np.any(np.asarray(grad_teacher))  # the teacher is the target: stop_gradient
    # d/dz^S [tau^2 KL(p || softmax(z^S / tau))] = tau * (q - p), per position times its weight.
    p, q = _softmax(np.log(TEACHER_PROBS), tau), _softmax(np.log(STUDENT_PROBS), tau)
    want = tau * (q - p) * np.array([1.0, 0.5])[:, None]
    np.testing.assert_allclose(np.asarray(grad_student)[0], want, atol=1e-6)


def test_token_kl_is_stable_for_large_logits():
    teacher = jnp.array([[[1e4, 0.0, -1e4, 5.0]]])  # p = one-hot on token 0 in float32
    student = jnp.array([[[1e4 - 1.0, 1e4, -1e4, 0.0]]])  # q_0 = e^-1 / (e^-1 + 1)
    value = float(token_kl(teacher, student, jnp.ones((1, 1))))
    assert value == pytest.approx(np.log1p(np.e), rel=1e-6)  # KL = log 1 - log q_0 = log(1 + e)


def test_symmetric_kl_is_symmetric_zero_on_equal_passes_and_matches_the_formula():
    weights = jnp.array([[1.0, 0.5]])
    one_two = float(symmetric_kl(TEACHER, STUDENT, weights))
    two_one = float(symmetric_kl(STUDENT, TEACHER, weights))
    want = np.sum(0.5 * (_kl(TEACHER_PROBS, STUDENT_PROBS) + _kl(STUDENT_PROBS, TEACHER_PROBS)) * [1.0, 0.5])
    assert one_two == pytest.approx(want, rel=1e-6)
    assert two_one == pytest.approx(one_two, rel=1e-6)
    assert float(symmetric_kl(STUDENT, STUDENT, weights)) == 0.0


def test_symmetric_kl_gradient_flows_through_both_passes():
    grad_1, grad_2 = jax.grad(symmetric_kl, argnums=(0, 1))(TEACHER, STUDENT, jnp.ones((1, 2)))
    assert np.abs(np.asarray(grad_1)).sum() > 0 and np.abs(np.asarray(grad_2)).sum() > 0
    swapped_2, swapped_1 = jax.grad(symmetric_kl, argnums=(0, 1))(STUDENT, TEACHER, jnp.ones((1, 2)))
    np.testing.assert_allclose(np.asarray(swapped_1), np.asarray(grad_1), atol=1e-7)
    np.testing.assert_allclose(np.asarray(swapped_2), np.asarray(grad_2), atol=1e-7)


def test_focal_loss_at_gamma_zero_is_the_cross_entropy_bit_for_bit():
    logits = jax.random.normal(jax.random.key(0), (3, 5, 11)) * 3
    targets = jax.random.randint(jax.random.key(1), (3, 5), 0, 11)
    weights = (jax.random.uniform(jax.random.key(2), (3, 5)) > 0.3).astype(jnp.float32)
    focal = jax.jit(focal_cross_entropy, static_argnames="gamma")(logits, targets, weights, gamma=0.0)
    ce = jax.jit(token_cross_entropy)(logits, targets, weights)
    assert float(focal.loss_sum) == float(ce.loss_sum)
    assert float(focal.weight_sum) == float(ce.weight_sum)
    assert {k: float(v) for k, v in focal.metrics.items()} == {k: float(v) for k, v in ce.metrics.items()}


def test_focal_loss_by_hand_and_below_the_cross_entropy():
    probs = np.array([[0.5, 0.25, 0.125, 0.125], [0.1, 0.6, 0.2, 0.1]])
    targets, weights = jnp.array([[0, 2]]), jnp.array([[1.0, 2.0]])
    p_y = np.array([0.5, 0.2])
    logits = jnp.log(jnp.asarray(probs, jnp.float32))[None]
    for gamma in (0.5, 2.0):
        want = np.sum(-((1 - p_y) ** gamma) * np.log(p_y) * [1.0, 2.0])
        out = focal_cross_entropy(logits, targets, weights, gamma=gamma)
        assert float(out.loss_sum) == pytest.approx(want, rel=1e-6)
        assert float(out.loss_sum) < float(out.metrics["cross_entropy"])
        assert float(out.metrics["cross_entropy"]) == pytest.approx(-np.sum(np.log(p_y) * [1.0, 2.0]), rel=1e-6)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        focal_cross_entropy(logits, targets, weights, gamma=-1.0)


def test_focal_loss_gradient_is_finite_when_the_target_is_certain():
    logits = jnp.array([[[200.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]])  # p_y rounds to 1 at position 0
    for gamma in (0.5, 2.0):
        grad = jax.grad(lambda z, g=gamma: focal_cross_entropy(z, jnp.array([[0, 1]]), jnp.ones((1, 2)), gamma=g)[0])
        assert np.all(np.isfinite(np.asarray(grad(logits))))
