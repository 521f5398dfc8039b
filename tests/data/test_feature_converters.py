import numpy as np
import pytest
import seqio
import tensorflow as tf
from seqio import test_utils

from onesearch_jax.data.feature_converters import EncDecTeacherFeatureConverter


def _ds(examples):
    return tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={k: tf.TensorSpec([None], tf.int32) for k in examples[0]},
    )


def test_teacher_inputs_become_their_own_encoder_feature_and_decoder_features_are_shared():
    ds = _ds([{"inputs": [7, 8, 5, 1], "teacher_inputs": [7, 8, 9, 9, 5, 1], "targets": [3, 9, 1]}])
    lengths = {"inputs": 5, "teacher_inputs": 7, "targets": 4}
    converted = EncDecTeacherFeatureConverter()(ds, lengths)
    test_utils.assert_dataset(
        converted,
        {
            "encoder_input_tokens": [7, 8, 5, 1, 0],
            "teacher_encoder_input_tokens": [7, 8, 9, 9, 5, 1, 0],
            "decoder_target_tokens": [3, 9, 1, 0],
            "decoder_input_tokens": [0, 3, 9, 1],
            "decoder_loss_weights": [1, 1, 1, 0],
        },
    )
    assert EncDecTeacherFeatureConverter().get_model_feature_lengths(lengths)["teacher_encoder_input_tokens"] == 7


def test_student_features_equal_seqios_encoder_decoder_converter():
    examples = [{"inputs": [4, 5, 6, 1], "teacher_inputs": [4, 2, 5, 6, 1], "targets": [9, 8, 1]}]
    lengths = {"inputs": 6, "teacher_inputs": 6, "targets": 4}
    ours = next(iter(EncDecTeacherFeatureConverter()(_ds(examples), lengths).as_numpy_iterator()))
    plain = [{k: v for k, v in examples[0].items() if k != "teacher_inputs"}]
    student_lengths = {"inputs": 6, "targets": 4}
    theirs = next(iter(seqio.EncDecFeatureConverter(pack=False)(_ds(plain), student_lengths).as_numpy_iterator()))
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value)


def test_packing_and_missing_teacher_inputs_are_refused():
    with pytest.raises(ValueError, match="cannot pack"):
        EncDecTeacherFeatureConverter(pack=True)
    ds = _ds([{"inputs": [1], "targets": [1]}])
    with pytest.raises(ValueError, match="teacher_inputs"):
        EncDecTeacherFeatureConverter()(ds, {"inputs": 2, "teacher_inputs": 2, "targets": 2})
