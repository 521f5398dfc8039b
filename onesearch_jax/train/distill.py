"""LR-ESD: reasoning-internalised self-distillation, with R-Drop, FGM and focal loss (OneSearch-V2).

OneSearch-V2 (arXiv 2603.24422) trains one model on two views of each request: the teacher input
``x^T`` (profile, query, query SID, history and the keyword chain of thought) and the student input
``x^S`` (the same without keywords), and makes the student reproduce the teacher, so that the
keywords' reasoning lands in the weights while serving reads the raw query only. Per target token
``t`` (``w_t`` = ``decoder_loss_weights``), with ``z^T`` and ``z^S`` the two passes' logits:

    L_KL   = tau^2 * sum_t w_t KL(softmax(z^T_t / tau) || softmax(z^S_t / tau))     (Eq. 4)
    L_base = CE(z^S, y) + alpha_KL * L_KL                                          (Eq. 5)
    L_R    = 1/2 * sum_t w_t [KL(P1_t || P2_t) + KL(P2_t || P1_t)]                 (Eq. 6)
    L_adv  = L_base(e^S + r_adv),  r_adv = epsilon * g / ||g||_2,  g = dL_base/de^S  (Eq. 7)
    L      = L_base + teacher_ce_weight * CE(z^T, y) + alpha_R * L_R + L_adv

CE is replaced by the focal loss ``-(1 - p_y)^gamma log p_y`` when ``focal_gamma > 0``. Every term
is a weighted *sum* over the same weights, so ``make_train_step`` divides once by their total and
its microbatch accumulation stays exact (FGM's norm is per example; see ``adversarial.py``).

Choices where the paper leaves room:

* The KL covers every target position with a nonzero loss weight, the first SID token included:
  the weights are ``decoder_loss_weights``, which line up with the logits (position ``t`` predicts
  ``decoder_target_tokens[t]``). The public code builds its mask from unshifted labels and so drops
  the first SID token.
* The teacher pass runs in train mode (dropout on, its own dropout key), as the public code does:
  one model in train mode reads both inputs. Its logits enter ``L_KL`` under ``stop_gradient``, so
  the teacher input's gradient comes only from ``teacher_ce_weight``.
* ``mode="ema"``: the teacher pass reads the teacher input with the EMA teacher's parameters, which
  the train step passes as ``teacher=`` (``onesearch_jax/train/ema.py``), without dropout: those
  parameters get no gradient, so dropout would only add noise to the target. ``teacher_ce`` is then
  a metric only (``teacher_ce_weight`` must be 0).
* R-Drop's second pass runs on the student input with other dropout masks; it enters the loss only
  through ``L_R`` (Eq. 6; the R-Drop paper also adds the second pass's cross-entropy), and gradients
  flow through both passes. The perturbed FGM pass does not take part in ``L_R``.
* FGM's perturbed pass reuses the teacher logits of the clean pass (the teacher input is not
  perturbed) and adds its whole ``L_base`` (CE or focal, plus ``alpha_KL * L_KL``).
* Dropout keys: the student's pass uses the step's key itself, so with every extra term off the
  loss (dropout masks included) is ``cross_entropy_loss``; each other pass folds its own tag into
  that key, giving independent masks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from onesearch_jax.train.adversarial import fgm_losses
from onesearch_jax.train.distill_config import DistillConfig
from onesearch_jax.train.ema import EmaTeacher
from onesearch_jax.train.losses import focal_cross_entropy, symmetric_kl, token_kl
from onesearch_jax.train.run_config import StageConfig
from onesearch_jax.train.step import Batch, LossFn, LossOutput, cross_entropy_loss, token_cross_entropy

__all__ = [
    "DISTILL_METRICS",
    "DistillConfig",
    "make_distill_loss",
    "make_ema_teacher",
    "make_train_loss",
]

TEACHER_FEATURE = "teacher_encoder_input_tokens"
TEACHER_CONVERTER = "encdec_teacher"
# Weighted sums reported beside ``accuracy`` and ``cross_entropy`` (0 when a term is off).
DISTILL_METRICS = ("student_ce", "teacher_ce", "kl", "rdrop", "adversarial")
_TEACHER_PASS, _RDROP_PASS, _ADVERSARIAL_PASS = 1, 2, 3


def _pass_key(rng: jax.Array | None, tag: int) -> jax.Array | None:
    return None if rng is None else jax.random.fold_in(rng, tag)


def _teacher_tokens(batch: Batch, config: DistillConfig) -> jax.Array:
    if TEACHER_FEATURE not in batch:
        raise ValueError(
            f"DistillConfig(alpha_kl={config.alpha_kl}, teacher_ce_weight={config.teacher_ce_weight}) runs a "
            f"teacher pass on the batch feature {TEACHER_FEATURE!r}, which this batch lacks (it has "
            f"{sorted(batch)}): train the stage on a task with teacher_inputs (onesearch_personalized_distill) "
            f"and StageConfig.feature_converter = {TEACHER_CONVERTER!r}"
        )
    return batch[TEACHER_FEATURE]


def _student_objective(config: DistillConfig) -> Callable[[jax.Array, jax.Array, jax.Array], LossOutput]:
    """``(logits, targets, weights) -> LossOutput``: focal loss when ``focal_gamma > 0``, else CE."""
    if config.focal_gamma > 0:
        return lambda logits, targets, weights: focal_cross_entropy(logits, targets, weights, gamma=config.focal_gamma)
    return token_cross_entropy


def make_distill_loss(config: DistillConfig) -> LossFn:
    """The LR-ESD loss ``L`` of the module docstring, as a ``LossFn`` for ``make_train_step``.

    ``loss_fn(model, batch, *, rng, deterministic, teacher=None) -> LossOutput`` reads the seqio
    EncDec features and, when ``config.uses_teacher``, ``teacher_encoder_input_tokens`` (the
    ``encdec_teacher`` feature converter). ``model`` is an ``EncoderDecoder`` (FGM needs its
    ``embed_inputs`` and ``encoder_input_embeddings``); ``teacher`` is the EMA teacher's model
    (``mode="ema"`` only; the train step passes it). Passes run only for the terms that are on:
    student (always), teacher (``alpha_kl`` or ``teacher_ce_weight``), second student
    (``rdrop_alpha``), perturbed student (``fgm_epsilon``).

    Returns:
        The loss function. Its ``LossOutput`` has ``loss_sum`` = ``L`` and ``weight_sum`` = the sum
        of ``decoder_loss_weights``; metrics (weighted sums, reported per token by the step):
        ``student_ce`` and ``cross_entropy`` (the student's plain CE, also under focal loss),
        ``accuracy`` (the student's), ``teacher_ce``, ``kl`` (``L_KL``), ``rdrop`` (``L_R``) and
        ``adversarial`` (``L_adv``), each unweighted by its alpha and 0 when its term is off.
        With every extra term off (``alpha_kl = teacher_ce_weight = rdrop_alpha = fgm_epsilon =
        focal_gamma = 0``), ``loss_sum``, ``accuracy`` and ``cross_entropy`` are those of
        ``cross_entropy_loss``.

    Raises:
        ValueError: (when traced) the batch lacks ``teacher_encoder_input_tokens`` but the config
            needs the teacher pass (the message names the feature converter to use); ``mode="ema"``
            without a ``teacher`` model, or ``"joint"`` with one.
    """
    student_objective = _student_objective(config)

    def loss_fn(
        model: nnx.Module,
        batch: Batch,
        *,
        rng: jax.Array | None,
        deterministic: bool,
        teacher: nnx.Module | None = None,
    ) -> LossOutput:
        targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
        student_tokens = batch["encoder_input_tokens"]
        if (config.mode == "ema") != (teacher is not None):
            raise ValueError(
                f"DistillConfig.mode={config.mode!r} {'needs' if teacher is None else 'takes no'} teacher model: "
                "an 'ema' run's train state carries the EMA teacher (train_run(ema_teacher=make_ema_teacher(...)))"
            )

        def forward(encoder_tokens: jax.Array, key: jax.Array | None, **embeddings: jax.Array) -> jax.Array:
            return model(encoder_tokens, batch["decoder_input_tokens"], decoder_target_tokens=targets,
                         deterministic=deterministic, rngs=key, **embeddings)  # fmt: skip

        teacher_logits = None
        if teacher is not None:
            teacher_logits = teacher(_teacher_tokens(batch, config), batch["decoder_input_tokens"],
                                     decoder_target_tokens=targets, deterministic=True)  # fmt: skip
        elif config.uses_teacher:
            teacher_logits = forward(_teacher_tokens(batch, config), _pass_key(rng, _TEACHER_PASS))

        def base(student_logits: jax.Array) -> tuple[jax.Array, tuple[jax.Array, LossOutput, jax.Array | None]]:
            """``L_base`` (Eq. 5) of a student pass, with the pass's logits, CE output and ``L_KL``."""
            objective = student_objective(student_logits, targets, weights)
            if config.alpha_kl == 0:
                return objective.loss_sum, (student_logits, objective, None)
            kl = token_kl(teacher_logits, student_logits, weights, temperature=config.temperature)
            return objective.loss_sum + config.alpha_kl * kl, (student_logits, objective, kl)

        adversarial = None
        if config.fgm_epsilon > 0:
            (total, (logits, objective, kl)), (adversarial, _) = fgm_losses(
                lambda embeddings, key: base(forward(student_tokens, key, encoder_input_embeddings=embeddings)),
                model.embed_inputs(student_tokens),
                epsilon=config.fgm_epsilon,
                rng=rng,
                adversarial_rng=_pass_key(rng, _ADVERSARIAL_PASS),
            )
            total = total + adversarial
        else:
            total, (logits, objective, kl) = base(forward(student_tokens, rng))
        teacher_ce = None
        if teacher_logits is not None:
            teacher_ce = token_cross_entropy(teacher_logits, targets, weights).loss_sum
            if config.teacher_ce_weight > 0:
                total = total + config.teacher_ce_weight * teacher_ce
        rdrop = None
        if config.rdrop_alpha > 0:
            rdrop = symmetric_kl(logits, forward(student_tokens, _pass_key(rng, _RDROP_PASS)), weights)
            total = total + config.rdrop_alpha * rdrop
        zero = jnp.zeros((), jnp.float32)
        metrics = {
            **objective.metrics,
            "student_ce": objective.metrics["cross_entropy"],
            "teacher_ce": zero if teacher_ce is None else teacher_ce,
            "kl": zero if kl is None else kl,
            "rdrop": zero if rdrop is None else rdrop,
            "adversarial": zero if adversarial is None else adversarial,
        }
        return LossOutput(loss_sum=total, weight_sum=objective.weight_sum, metrics=metrics)

    return loss_fn


def make_train_loss(config: DistillConfig | None, stages: Sequence[StageConfig]) -> LossFn:
    """A run's train loss: ``cross_entropy_loss``, or LR-ESD on the stages that read teacher inputs.

    With ``config`` None, the SFT loss. Otherwise batches that carry ``teacher_encoder_input_tokens``
    (stages with ``feature_converter = "encdec_teacher"``) train with ``make_distill_loss(config)``,
    and the others (SFT's alignment stages, whose tasks have no teacher input) with
    ``cross_entropy_loss``, reporting the same metric names (the distillation terms 0) so that every
    step logs one set of keys. The choice is made when the step is traced: each stage's batches
    have their own features and shapes, so each stage compiles its own step anyway. The evaluation
    step is not affected (``make_evaluator`` keeps the student's cross-entropy).

    Raises:
        ValueError: ``config`` is given but no stage uses ``encdec_teacher``, so the distillation
            would never run.
    """
    if config is None:
        return cross_entropy_loss
    if not any(stage.feature_converter == TEACHER_CONVERTER for stage in stages):
        names = {stage.name: stage.feature_converter for stage in stages}
        raise ValueError(
            f"LR-ESD (DistillConfig) trains the stages whose feature_converter is {TEACHER_CONVERTER!r}, but the "
            f"stages use {names}: set StageConfig.feature_converter = {TEACHER_CONVERTER!r} on the distillation "
            "stage (a task with teacher_inputs, e.g. onesearch_personalized_distill)"
        )
    distill = make_distill_loss(config)

    def loss_fn(
        model: nnx.Module,
        batch: Batch,
        *,
        rng: jax.Array | None,
        deterministic: bool,
        teacher: nnx.Module | None = None,
    ) -> LossOutput:
        if TEACHER_FEATURE in batch:
            return distill(model, batch, rng=rng, deterministic=deterministic, teacher=teacher)
        out = cross_entropy_loss(model, batch, rng=rng, deterministic=deterministic)
        zeros = dict.fromkeys(DISTILL_METRICS, jnp.zeros((), jnp.float32))
        return out._replace(metrics={**zeros, **out.metrics, "student_ce": out.metrics["cross_entropy"]})

    return loss_fn


def make_ema_teacher(config: DistillConfig | None, stages: Sequence[StageConfig]) -> EmaTeacher | None:
    """The EMA teacher a run needs: ``config.ema_decay`` over the stages that distil, or None
    (no ``config``, or ``mode="joint"``)."""
    if config is None or config.mode != "ema":
        return None
    names = [stage.name for stage in stages if stage.feature_converter == TEACHER_CONVERTER]
    return EmaTeacher(decay=config.ema_decay, stages=names) if names else None
