"""What a run trains with: its loss, the EMA teacher of LR-ESD's ``ema`` mode, or TPMA-GRPO.

``configurables.configured_train_loss`` builds it from gin (``train_loss.distill``,
``train_loss.grpo``) and ``onesearch train`` hands it to ``run.train_run``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from onesearch_jax.train.distill import make_ema_teacher, make_train_loss
from onesearch_jax.train.distill_config import DistillConfig
from onesearch_jax.train.ema import EmaTeacher
from onesearch_jax.train.grpo_config import GrpoConfig
from onesearch_jax.train.run_config import StageConfig
from onesearch_jax.train.step import LossFn


class TrainObjective(NamedTuple):
    """The loss and, in LR-ESD's ``ema`` mode, the teacher; or, for a GRPO run, its config (the
    GRPO step builds its own loss, ``grpo.make_grpo_loss``)."""

    loss_fn: LossFn
    ema_teacher: EmaTeacher | None = None
    grpo: GrpoConfig | None = None


def make_train_objective(
    config: DistillConfig | None, stages: Sequence[StageConfig], grpo: GrpoConfig | None = None
) -> TrainObjective:
    """``TrainObjective(make_train_loss(config, stages), make_ema_teacher(config, stages))``, or the
    GRPO objective of a run whose stages are TPMA-GRPO stages.

    Raises:
        ValueError: GRPO stages without a ``grpo`` config or with a distillation config, or a
            ``grpo`` config for a run without GRPO stages.
    """
    is_grpo = any(stage.feature_converter == "grpo" for stage in stages)
    if is_grpo != (grpo is not None):
        raise ValueError(
            "train_loss.grpo (a GrpoConfig) must be bound exactly when the run's stages are TPMA-GRPO stages "
            f"(feature_converter 'grpo'): the stages use {[s.feature_converter for s in stages]}, train_loss.grpo "
            f"is {'bound' if grpo is not None else 'not bound'}"
        )
    if grpo is not None:
        if config is not None:
            raise ValueError("a TPMA-GRPO run takes no DistillConfig (train_loss.distill): unbind it")
        from onesearch_jax.train.grpo import make_grpo_loss

        return TrainObjective(make_grpo_loss(grpo), None, grpo)
    return TrainObjective(make_train_loss(config, stages), make_ema_teacher(config, stages))
