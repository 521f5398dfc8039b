"""Encoder-decoder batches that carry the teacher's input beside the student's (LR-ESD).

`EncDecTeacherFeatureConverter` is seqio's `EncDecFeatureConverter` plus one feature:

    task features          model features
    inputs          ->     encoder_input_tokens          (student: raw query and context)
    teacher_inputs  ->     teacher_encoder_input_tokens  (teacher: the same plus keywords)
    targets         ->     decoder_target_tokens, decoder_input_tokens, decoder_loss_weights

The teacher and the student decode the same targets, so the decoder features are shared. Packing
is refused: packed teacher and student sequences would put different examples side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import seqio
import tensorflow as tf


class EncDecTeacherFeatureConverter(seqio.EncDecFeatureConverter):
    """`EncDecFeatureConverter` with ``teacher_inputs`` -> ``teacher_encoder_input_tokens``."""

    TASK_FEATURES: ClassVar[dict[str, seqio.FeatureConverter.FeatureSpec]] = {
        **seqio.EncDecFeatureConverter.TASK_FEATURES,
        "teacher_inputs": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    }
    MODEL_FEATURES: ClassVar[dict[str, seqio.FeatureConverter.FeatureSpec]] = {
        **seqio.EncDecFeatureConverter.MODEL_FEATURES,
        "teacher_encoder_input_tokens": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32),
    }

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise ValueError("EncDecTeacherFeatureConverter cannot pack: teacher and student inputs must stay aligned")
        super().__init__(pack=False, **kwargs)

    def _convert_example(self, features: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        converted = dict(super()._convert_example(features))
        converted["teacher_encoder_input_tokens"] = features["teacher_inputs"]
        return converted

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
        lengths["teacher_encoder_input_tokens"] = task_feature_lengths["teacher_inputs"]
        return lengths
