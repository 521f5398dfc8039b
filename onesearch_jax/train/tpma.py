"""TPMA-GRPO's credit assignment and policy loss (OneSearch-V2, arXiv 2603.24422, Eq. 13-19).

A group is the G rollouts (sampled SIDs ``o_i``, L tokens each) of one prompt; ``T`` is the set of
the prompt's ground-truth SIDs (its session's clicked and ordered items). Per rollout i and SID
position l = 1..L:

- prefix reward (Eq. 13): ``R_{i,l} = max_{t in T} sum_{k <= l} w_k [o_i^k = t^k]``, 0 when T is
  empty; marginal (Eq. 14): ``dR_{i,l} = R_{i,l} - R_{i,l-1}`` with ``R_{i,0} = 0``;
- position advantage (Eq. 15): ``A_{i,l}`` = ``dR_{i,l}`` normalised across the group at each
  position, ``(x - mean) / (std + delta)`` with the sample std (ddof 1, as ``torch.std``);
- prefix gate (Eq. 16): ``g_{i,1} = 1``, ``g_{i,l} = clip(M_{i,l-1} / (l - 1), 0, 1)`` with
  ``M_{i,l} = max_{t in T} sum_{k <= l} [o_i^k = t^k]`` the unweighted match count (the best
  ground truth for the count, which need not be the one that maximises the weighted reward);
- final advantage (Eq. 17): ``A^final_{i,l} = A_{i,l} + w_item * groupnorm(R_item)_i``;
- loss (Eq. 18-19): ``L_TPMA = -1/(G L) sum_i sum_l g_{i,l} r_{i,l} A^final_{i,l}`` with
  ``r = pi_theta / pi_theta_old`` per token and no clipping; averaged over prompts.

Plain GRPO (``AdvantageConfig.mode="grpo"``) gives every token the group-normalised item reward
and clips the ratio as PPO does: ``-mean min(r A, clip(r, 1 - eps, 1 + eps) A)``.

Token ids or codes both work as SIDs: rollouts and ground truths only need the same encoding.
Everything here is elementwise over prompts, so it runs on each device's own prompts when the
batch is sharded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from onesearch_jax.train.tpma_config import AdvantageConfig


def _check_shapes(samples: jax.Array, truths: jax.Array, truth_mask: jax.Array) -> None:
    if samples.ndim != 3 or truths.ndim != 3 or truth_mask.ndim != 2:
        raise ValueError(
            f"samples must be [B, G, L], truths [B, T, L] and truth_mask [B, T]; got shapes {samples.shape}, "
            f"{truths.shape} and {truth_mask.shape}"
        )
    same_b_and_l = truths.shape[0] == samples.shape[0] and truths.shape[2] == samples.shape[2]
    if not same_b_and_l or truth_mask.shape != truths.shape[:2]:
        raise ValueError(
            f"samples {samples.shape}, truths {truths.shape} and truth_mask {truth_mask.shape} disagree on B, T or L"
        )


def _hits(samples: jax.Array, truths: jax.Array, truth_mask: jax.Array) -> jax.Array:
    """``[B, G, T, L]`` float32: 1 where rollout i's token l equals real ground truth t's."""
    _check_shapes(samples, truths, truth_mask)
    return ((samples[:, :, None, :] == truths[:, None, :, :]) & truth_mask[:, None, :, None]).astype(jnp.float32)


def _best_cumulative(hits: jax.Array, weights: jax.Array | None) -> jax.Array:
    """``max_t sum_{k <= l} w_k hits[..., t, k]`` ``[B, G, L]``; 0 without any ground truth."""
    if weights is not None:
        hits = hits * jnp.asarray(weights, jnp.float32)
    return jnp.max(jnp.cumsum(hits, axis=-1), axis=2, initial=0.0)


def cumulative_matches(
    samples: jax.Array, truths: jax.Array, truth_mask: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """``max_{t in T} sum_{k <= l} w_k [o_i^k = t^k]`` ``[B, G, L]`` float32 (Eq. 13; unweighted when
    ``weights`` is None, i.e. ``M_{i,l}``).

    Args:
        samples: ``[B, G, L]`` int rollouts.
        truths: ``[B, T, L]`` int ground-truth SIDs (padding rows masked out).
        truth_mask: ``[B, T]`` bool, True for a real ground truth. A prompt without any gets 0.
        weights: ``[L]`` position weights ``w_k``.
    """
    return _best_cumulative(_hits(samples, truths, truth_mask), weights)


def marginal_rewards(prefix_rewards: jax.Array) -> jax.Array:
    """``dR_{i,l} = R_{i,l} - R_{i,l-1}`` over the last axis, ``R_{i,0} = 0`` (Eq. 14)."""
    return jnp.diff(prefix_rewards, axis=-1, prepend=0.0)


def group_normalize(x: jax.Array, *, epsilon: float, axis: int = 1) -> jax.Array:
    """``(x - mean) / (std + epsilon)`` across the group axis, sample std (ddof 1) (Eq. 15, 17).

    Raises:
        ValueError: a group of fewer than 2 rollouts (no sample std).
    """
    if x.shape[axis] < 2:
        raise ValueError(f"group normalisation needs at least 2 rollouts per group, got {x.shape[axis]}")
    mean = jnp.mean(x, axis=axis, keepdims=True)
    std = jnp.std(x, axis=axis, keepdims=True, ddof=1)
    return (x - mean) / (std + epsilon)


def prefix_gates(match_counts: jax.Array) -> jax.Array:
    """``g_{i,1} = 1``, ``g_{i,l} = clip(M_{i,l-1} / (l - 1), 0, 1)`` from ``M`` ``[..., L]`` (Eq. 16)."""
    earlier = match_counts[..., :-1] / jnp.arange(1, match_counts.shape[-1], dtype=jnp.float32)
    return jnp.concatenate([jnp.ones_like(match_counts[..., :1]), jnp.clip(earlier, 0.0, 1.0)], axis=-1)


def advantages(
    samples: jax.Array,
    truths: jax.Array,
    truth_mask: jax.Array,
    item_rewards: jax.Array,
    config: AdvantageConfig,
) -> tuple[jax.Array, jax.Array]:
    """Per-token advantages and gates ``([B, G, L], [B, G, L])`` float32 of the config's mode.

    ``tpma``: ``A^final`` (Eq. 17) and the prefix gates (Eq. 16). ``grpo``: the group-normalised
    item reward on every token, gates 1.

    Args:
        samples: ``[B, G, L]`` int rollouts.
        truths: ``[B, T, L]`` int ground-truth SIDs.
        truth_mask: ``[B, T]`` bool.
        item_rewards: ``[B, G]`` float composite reward ``R_item`` of each rollout (Eq. 9-10).
        config: the mode and weights.

    Raises:
        ValueError: shapes that disagree, or position weights of another length than L.
    """
    _check_shapes(samples, truths, truth_mask)
    if item_rewards.shape != samples.shape[:2]:
        raise ValueError(f"item_rewards must be [B, G] = {samples.shape[:2]}, got {item_rewards.shape}")
    item = group_normalize(item_rewards.astype(jnp.float32), epsilon=config.std_epsilon)[..., None]
    if config.mode == "grpo":
        shape = samples.shape
        return jnp.broadcast_to(item, shape), jnp.ones(shape, jnp.float32)
    length = samples.shape[-1]
    if len(config.position_weights) != length:
        raise ValueError(
            f"AdvantageConfig.position_weights has {len(config.position_weights)} weights for SIDs of {length} tokens"
        )
    hits = _hits(samples, truths, truth_mask)
    rewards = _best_cumulative(hits, jnp.asarray(config.position_weights))
    position = group_normalize(marginal_rewards(rewards), epsilon=config.std_epsilon)
    gates = prefix_gates(_best_cumulative(hits, None))
    return position + config.item_weight * item, gates


def importance_ratio(logprobs: jax.Array, old_logprobs: jax.Array) -> jax.Array:
    """``r = pi_theta / pi_theta_old`` per token (Eq. 18); gradients flow through ``logprobs`` only."""
    return jnp.exp(logprobs - jax.lax.stop_gradient(old_logprobs))


def policy_token_loss(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    token_advantages: jax.Array,
    gates: jax.Array,
    config: AdvantageConfig,
) -> jax.Array:
    """The per-token policy loss ``[B, G, L]`` of log-probabilities under the current and the
    rollout policy: ``-g r A^final`` (``L_TPMA``'s summand, Eq. 18-19, unclipped) or GRPO's clipped
    ``-min(r A, clip(r, 1 - eps, 1 + eps) A)``. Gradients flow through ``logprobs`` only."""
    ratio = importance_ratio(logprobs, old_logprobs)
    token_advantages = jax.lax.stop_gradient(token_advantages)
    if config.mode == "grpo":
        clipped = jnp.clip(ratio, 1.0 - config.clip_epsilon, 1.0 + config.clip_epsilon)
        return -jnp.minimum(ratio * token_advantages, clipped * token_advantages)
    return -jax.lax.stop_gradient(gates) * ratio * token_advantages


def policy_loss(
    logprobs: jax.Array,
    old_logprobs: jax.Array,
    token_advantages: jax.Array,
    gates: jax.Array,
    config: AdvantageConfig,
) -> jax.Array:
    """The scalar policy loss: :func:`policy_token_loss` averaged over prompts, rollouts and
    positions (``L_TPMA = -1/(G L) sum_i sum_l g r A^final``, Eq. 19, averaged over prompts)."""
    return jnp.mean(policy_token_loss(logprobs, old_logprobs, token_advantages, gates, config))


def k3_kl(logprobs: jax.Array, reference_logprobs: jax.Array) -> jax.Array:
    """Per-token k3 estimate of ``KL(pi_theta || pi_ref)`` on tokens sampled from ``pi_theta``:
    ``exp(d) - d - 1`` with ``d = log pi_ref - log pi_theta`` (Schulman's k3; GRPO's KL term)."""
    delta = jax.lax.stop_gradient(reference_logprobs) - logprobs
    return jnp.exp(delta) - delta - 1.0
