"""The EMA teacher of LR-ESD's ``ema`` mode: a moving average of the student's parameters.

OneSearch-V2 (arXiv 2603.24422, Eq. 4-5) distils the keyword-augmented view into the raw-query
view. In ``DistillConfig.mode = "ema"`` the teacher pass reads the teacher input with parameters
``theta_T`` that follow the student's ``theta_S`` after every optimizer update (decay ``d``):

    theta_T <- d * theta_T + (1 - d) * theta_S                                         (EMA)

``theta_T`` lives in the train state (``TrainState.teacher``), with the parameters' shardings, and is
checkpointed with them. It restarts from the student (``theta_T := theta_S``) at the start of every
stage that reads it, so a run that trains its earlier stages itself and a run branched from another
run's checkpoint at the stage boundary (``onesearch ablation``) distil from the same teacher; the
average therefore spans the distillation stage only, never the SFT stages before it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from onesearch_jax.train.state import TrainState


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmaTeacher:
    """What ``train_run`` needs for an EMA teacher.

    Attributes:
        decay: ``d`` of the update, in ``(0, 1)``: the teacher's time constant is about
            ``1 / (1 - d)`` steps.
        stages: the stages whose loss reads the teacher; it restarts from the student at each one's
            first step.
    """

    decay: float
    stages: Sequence[str]

    def __post_init__(self) -> None:
        if isinstance(self.decay, bool) or not isinstance(self.decay, int | float) or not 0 < self.decay < 1:
            raise ValueError(f"EmaTeacher.decay must be in (0, 1), got {self.decay!r}")
        if isinstance(self.stages, str) or not self.stages:
            raise ValueError(f"EmaTeacher.stages must name at least one stage, got {self.stages!r}")
        object.__setattr__(self, "stages", tuple(self.stages))


def ema_update(teacher: Any, params: Any, decay: float) -> Any:
    """``d * teacher + (1 - d) * params`` leaf by leaf, in each teacher leaf's dtype (the EMA above).

    Args:
        teacher: the teacher's parameters (a pytree).
        params: the student's parameters after the optimizer update, same structure.
        decay: ``d``.
    """
    return jax.tree.map(lambda t, p: (decay * t + (1.0 - decay) * p).astype(t.dtype), teacher, params)


def make_teacher_restart(shardings: TrainState) -> Callable[[TrainState], TrainState]:
    """``state -> state`` with its teacher set to a copy of its parameters (``theta_T := theta_S``),
    sharded as ``shardings.teacher``: the restart at a distillation stage's start, and the teacher
    of a state restored without one (e.g. from an SFT checkpoint). The copy is one jitted program.

    Raises:
        ValueError: the shardings have no teacher (the state was built without ``with_teacher``).
    """
    if shardings.teacher is None:
        raise ValueError("the train state has no teacher to restart: build it with with_teacher=True")
    copy = jax.jit(lambda params: jax.tree.map(jnp.copy, params), out_shardings=shardings.teacher)
    return lambda state: state.replace(teacher=copy(state.params))
