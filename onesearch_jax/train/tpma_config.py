"""``AdvantageConfig``: plain Python (no jax), so gin can register it without importing jax.

``onesearch_jax.train.tpma`` computes the advantages and the policy loss from it (and documents
the equations).
"""

from __future__ import annotations

import dataclasses
import math

ADVANTAGE_MODES = ("tpma", "grpo")

# Position weights of the default SID layout (three residual k-means levels, then two OPQ codes):
# 2 per residual level and 1 per OPQ code, as the paper's figure shows.
PAPER_POSITION_WEIGHTS = (2.0, 2.0, 2.0, 1.0, 1.0)
# The public OneSearch code's weights: the third residual level counts 1 and the last OPQ code 0.
PUBLIC_CODE_POSITION_WEIGHTS = (2.0, 2.0, 1.0, 1.0, 0.0)


def _check_number(name: str, value: object, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"AdvantageConfig.{name} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"AdvantageConfig.{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdvantageConfig:
    """How a group's rollouts are credited (OneSearch-V2, arXiv 2603.24422, Eq. 13-19).

    Attributes:
        mode: ``tpma``: token-position marginal advantages with prefix gates (Eq. 13-19);
            ``grpo``: plain GRPO, the group-normalised item reward on every token and a PPO-style
            clipped ratio.
        position_weights: ``w_l`` of each SID position in the prefix reward (``tpma``). Its length
            is the SID length; a position of weight 0 earns no marginal reward (with
            ``item_weight=0`` its advantage is 0). :data:`PAPER_POSITION_WEIGHTS` (default) or the
            public code's :data:`PUBLIC_CODE_POSITION_WEIGHTS`.
        item_weight: ``w_item``, the weight of the group-normalised item reward added to every
            position's advantage (``tpma``).
        std_epsilon: ``delta`` of the group normalisation ``(x - mean) / (std + delta)``.
        clip_epsilon: the PPO clip range of the ratio in ``grpo`` mode (TPMA's loss is unclipped).
    """

    mode: str = "tpma"
    position_weights: tuple[float, ...] = PAPER_POSITION_WEIGHTS
    item_weight: float = 1.0
    std_epsilon: float = 1e-8
    clip_epsilon: float = 0.2

    def __post_init__(self) -> None:
        if self.mode not in ADVANTAGE_MODES:
            raise ValueError(f"AdvantageConfig.mode must be one of {ADVANTAGE_MODES}, got {self.mode!r}")
        weights = self.position_weights
        if not isinstance(weights, tuple | list) or not weights:
            raise ValueError(f"AdvantageConfig.position_weights must be a non-empty sequence, got {weights!r}")
        for index, weight in enumerate(weights):
            _check_number(f"position_weights[{index}]", weight)
        if not any(weights):
            raise ValueError(f"AdvantageConfig.position_weights must not all be 0, got {tuple(weights)!r}")
        object.__setattr__(self, "position_weights", tuple(float(w) for w in weights))
        _check_number("item_weight", self.item_weight)
        _check_number("std_epsilon", self.std_epsilon, positive=True)
        _check_number("clip_epsilon", self.clip_epsilon, positive=True)
