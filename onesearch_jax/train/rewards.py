"""Behaviour rewards of sampled SIDs (OneSearch-V2, arXiv 2603.24422, Eq. 9-10), on device.

A rollout is a SID, identified by its trie leaf (``SampleResult.leaves``, a row of
``SidTrie.leaf_sids``; a SID stands for all its items). Each prompt carries its session's feedback
as leaves (:class:`RewardInputs`); the terms are

- ``click_order`` (``R_C&O``): 4 if one of the SID's items was ordered in the session, else 3 if
  one was clicked, else 0;
- ``ctr`` (``R_CTR``): the SID's calibrated posterior click-through rate over the training window,
  clipped to [0, 1]: the table ``sid_ctr.tsv`` that ``onesearch data build-examples`` writes for
  every SID of the codebook (:mod:`onesearch_jax.data.examples` documents its Beta prior);
- ``relevance`` (``R_Rel``): the graded relevance tier 0-3 of the SID for the prompt's query where
  labelled (the highest tier of its labelled items), 0 where not;

and the item reward is their weighted sum, ``R_item = sum_k weight_k R_k`` (Eq. 10 with weights
1). Terms live in a registry (:func:`register_reward_term`), so a run can add its own, e.g. the
paper's shopping-festival bonus for emerging merchants, reading arrays it puts in
``RewardInputs.extras``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

PAD = -1  # padding leaf in the per-prompt arrays; sampled leaves are >= 0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RewardInputs:
    """What the reward terms read, per prompt (rows) or per SID (tables); padding leaves are -1.

    Attributes:
        clicked: ``[B, C]`` int32 leaves of the session's clicked items.
        ordered: ``[B, O]`` int32 leaves of the session's ordered items.
        relevance_leaves: ``[B, R]`` int32 leaves with a graded relevance for the prompt's query.
        relevance_tiers: ``[B, R]`` float32 their tiers, 0-3.
        ctr: ``[num_sids]`` float32 calibrated CTR of every SID, by leaf (``sid_ctr.tsv``; replicated).
        extras: arrays of user-registered terms, by name.
    """

    clicked: jax.Array
    ordered: jax.Array
    relevance_leaves: jax.Array
    relevance_tiers: jax.Array
    ctr: jax.Array
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)


RewardTerm = Callable[[jax.Array, RewardInputs], jax.Array]
"""``term(leaves [B, G], inputs) -> [B, G]`` float32."""

_TERMS: dict[str, RewardTerm] = {}


def register_reward_term(name: str, term: RewardTerm) -> None:
    """Adds a reward term under ``name`` (refused if the name is taken)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a reward term needs a non-empty name, got {name!r}")
    if name in _TERMS:
        raise ValueError(f"reward term {name!r} is registered already")
    _TERMS[name] = term


def reward_term_names() -> tuple[str, ...]:
    """The registered terms, in registration order."""
    return tuple(_TERMS)


def _matches(leaves: jax.Array, per_prompt: jax.Array) -> jax.Array:
    """``[B, G, K]`` bool: sampled leaf g equals the prompt's leaf k (padding never matches)."""
    return (leaves[:, :, None] == per_prompt[:, None, :]) & (per_prompt[:, None, :] != PAD)


def click_order_reward(leaves: jax.Array, inputs: RewardInputs) -> jax.Array:
    """``R_C&O``: 4 if ordered, 3 if clicked (and not ordered), else 0 (Eq. 9)."""
    ordered, clicked = _matches(leaves, inputs.ordered).any(-1), _matches(leaves, inputs.clicked).any(-1)
    return jnp.where(ordered, 4.0, jnp.where(clicked, 3.0, 0.0)).astype(jnp.float32)


def ctr_reward(leaves: jax.Array, inputs: RewardInputs) -> jax.Array:
    """``R_CTR``: the SID's posterior CTR, clipped to [0, 1] (Eq. 9); 0 for an invalid leaf."""
    value = jnp.take(inputs.ctr, leaves, mode="clip")
    return jnp.where(leaves >= 0, jnp.clip(value, 0.0, 1.0), 0.0).astype(jnp.float32)


def relevance_reward(leaves: jax.Array, inputs: RewardInputs) -> jax.Array:
    """``R_Rel``: the highest labelled tier of the SID for the prompt's query, 0 unlabelled (Eq. 9)."""
    labelled = _matches(leaves, inputs.relevance_leaves)
    tiers = jnp.where(labelled, inputs.relevance_tiers[:, None, :].astype(jnp.float32), 0.0)
    return jnp.max(tiers, axis=-1, initial=0.0)


register_reward_term("click_order", click_order_reward)
register_reward_term("ctr", ctr_reward)
register_reward_term("relevance", relevance_reward)


def item_rewards(
    leaves: jax.Array, inputs: RewardInputs, weights: Mapping[str, float]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``R_item = sum_k weights[k] R_k`` ``[B, G]`` (Eq. 10) and each term's ``[B, G]`` values.

    Raises:
        ValueError: a weight for a term that is not registered, or no weights.
    """
    if not weights:
        raise ValueError(f"item_rewards needs at least one weighted term (registered: {reward_term_names()})")
    unknown = sorted(set(weights) - set(_TERMS))
    if unknown:
        raise ValueError(f"unknown reward terms {unknown}; registered: {reward_term_names()}")
    terms = {name: _TERMS[name](leaves, inputs) for name in weights}
    total = sum(float(weights[name]) * value for name, value in terms.items())
    return total, terms
