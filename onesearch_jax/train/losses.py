"""Token losses on logits for LR-ESD self-distillation, R-Drop and focal loss (OneSearch-V2, arXiv 2603.24422).

Pure functions of logits ``[..., vocab]`` and loss weights ``[...]`` (``decoder_loss_weights``: 1 on
real target tokens, 0 on padding), each returning a weighted *sum* over tokens, as
``onesearch_jax.train.step.token_cross_entropy`` does: the train step divides all sums by the total
weight once, so microbatched steps stay exact. The math is float32 on ``log_softmax`` (no
``softmax`` followed by ``log``), so large or peaked logits neither overflow nor give ``log 0``.

With ``log p = log_softmax(z / tau)`` of teacher logits ``z^T`` and ``log q`` the same of student
logits ``z^S``, ``KL(p || q) = sum_v p_v (log p_v - log q_v)`` per token:

    token_kl             tau^2 * sum_t w_t KL(p_t || q_t)                          (Eq. 4)
    symmetric_kl         1/2 * sum_t w_t [KL(P1_t || P2_t) + KL(P2_t || P1_t)]      (Eq. 6)
    focal_cross_entropy  -sum_t w_t (1 - p_y)^gamma log p_y                         (focal loss)

The logits must be finite (the models here never mask a logit to -inf).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from onesearch_jax.train.step import LossOutput, per_token_cross_entropy, token_loss_output

_TINY = float(jnp.finfo(jnp.float32).tiny)


def _log_probs(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
    return jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)


def _kl(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """``KL(p || q)`` per token from log-probabilities ``[..., vocab]`` -> ``[...]``."""
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def token_kl(
    teacher_logits: jax.Array, student_logits: jax.Array, weights: jax.Array, *, temperature: float = 1.0
) -> jax.Array:
    """LR-ESD's distillation term (Eq. 4) as a weighted sum over target positions.

    ``tau^2 * sum_t w_t KL(softmax(z^T_t / tau) || softmax(z^S_t / tau))``: forward KL from the
    teacher's distribution to the student's, the teacher under ``stop_gradient`` (it is the target,
    not trained by this term). The ``tau^2`` factor keeps the gradient's scale independent of the
    temperature (Hinton et al. 2015). Every position with a nonzero weight counts, the first target
    (SID) token included: pass ``decoder_loss_weights``, which line up with the logits (position
    ``t``'s logits predict ``decoder_target_tokens[t]``), not a mask shifted by one.

    Args:
        teacher_logits: ``[..., vocab]`` logits of the teacher input (keywords included).
        student_logits: ``[..., vocab]`` logits of the student input, same shape.
        weights: ``[...]`` loss weights.
        temperature: ``tau > 0``.

    Returns:
        The float32 scalar weighted sum; divide by ``sum(weights)`` for Eq. 4's mean.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_p = _log_probs(jax.lax.stop_gradient(teacher_logits), temperature)
    log_q = _log_probs(student_logits, temperature)
    return temperature**2 * jnp.sum(_kl(log_p, log_q) * weights.astype(jnp.float32))


def symmetric_kl(logits_1: jax.Array, logits_2: jax.Array, weights: jax.Array) -> jax.Array:
    """R-Drop's consistency term (Eq. 6) as a weighted sum over target positions.

    ``1/2 * sum_t w_t [KL(P1_t || P2_t) + KL(P2_t || P1_t)]`` of the two dropout passes' token
    distributions. Gradients flow through both passes, as in R-Drop (Liang et al. 2021): each pass
    is pulled towards the other. Symmetric in its arguments; 0 when they are equal.

    Args:
        logits_1: ``[..., vocab]`` logits of the first pass.
        logits_2: ``[..., vocab]`` logits of the second pass (other dropout masks), same shape.
        weights: ``[...]`` loss weights.

    Returns:
        The float32 scalar weighted sum.
    """
    log_p1, log_p2 = _log_probs(logits_1), _log_probs(logits_2)
    per_token = 0.5 * (_kl(log_p1, log_p2) + _kl(log_p2, log_p1))
    return jnp.sum(per_token * weights.astype(jnp.float32))


def focal_cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array, *, gamma: float) -> LossOutput:
    """Focal loss (Lin et al. 2017), OneSearch-V2's replacement for the token cross-entropy.

    ``-sum_t w_t (1 - p_y)^gamma log p_y`` with ``p_y = softmax(z_t)[y_t]``: tokens the model already
    predicts well (``p_y`` near 1) are down-weighted. At ``gamma = 0`` the factor is exactly 1 and
    the loss is the cross-entropy, bit for bit; for ``gamma > 0`` it is smaller wherever
    ``p_y > 0``. ``1 - p_y`` is floored at float32's smallest normal number so that the gradient
    stays finite when ``p_y`` rounds to 1 and ``gamma < 1``.

    Args:
        logits: ``[..., vocab]``, cast to float32.
        targets: int ``[...]``.
        weights: ``[...]`` loss weights.
        gamma: focusing parameter ``>= 0``.

    Returns:
        ``LossOutput`` with ``loss_sum`` the weighted focal loss and metrics ``accuracy`` and
        ``cross_entropy`` (the plain cross-entropy, as ``token_cross_entropy`` reports it).
    """
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    _, cross_entropy = per_token_cross_entropy(logits, targets)
    modulation = jnp.maximum(-jnp.expm1(-cross_entropy), _TINY) ** gamma
    return token_loss_output(modulation * cross_entropy, cross_entropy, logits, targets, weights)
