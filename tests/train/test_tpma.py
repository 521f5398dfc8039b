"""TPMA's prefix rewards, marginals, gates, advantages and loss on a hand-worked group (Eq. 13-19).

The group: G = 4 rollouts of L = 5 tokens, two ground-truth SIDs, weights (2, 2, 2, 1, 1):

    t1 = 1 2 3 4 5      o1 = 1 2 3 4 5   (t1 exactly)
    t2 = 1 2 6 7 8      o2 = 1 2 6 0 8   (t2 but the 4th token)
                        o3 = 1 9 3 4 0   (t1's 1st, 3rd and 4th tokens)
                        o4 = 0 2 3 7 8   (2nd, 3rd of t1; 2nd, 4th, 5th of t2)

Every number below is worked out by hand in the comments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onesearch_jax.train.tpma import (
    advantages,
    cumulative_matches,
    group_normalize,
    k3_kl,
    marginal_rewards,
    policy_loss,
    prefix_gates,
)
from onesearch_jax.train.tpma_config import PUBLIC_CODE_POSITION_WEIGHTS, AdvantageConfig

SAMPLES = jnp.array([[[1, 2, 3, 4, 5], [1, 2, 6, 0, 8], [1, 9, 3, 4, 0], [0, 2, 3, 7, 8]]])
TRUTHS = jnp.array([[[1, 2, 3, 4, 5], [1, 2, 6, 7, 8], [0, 0, 0, 0, 0]]])  # third row is padding
MASK = jnp.array([[True, True, False]])
ITEM_REWARDS = jnp.array([[7.0, 3.0, 0.0, 3.5]])
WEIGHTS = (2.0, 2.0, 2.0, 1.0, 1.0)

# Weighted cumulative matches, against t1 | t2, then the max:
#   o1: 2 4 6 7 8 | 2 4 4 4 4 -> 2 4 6 7 8
#   o2: 2 4 4 4 4 | 2 4 6 6 7 -> 2 4 6 6 7
#   o3: 2 2 4 5 5 | 2 2 2 2 2 -> 2 2 4 5 5
#   o4: 0 2 4 4 4 | 0 2 2 3 4 -> 0 2 4 4 4
PREFIX = [[2, 4, 6, 7, 8], [2, 4, 6, 6, 7], [2, 2, 4, 5, 5], [0, 2, 4, 4, 4]]
MARGINAL = [[2, 2, 2, 1, 1], [2, 2, 2, 0, 1], [2, 0, 2, 1, 0], [0, 2, 2, 0, 0]]
# Unweighted counts M (max over t1, t2): o1 1 2 3 4 5; o2 1 2 3 3 4; o3 1 1 2 3 3; o4 0 1 2 2 3
COUNTS = [[1, 2, 3, 4, 5], [1, 2, 3, 3, 4], [1, 1, 2, 3, 3], [0, 1, 2, 2, 3]]
# g_1 = 1, g_l = clip(M_{l-1} / (l - 1), 0, 1)
GATES = [[1, 1, 1, 1, 1], [1, 1, 1, 1, 3 / 4], [1, 1, 1 / 2, 2 / 3, 3 / 4], [1, 0, 1 / 2, 2 / 3, 2 / 4]]
# Per position, marginals across the group and their (x - mean) / std, std with ddof 1:
#   l=1 (2 2 2 0): mean 1.5, std sqrt(3/3) = 1          -> .5 .5 .5 -1.5
#   l=2 (2 2 0 2): likewise                              -> .5 .5 -1.5 .5
#   l=3 (2 2 2 2): std 0, so 0 / (0 + delta)            -> 0 0 0 0
#   l=4 (1 0 1 0): mean .5, std sqrt(1/3), .5 / std = h -> h -h h -h
#   l=5 (1 1 0 0):                                       -> h h -h -h
H = 0.5 / np.sqrt(1 / 3)
POSITION = [[0.5, 0.5, 0, H, H], [0.5, 0.5, 0, -H, H], [0.5, -1.5, 0, H, -H], [-1.5, 0.5, 0, -H, -H]]
# Item rewards 7, 3, 0, 3.5: mean 3.375, deviations 3.625 -0.375 -3.375 0.125, sum of squares 24.6875
ITEM = np.array([3.625, -0.375, -3.375, 0.125]) / np.sqrt(24.6875 / 3)


def test_prefix_rewards_marginals_and_match_counts_by_hand():
    prefix = cumulative_matches(SAMPLES, TRUTHS, MASK, jnp.array(WEIGHTS))
    np.testing.assert_array_equal(np.asarray(prefix)[0], PREFIX)
    np.testing.assert_array_equal(np.asarray(marginal_rewards(prefix))[0], MARGINAL)
    np.testing.assert_array_equal(np.asarray(cumulative_matches(SAMPLES, TRUTHS, MASK))[0], COUNTS)


def test_gates_by_hand():
    gates = prefix_gates(cumulative_matches(SAMPLES, TRUTHS, MASK))
    np.testing.assert_allclose(np.asarray(gates)[0], GATES, rtol=1e-6)


def test_group_normalisation_uses_the_sample_std_and_delta():
    normalized = group_normalize(jnp.array(MARGINAL, jnp.float32)[None], epsilon=1e-8)
    np.testing.assert_allclose(np.asarray(normalized)[0], POSITION, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="at least 2 rollouts"):
        group_normalize(jnp.ones((1, 1, 5)), epsilon=1e-8)


def test_tpma_advantages_by_hand():
    config = AdvantageConfig(position_weights=WEIGHTS, item_weight=0.5)
    advantage, gates = advantages(SAMPLES, TRUTHS, MASK, ITEM_REWARDS, config)
    expected = np.array(POSITION) + 0.5 * ITEM[:, None]
    np.testing.assert_allclose(np.asarray(advantage)[0], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(gates)[0], GATES, rtol=1e-6)


def test_plain_grpo_puts_the_item_advantage_on_every_token_ungated():
    advantage, gates = advantages(SAMPLES, TRUTHS, MASK, ITEM_REWARDS, AdvantageConfig(mode="grpo"))
    np.testing.assert_allclose(np.asarray(advantage)[0], np.repeat(ITEM[:, None], 5, axis=1), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(gates), np.ones((1, 4, 5)))


def test_a_position_of_weight_zero_has_no_advantage_without_the_item_term():
    config = AdvantageConfig(position_weights=PUBLIC_CODE_POSITION_WEIGHTS, item_weight=0.0)
    advantage, _ = advantages(SAMPLES, TRUTHS, MASK, ITEM_REWARDS, config)
    np.testing.assert_array_equal(np.asarray(advantage)[0, :, 4], np.zeros(4))
    assert np.abs(np.asarray(advantage)[0, :, 3]).max() > 0.5  # weight 1: the rollouts differ there


def test_a_prompt_without_ground_truth_gets_only_the_item_advantage():
    config = AdvantageConfig(position_weights=WEIGHTS, item_weight=1.0)
    advantage, gates = advantages(SAMPLES, TRUTHS, jnp.zeros_like(MASK), ITEM_REWARDS, config)
    np.testing.assert_allclose(np.asarray(advantage)[0], np.repeat(ITEM[:, None], 5, axis=1), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(gates)[0, :, 1:], np.zeros((4, 4)))  # nothing matched


def test_loss_by_hand_and_its_gradient_moves_probability_towards_higher_advantage():
    config = AdvantageConfig(position_weights=WEIGHTS, item_weight=0.5)
    advantage, gates = advantages(SAMPLES, TRUTHS, MASK, ITEM_REWARDS, config)
    old = jnp.log(jnp.full((1, 4, 5), 0.3))
    # At the rollout policy every ratio is 1: L = -1/(G L) sum g A
    loss = policy_loss(old, old, advantage, gates, config)
    expected = -np.mean(np.array(GATES) * (np.array(POSITION) + 0.5 * ITEM[:, None]))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    grad = np.asarray(jax.grad(policy_loss)(old, old, advantage, gates, config))[0]
    weighted = np.array(GATES) * np.asarray(advantage)[0]
    # Gradient descent raises log p where g A > 0 and lowers it where g A < 0; no push where g A = 0.
    np.testing.assert_allclose(grad, -weighted / 20, rtol=1e-6, atol=1e-9)
    assert (np.sign(-grad) == np.sign(np.round(weighted, 6))).all()


def test_grpo_loss_clips_the_ratio():
    config = AdvantageConfig(mode="grpo", clip_epsilon=0.2)
    advantage = jnp.array([[[1.0], [-1.0]]])
    gates = jnp.ones_like(advantage)
    old = jnp.zeros_like(advantage)
    new = jnp.log(jnp.array([[[1.5], [0.5]]]))  # ratios 1.5 and 0.5
    # min(1.5 * 1, 1.2 * 1) = 1.2; min(0.5 * -1, 0.8 * -1) = -0.8; loss = -(1.2 - 0.8) / 2
    np.testing.assert_allclose(float(policy_loss(new, old, advantage, gates, config)), -0.2, rtol=1e-6)
    grad = np.asarray(jax.grad(policy_loss)(new, old, advantage, gates, config))
    np.testing.assert_array_equal(grad, np.zeros_like(grad))  # both ratios past the clip: no gradient


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere():
    logp = jnp.log(jnp.array([0.2, 0.5]))
    np.testing.assert_allclose(np.asarray(k3_kl(logp, logp)), [0.0, 0.0], atol=1e-7)
    ref = jnp.log(jnp.array([0.4, 0.25]))
    # d = log(ref / p) = log 2 and -log 2; exp(d) - d - 1 = 2 - log 2 - 1 and 0.5 + log 2 - 1
    np.testing.assert_allclose(np.asarray(k3_kl(logp, ref)), [1 - np.log(2), np.log(2) - 0.5], rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "ppo"}, "mode must be one of"),
        ({"position_weights": ()}, "non-empty"),
        ({"position_weights": (1.0, -1.0)}, r"position_weights\[1\] must be >= 0"),
        ({"position_weights": (0.0, 0.0)}, "must not all be 0"),
        ({"item_weight": float("nan")}, "item_weight must be a finite number"),
        ({"std_epsilon": 0.0}, "std_epsilon must be > 0"),
        ({"clip_epsilon": True}, "clip_epsilon must be a finite number"),
    ],
)
def test_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdvantageConfig(**kwargs)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="5 tokens"):
        advantages(SAMPLES, TRUTHS, MASK, ITEM_REWARDS, AdvantageConfig(position_weights=(1.0, 1.0)))
    with pytest.raises(ValueError, match=r"item_rewards must be \[B, G\]"):
        advantages(SAMPLES, TRUTHS, MASK, ITEM_REWARDS[:, :3], AdvantageConfig())
    with pytest.raises(ValueError, match="disagree"):
        advantages(SAMPLES, TRUTHS[:, :, :4], MASK, ITEM_REWARDS, AdvantageConfig())
