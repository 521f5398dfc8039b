"""FGM adversarial training on input embeddings (OneSearch-V2, arXiv 2603.24422, Eq. 7).

The fast gradient method (Miyato et al. 2017) perturbs the input embeddings ``e`` in the direction
that increases the loss most, to first order, and trains on the perturbed input as well:

    g     = d L_base / d e                 (the loss of the clean pass, Eq. 5)
    r_adv = epsilon * g_b / ||g_b||_2       (per example b; r_adv is a constant: no gradient through it)
    L_adv = L_base(e + r_adv)               (a second pass, added to the total loss)

Norm scope: one L2 norm per *example*, over all of its embedding positions and features, as in
Miyato et al.'s definition. The public OneSearch code uses the common PyTorch ``FGM`` class instead,
which perturbs the embedding *weight matrix* by ``epsilon * G / ||G||`` with ``G`` its gradient and
one norm over the whole matrix, so one norm per batch (and the shared embedding then also moves the
decoder's inputs). A per-example norm gives every example the same perturbation size whatever the
batch and its split into microbatches: a step with ``num_microbatches = k`` stays equal to one big
batch, and ``epsilon`` does not act as ``epsilon / sqrt(batch)`` per example. Since ``g`` is
normalised, it does not matter whether ``L_base`` is a sum or a mean over tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp

Aux = TypeVar("Aux")


def fgm_perturbation(grad: jax.Array, epsilon: float) -> jax.Array:
    """FGM's ``r_adv = epsilon * g / ||g||_2`` (Eq. 7), one norm per example, under ``stop_gradient``.

    Args:
        grad: ``[B, ...]`` gradient of the loss w.r.t. the input embeddings (``[B, S, embed]``).
        epsilon: the perturbation's L2 norm per example.

    Returns:
        ``[B, ...]`` in ``grad``'s dtype: each example's ``r_adv`` has L2 norm ``epsilon``, or is all
        zeros where its gradient is (no NaN). The norm is taken in float32.
    """
    g = jax.lax.stop_gradient(grad).astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim)), keepdims=True))
    r_adv = epsilon * g / jnp.where(norm > 0, norm, 1.0)
    return r_adv.astype(grad.dtype)


def fgm_losses(
    loss_of_embeddings: Callable[[jax.Array, jax.Array | None], tuple[jax.Array, Aux]],
    embeddings: jax.Array,
    *,
    epsilon: float,
    rng: jax.Array | None,
    adversarial_rng: jax.Array | None,
) -> tuple[tuple[jax.Array, Aux], tuple[jax.Array, Aux]]:
    """The clean loss and FGM's adversarial loss (Eq. 7), from one gradient w.r.t. the embeddings.

    ``loss_of_embeddings(embeddings, rng)`` runs the clean pass; its value and its gradient ``g``
    w.r.t. ``embeddings`` come from one ``jax.value_and_grad``. The second pass runs
    ``loss_of_embeddings(embeddings + r_adv, adversarial_rng)`` with ``r_adv = fgm_perturbation(g,
    epsilon)`` held constant. Both returned losses (and auxes) stay differentiable w.r.t. anything
    ``loss_of_embeddings`` closes over and w.r.t. ``embeddings`` itself, so an outer ``jax.grad``
    over the parameters trains on both passes.

    Args:
        loss_of_embeddings: ``(embeddings, dropout key) -> (L_base, aux)``: the student pass from its
            input embeddings to its float32 scalar loss and anything else it wants returned.
        embeddings: ``[B, S, embed]`` student input embeddings (``EncoderDecoder.embed_inputs``).
        epsilon: FGM's perturbation norm per example.
        rng: dropout key of the clean pass (None without dropout).
        adversarial_rng: dropout key of the perturbed pass.

    Returns:
        ``((L_base, aux), (L_adv, aux_adv))``.
    """
    clean, grad = jax.value_and_grad(loss_of_embeddings, has_aux=True)(embeddings, rng)
    adversarial = loss_of_embeddings(embeddings + fgm_perturbation(grad, epsilon), adversarial_rng)
    return clean, adversarial
