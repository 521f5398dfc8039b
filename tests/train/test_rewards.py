"""The behaviour reward terms, their sum and the registry, by hand (Eq. 9-10)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from onesearch_jax.train import rewards
from onesearch_jax.train.rewards import (
    RewardInputs,
    click_order_reward,
    ctr_reward,
    item_rewards,
    register_reward_term,
    relevance_reward,
)

# Two prompts, three rollouts each; leaf -1 (an invalid SID) must never match the padding.
LEAVES = jnp.array([[5, 7, 9], [2, -1, 5]])
CTR = np.full(10, 0.1, np.float32)
CTR[[2, 5, 7, 9]] = [0.05, 0.2, 0.5, 1.3]  # 1.3: clipped to 1
INPUTS = RewardInputs(
    clicked=jnp.array([[5, 7, -1], [-1, -1, -1]]),
    ordered=jnp.array([[7, -1], [2, -1]]),
    relevance_leaves=jnp.array([[9, 5, 9], [5, -1, -1]]),  # leaf 9 labelled twice (two of its items)
    relevance_tiers=jnp.array([[2.0, 1.0, 3.0], [3.0, 0.0, 0.0]]),
    ctr=jnp.asarray(CTR),
)


def test_click_order_reward():
    # prompt 0: 5 clicked -> 3, 7 ordered (and clicked) -> 4, 9 -> 0; prompt 1: 2 ordered -> 4, -1 and 5 -> 0
    np.testing.assert_array_equal(np.asarray(click_order_reward(LEAVES, INPUTS)), [[3, 4, 0], [4, 0, 0]])


def test_ctr_reward_is_clipped_and_zero_for_an_invalid_leaf():
    np.testing.assert_allclose(np.asarray(ctr_reward(LEAVES, INPUTS)), [[0.2, 0.5, 1.0], [0.05, 0.0, 0.2]])


def test_relevance_reward_takes_the_highest_labelled_tier():
    np.testing.assert_array_equal(np.asarray(relevance_reward(LEAVES, INPUTS)), [[1, 0, 3], [0, 0, 3]])


def test_item_reward_is_the_weighted_sum_under_jit():
    weights = {"click_order": 1.0, "ctr": 2.0, "relevance": 0.5}
    total, terms = jax.jit(lambda leaves, inputs: item_rewards(leaves, inputs, weights))(LEAVES, INPUTS)
    # prompt 0: 3 + 0.4 + 0.5, 4 + 1 + 0, 0 + 2 + 1.5; prompt 1: 4 + 0.1 + 0, 0, 0 + 0.4 + 1.5
    np.testing.assert_allclose(np.asarray(total), [[3.9, 5.0, 3.5], [4.1, 0.0, 1.9]], rtol=1e-6)
    assert set(terms) == set(weights)
    np.testing.assert_array_equal(np.asarray(terms["click_order"]), [[3, 4, 0], [4, 0, 0]])


def test_a_registered_term_reads_its_own_arrays(monkeypatch):
    monkeypatch.setattr(rewards, "_TERMS", dict(rewards._TERMS))  # the registry as it was, after the test

    def merchant_bonus(leaves, inputs):
        return jnp.take(inputs.extras["emerging_merchant"], jnp.maximum(leaves, 0)) * (leaves >= 0)

    register_reward_term("emerging_merchant", merchant_bonus)
    bonus = np.zeros(10, np.float32)
    bonus[9] = 1.0
    inputs = dataclasses.replace(INPUTS, extras={"emerging_merchant": jnp.asarray(bonus)})
    total, _ = item_rewards(LEAVES, inputs, {"click_order": 1.0, "emerging_merchant": 2.0})
    np.testing.assert_array_equal(np.asarray(total), [[3, 4, 2], [4, 0, 0]])
    with pytest.raises(ValueError, match="registered already"):
        register_reward_term("ctr", ctr_reward)


def test_unknown_or_missing_terms_are_refused():
    with pytest.raises(ValueError, match=r"unknown reward terms \['clicks'\]"):
        item_rewards(LEAVES, INPUTS, {"clicks": 1.0})
    with pytest.raises(ValueError, match="at least one weighted term"):
        item_rewards(LEAVES, INPUTS, {})
