"""``DistillConfig``: plain Python (no jax), so gin registers it without importing jax.

``onesearch_jax.train.distill`` builds the LR-ESD loss from it (and documents the equations).
"""

from __future__ import annotations

import dataclasses
import math

DISTILL_MODES = ("joint", "ema")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """LR-ESD self-distillation and its regularisers (OneSearch-V2, arXiv 2603.24422, Eq. 4-7).

    Bound from gin as ``DistillConfig.<field> = ...`` (``gin/runs/lr_esd.gin``). Each weight of 0
    switches its term off (and skips the forward passes only it needs), so the paper's ablation
    rows are one binding apart.

    Attributes:
        mode: where the teacher's parameters come from. ``joint``: the student's own parameters
            (one model reads the teacher input with keywords and the student input without, in
            one step). ``ema``: an exponential moving average of the student's parameters, kept
            in the train state and sharded like them (``onesearch_jax/train/ema.py``); it restarts
            from the student at the start of each distillation stage and reads the teacher input
            without dropout.
        alpha_kl: ``alpha_KL``, the weight of the distillation term ``L_KL`` (Eq. 4-5); the paper
            uses 0.1. 0 trains the student on cross-entropy alone.
        temperature: ``tau`` of ``L_KL``: both distributions are ``softmax(z / tau)`` and the term is
            scaled by ``tau^2``; the paper uses 1.
        teacher_ce_weight: weight of the teacher pass's own cross-entropy (the only term whose
            gradient reaches the parameters through the teacher input; ``L_KL`` holds the teacher
            under ``stop_gradient``). 0 leaves the teacher path untrained by this stage. Must be 0
            in ``ema`` mode, whose teacher parameters are not trained (``teacher_ce`` is still
            reported).
        ema_decay: ``d`` of the EMA teacher, ``theta_T <- d theta_T + (1 - d) theta_S`` after
            every update (``ema`` mode; ignored in ``joint``); the teacher averages about the
            last ``1 / (1 - d)`` steps.
        rdrop_alpha: ``alpha_R``, the weight of R-Drop's symmetric KL between two student passes
            with different dropout masks (Eq. 6); the paper uses 0.5. Needs a dropout rate > 0 in
            the model to have any effect.
        fgm_epsilon: ``epsilon`` of FGM (Eq. 7): the norm of the adversarial perturbation of each
            example's student input embeddings, whose second pass adds its ``L_base``; the paper
            uses 0.6.
        focal_gamma: ``gamma`` of the focal loss that replaces the student's cross-entropy
            (``-(1 - p_y)^gamma log p_y``); 0 keeps the cross-entropy.
    """

    mode: str = "joint"
    alpha_kl: float = 0.1
    temperature: float = 1.0
    teacher_ce_weight: float = 0.0
    rdrop_alpha: float = 0.0
    fgm_epsilon: float = 0.0
    focal_gamma: float = 0.0
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        if self.mode not in DISTILL_MODES:
            raise ValueError(f"DistillConfig.mode must be one of {DISTILL_MODES}, got {self.mode!r}")
        for name in ("alpha_kl", "temperature", "teacher_ce_weight", "rdrop_alpha", "fgm_epsilon", "focal_gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"DistillConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.temperature == 0:
            raise ValueError("DistillConfig.temperature must be > 0, got 0")
        decay = self.ema_decay
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 < decay < 1:
            raise ValueError(f"DistillConfig.ema_decay must be in (0, 1), got {decay!r}")
        if self.mode == "ema":
            if self.alpha_kl == 0:
                raise ValueError("DistillConfig.mode='ema' distils from the EMA teacher: alpha_kl must be > 0, got 0")
            if self.teacher_ce_weight != 0:
                raise ValueError(
                    f"DistillConfig.mode='ema' trains no teacher parameters, so teacher_ce_weight must be 0, got "
                    f"{self.teacher_ce_weight!r} (gin/runs/lr_esd_ema.gin sets it)"
                )

    @property
    def uses_teacher(self) -> bool:
        """Whether the loss runs the teacher pass (and so reads ``teacher_encoder_input_tokens``)."""
        return self.alpha_kl > 0 or self.teacher_ce_weight > 0
