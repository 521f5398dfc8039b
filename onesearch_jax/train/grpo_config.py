"""``GrpoConfig``: every knob of the TPMA-GRPO stage, plain Python (no jax), so gin registers it.

``onesearch_jax.train.grpo`` runs the stage (and documents the step); ``tpma_config`` holds the
credit assignment's own config; ``rewards`` the reward terms.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from onesearch_jax.train.tpma_config import AdvantageConfig

DEFAULT_REWARD_WEIGHTS = {"click_order": 1.0, "ctr": 1.0, "relevance": 1.0}


def _number(name: str, value: object, *, minimum: float = 0.0, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"GrpoConfig.{name} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"GrpoConfig.{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GrpoConfig:
    """The RL stage of OneSearch-V2 (arXiv 2603.24422, Sec. "TPMA-GRPO"; ../shared/DESIGN.md).

    Attributes:
        num_samples: G, rollouts per prompt, drawn under the SID trie (at least 2: the advantages
            are normalised within each group).
        temperature: sampling temperature of the rollouts (the log-probabilities in the ratio are
            at temperature 1, the policy's own).
        top_k: sample among the k most likely children of each trie node (0: all).
        top_p: nucleus sampling among the children, in (0, 1] (1: all).
        inner_updates: mu, optimizer updates per rollout batch; each recomputes the ratio
            ``pi_theta / pi_old`` against the policy that sampled (1: the ratio is 1 and the loss
            is the plain policy gradient). The optimizer's schedule counts updates, so a run of
            N steps makes N * mu of them.
        kl_beta: beta of the k3 KL to the frozen reference policy, the parameters the stage starts
            from (``TrainConfig.init_checkpoint``); 0 (DESIGN.md's default) skips the reference
            and its forward pass.
        sft_weight: weight of the cross-entropy of the prompt's first ground-truth SID (the
            record's target) added to the loss (the paper: 0.1).
        reward_weights: ``R_item = sum_k w_k R_k`` over registered terms
            (``onesearch_jax.train.rewards``: ``click_order``, ``ctr``, ``relevance`` and any a run
            registers).
        advantage: the credit assignment, TPMA (default) or plain GRPO (``AdvantageConfig``).
    """

    num_samples: int = 8
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    inner_updates: int = 1
    kl_beta: float = 0.0
    sft_weight: float = 0.1
    reward_weights: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_REWARD_WEIGHTS))
    advantage: AdvantageConfig = dataclasses.field(default_factory=AdvantageConfig)

    def __post_init__(self) -> None:
        for name, minimum in (("num_samples", 2), ("inner_updates", 1), ("top_k", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"GrpoConfig.{name} must be an int >= {minimum}, got {value!r}")
        _number("temperature", self.temperature, strict=True)
        _number("top_p", self.top_p, strict=True)
        if self.top_p > 1:
            raise ValueError(f"GrpoConfig.top_p must be in (0, 1], got {self.top_p!r}")
        _number("kl_beta", self.kl_beta)
        _number("sft_weight", self.sft_weight)
        if not isinstance(self.reward_weights, Mapping) or not self.reward_weights:
            raise ValueError(f"GrpoConfig.reward_weights must map reward terms to weights, got {self.reward_weights!r}")
        for name, weight in self.reward_weights.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"GrpoConfig.reward_weights has a key that is not a term name: {name!r}")
            _number(f"reward_weights[{name!r}]", weight)
        object.__setattr__(self, "reward_weights", {k: float(v) for k, v in self.reward_weights.items()})
        if not isinstance(self.advantage, AdvantageConfig):
            raise ValueError(f"GrpoConfig.advantage must be an AdvantageConfig, got {self.advantage!r}")
