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


GRPO_FEEDBACK = ("clicked_leaves", "ordered_leaves", "relevance_leaves", "relevance_tiers")


class GrpoFeatureConverter(seqio.EncDecFeatureConverter):
    """`EncDecFeatureConverter` with the session's feedback lists (:data:`GRPO_FEEDBACK`) passed through."""

    TASK_FEATURES: ClassVar[dict[str, seqio.FeatureConverter.FeatureSpec]] = {
        **seqio.EncDecFeatureConverter.TASK_FEATURES,
        **{name: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32) for name in GRPO_FEEDBACK},
    }
    MODEL_FEATURES: ClassVar[dict[str, seqio.FeatureConverter.FeatureSpec]] = {
        **seqio.EncDecFeatureConverter.MODEL_FEATURES,
        **{name: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32) for name in GRPO_FEEDBACK},
    }

    def __init__(self, pack: bool = False, **kwargs):
        if pack:
            raise ValueError("GrpoFeatureConverter cannot pack: each prompt carries its own feedback")
        super().__init__(pack=False, **kwargs)

    def _convert_example(self, features: Mapping[str, tf.Tensor]) -> Mapping[str, tf.Tensor]:
        converted = dict(super()._convert_example(features))
        converted.update({name: features[name] for name in GRPO_FEEDBACK})
        return converted

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
        lengths.update({name: task_feature_lengths[name] for name in GRPO_FEEDBACK})
        return lengths
