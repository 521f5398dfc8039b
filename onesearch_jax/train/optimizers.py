"""Optimizers and learning-rate schedules: ``OptimizerConfig`` -> ``Optimizer`` (optax transform + schedule).

The transform is ``clip_by_global_norm -> {adamw | adafactor | sgd}``, the order of T5X's and
MaxText's optimizers: gradients are clipped on their global norm over *all* parameters (after
gradient accumulation, before the optimizer's statistics see them).

Schedules (``step`` counts optimizer updates from 0, ``peak = learning_rate``, ``W = warmup_steps``):

    warmup (step < W):  peak * (f0 + (1 - f0) * step / W)            f0 = warmup_init_fraction
    constant:           peak
    cosine:             peak * (fe + (1 - fe) * (1 + cos(pi * t)) / 2),
                        t = min(1, (step - W) / (total_steps - W)),    fe = final_learning_rate_fraction
    rsqrt:              peak * sqrt(max(W, 1) / max(step, max(W, 1)))

``rsqrt`` is T5X's ``rsqrt_decay`` (``base / sqrt(max(step, warmup))``) rescaled so that its value at the
end of warm-up is ``peak``; T5X holds the rate constant during warm-up, which ``warmup_init_fraction=1``
reproduces. ``cosine`` is MaxText's linear-warmup-then-cosine.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from onesearch_jax.train.optimizer_config import OptimizerConfig

__all__ = ["Optimizer", "OptimizerConfig", "make_optimizer", "make_schedule"]


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """What the train step needs from the optimizer.

    Attributes:
        tx: the optax transformation (clipping included); ``tx.init(params)`` gives the opt state.
        schedule: step -> learning rate (the rate ``tx`` applies at that optimizer step).
        num_microbatches: gradient-accumulation microbatches per step.
        config: the config this was built from.
    """

    tx: optax.GradientTransformation
    schedule: optax.Schedule
    num_microbatches: int = 1
    config: OptimizerConfig | None = None


def make_schedule(config: OptimizerConfig) -> optax.Schedule:
    """The learning-rate schedule of ``config`` (see the module docstring for the formulas)."""
    peak = float(config.learning_rate)
    warmup = int(config.warmup_steps)
    f0 = float(config.warmup_init_fraction)
    fe = float(config.final_learning_rate_fraction)
    timescale = float(max(warmup, 1))

    def schedule(step: Any) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        if config.decay == "constant":
            after = jnp.full_like(step, peak)
        elif config.decay == "cosine":
            t = jnp.clip((step - warmup) / float(config.total_steps - warmup), 0.0, 1.0)
            after = peak * (fe + (1.0 - fe) * 0.5 * (1.0 + jnp.cos(math.pi * t)))
        else:  # rsqrt
            after = peak * jnp.sqrt(timescale / jnp.maximum(step, timescale))
        if warmup == 0:
            return after
        warm = peak * (f0 + (1.0 - f0) * step / warmup)
        return jnp.where(step < warmup, warm, after)

    return schedule


def _decay_mask(params: Any) -> Any:
    """True for parameters with at least two dimensions (matrices), False for scales and biases."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(config: OptimizerConfig) -> Optimizer:
    """Builds ``clip_by_global_norm(config.clip_grad_norm) -> optimizer(schedule)``."""
    schedule = make_schedule(config)
    mask = None if config.decay_1d_params else _decay_mask
    if config.name == "adamw":
        core = optax.adamw(
            schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay, mask=mask
        )
    elif config.name == "adafactor":
        core = optax.adafactor(
            schedule,
            min_dim_size_to_factor=config.adafactor_min_dim_size_to_factor,
            decay_rate=config.adafactor_decay_rate,
            multiply_by_parameter_scale=config.adafactor_multiply_by_parameter_scale,
            clipping_threshold=config.adafactor_clipping_threshold,
            momentum=config.b1 if config.b1 > 0 else None,
            weight_decay_rate=config.weight_decay or None,
            weight_decay_mask=mask,
            eps=config.adafactor_eps,
        )
    else:
        core = optax.sgd(schedule)
        if config.weight_decay:
            core = optax.chain(optax.add_decayed_weights(config.weight_decay, mask), core)
    parts = [core] if config.clip_grad_norm is None else [optax.clip_by_global_norm(config.clip_grad_norm), core]
    return Optimizer(tx=optax.chain(*parts), schedule=schedule, num_microbatches=config.num_microbatches, config=config)
