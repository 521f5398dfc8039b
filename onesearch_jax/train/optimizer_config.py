"""``OptimizerConfig``: plain Python (no jax), so gin registers it without importing jax.

``onesearch_jax.train.optimizers`` builds the optax transformation and the learning-rate schedule
from it (and documents the schedules' formulas).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

OptimizerName = Literal["adamw", "adafactor", "sgd"]
DecayName = Literal["constant", "cosine", "rsqrt"]
_OPTIMIZERS = ("adamw", "adafactor", "sgd")
_DECAYS = ("constant", "cosine", "rsqrt")


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """What to optimise with, bound from gin as ``OptimizerConfig.<field> = ...``.

    Attributes:
        name: ``adamw`` (decoupled weight decay, Loshchilov & Hutter), ``adafactor`` (T5's optimizer,
            factored second moments; optax's implementation) or ``sgd`` (plain, for debugging).
        learning_rate: the peak learning rate, reached at the end of warm-up.
        warmup_steps: linear warm-up length in optimizer steps (0 = none).
        warmup_init_fraction: the rate at step 0 as a fraction of the peak (0 = warm up from zero,
            1 = constant during warm-up, as T5X's rsqrt schedule).
        decay: after warm-up: ``constant``, ``cosine`` (to ``final_learning_rate_fraction * peak`` at
            ``total_steps``) or ``rsqrt`` (inverse square root of the step).
        total_steps: the step at which the cosine reaches its final value (required for ``cosine``).
        final_learning_rate_fraction: the cosine's final value as a fraction of the peak.
        weight_decay: decoupled weight decay (adamw: ``weight_decay``; adafactor: ``weight_decay_rate``;
            both multiplied by the learning rate, as optax does). 0 disables it.
        decay_1d_params: also decay 1-D parameters (norm scales, biases); the default, as in most
            recipes, decays only matrices.
        b1: adamw's first-moment decay; adafactor's momentum when > 0 (T5 used none: set 0).
        b2: adamw's second-moment decay (adafactor uses ``adafactor_decay_rate`` instead).
        eps: adamw's epsilon (adafactor uses ``adafactor_eps``).
        clip_grad_norm: clip the gradients' global norm to this (None disables clipping).
        num_microbatches: gradient accumulation: the global batch is split into this many
            microbatches, run one after another inside the step, and their gradients summed; the
            update equals the one-big-batch update.
        adafactor_decay_rate: adafactor's second-moment decay exponent (``1 - step**-decay_rate``).
        adafactor_multiply_by_parameter_scale: scale updates by the parameters' RMS (T5's default).
        adafactor_clipping_threshold: adafactor's update clipping (None disables it).
        adafactor_min_dim_size_to_factor: factor second moments only of dimensions at least this large.
        adafactor_eps: adafactor's regularisation constant.
    """

    name: OptimizerName = "adamw"
    learning_rate: float = 1e-3
    warmup_steps: int = 0
    warmup_init_fraction: float = 0.0
    decay: DecayName = "constant"
    total_steps: int | None = None
    final_learning_rate_fraction: float = 0.0
    weight_decay: float = 0.0
    decay_1d_params: bool = False
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_grad_norm: float | None = 1.0
    num_microbatches: int = 1
    adafactor_decay_rate: float = 0.8
    adafactor_multiply_by_parameter_scale: bool = True
    adafactor_clipping_threshold: float | None = 1.0
    adafactor_min_dim_size_to_factor: int = 128
    adafactor_eps: float = 1e-30

    def __post_init__(self) -> None:
        if self.name not in _OPTIMIZERS:
            raise ValueError(f"OptimizerConfig.name must be one of {_OPTIMIZERS}, got {self.name!r}")
        if self.decay not in _DECAYS:
            raise ValueError(f"OptimizerConfig.decay must be one of {_DECAYS}, got {self.decay!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"OptimizerConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise ValueError(f"OptimizerConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        for name in ("warmup_init_fraction", "final_learning_rate_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"OptimizerConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.decay == "cosine" and (self.total_steps is None or self.total_steps <= self.warmup_steps):
            raise ValueError(
                f"decay='cosine' needs total_steps > warmup_steps, got total_steps={self.total_steps}, "
                f"warmup_steps={self.warmup_steps}"
            )
        if self.weight_decay < 0:
            raise ValueError(f"OptimizerConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.b1 < 1.0 or not 0.0 < self.b2 < 1.0:
            raise ValueError(f"OptimizerConfig needs 0 <= b1 < 1 and 0 < b2 < 1, got b1={self.b1}, b2={self.b2}")
        if not self.eps > 0 or not self.adafactor_eps > 0:
            raise ValueError("OptimizerConfig.eps and adafactor_eps must be > 0")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"OptimizerConfig.clip_grad_norm must be > 0 or None, got {self.clip_grad_norm}")
        if isinstance(self.num_microbatches, bool) or not isinstance(self.num_microbatches, int):
            raise ValueError(f"OptimizerConfig.num_microbatches must be an integer, got {self.num_microbatches!r}")
        if self.num_microbatches < 1:
            raise ValueError(f"OptimizerConfig.num_microbatches must be >= 1, got {self.num_microbatches}")
        if self.adafactor_min_dim_size_to_factor < 1:
            raise ValueError("OptimizerConfig.adafactor_min_dim_size_to_factor must be >= 1")
