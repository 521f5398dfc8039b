"""Encoder-decoder batches with extra per-example features: the teacher's input (LR-ESD) and the
session's feedback (TPMA-GRPO).

`EncDecTeacherFeatureConverter` is seqio's `EncDecFeatureConverter` plus one feature:

    task features          model features
    inputs          ->     encoder_input_tokens          (student: raw query and context)
    teacher_inputs  ->     teacher_encoder_input_tokens  (teacher: the same plus keywords)
    targets         ->     decoder_target_tokens, decoder_input_tokens, decoder_loss_weights

The teacher and the student decode the same targets, so the decoder features are shared. Packing
is refused: packed teacher and student sequences would put different examples side by side.

`GrpoFeatureConverter` is seqio's `EncDecFeatureConverter` plus the session's feedback as trie
leaves shifted by one (``tasks/onesearch.py``: ``onesearch_personalized_grpo``), each padded with 0
to its length: ``clicked_leaves``, ``ordered_leaves``, ``relevance_leaves`` and ``relevance_tiers``
pass through under their own names. The decoder features are the record's target (the first
ground-truth SID), for GRPO's auxiliary SFT loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import seqio
import tensorflow as tf


def _int32_specs(names) -> dict[str, seqio.FeatureConverter.FeatureSpec]:
    return {name: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32) for name in names}


class _EncDecPassThroughConverter(seqio.EncDecFeatureConverter):
    """`EncDecFeatureConverter` plus per-example features copied unpacked: task feature
    ``name`` becomes model feature ``PASS_THROUGH[name]``, padded to the task feature's length.

    Subclasses set ``PASS_THROUGH`` and ``TASK_FEATURES`` / ``MODEL_FEATURES`` (with
    :func:`_int32_specs`) and say in ``PACK_REFUSAL`` why they cannot pack.
    """

    PASS_THROUGH: ClassVar[dict[str, str]] = {}
    PACK_REFUSAL: ClassVar[str] = ""

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise ValueError(f"{type(self).__name__} cannot pack: {self.PACK_REFUSAL}")
        super().__init__(pack=False, **kwargs)

    def _convert_example(self, features: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        converted = dict(super()._convert_example(features))
        converted.update({model: features[task] for task, model in self.PASS_THROUGH.items()})
        return converted

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
        lengths.update({model: task_feature_lengths[task] for task, model in self.PASS_THROUGH.items()})
        return lengths


class EncDecTeacherFeatureConverter(_EncDecPassThroughConverter):
    """`EncDecFeatureConverter` with ``teacher_inputs`` -> ``teacher_encoder_input_tokens``."""

    PASS_THROUGH: ClassVar[dict[str, str]] = {"teacher_inputs": "teacher_encoder_input_tokens"}
    PACK_REFUSAL: ClassVar[str] = "teacher and student inputs must stay aligned"
    TASK_FEATURES: ClassVar[dict[str, seqio.FeatureConverter.FeatureSpec]] = {
        **seqio.EncDecFeatureConverter.TASK_FEATURES,
        **_int32_specs(PASS_THROUGH),
    }
    MODEL_FEATURES: ClassVar[dict[str, seqio.FeatureConverter.FeatureSpec]] = {
        **seqio.EncDecFeatureConverter.MODEL_FEATURES,
        **_int32_specs(PASS_THROUGH.values()),
    }


GRPO_FEEDBACK = ("clicked_leaves", "ordered_leaves", "relevance_leaves", "relevance_tiers")


class GrpoFeatureConverter(_EncDecPassThroughConverter):
    """`EncDecFeatureConverter` with the session's feedback lists (:data:`GRPO_FEEDBACK`) passed through."""

    PASS_THROUGH: ClassVar[dict[str, str]] = {name: name for name in GRPO_FEEDBACK}
    PACK_REFUSAL: ClassVar[str] = "each prompt carries its own feedback"
    TASK_FEATURES: ClassVar[dict[str, seqio.FeatureConverter.FeatureSpec]] = {
        **seqio.EncDecFeatureConverter.TASK_FEATURES,
        **_int32_specs(GRPO_FEEDBACK),
    }
    MODEL_FEATURES: ClassVar[dict[str, seqio.FeatureConverter.FeatureSpec]] = {
        **seqio.EncDecFeatureConverter.MODEL_FEATURES,
        **_int32_specs(GRPO_FEEDBACK),
    }
