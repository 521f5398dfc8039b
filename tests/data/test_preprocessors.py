import functools

import pytest
import seqio
import tensorflow as tf
from seqio import test_utils

from onesearch_jax.data import preprocessors as prep


def _ds(examples):
    return (
        tf.data.Dataset.from_tensors(examples)
        if isinstance(examples, dict)
        else tf.data.Dataset.from_tensor_slices(examples)
    )


def _features(*names, add_eos=True):
    vocab = test_utils.sentencepiece_vocab()
    return {n: seqio.Feature(vocabulary=vocab, add_eos=add_eos) for n in names}


def test_select_inputs_uses_the_teacher_text_and_drops_it():
    ds = _ds({"inputs": "raw", "teacher_inputs": "raw [keywords] dress", "targets": "<a_1>"})
    test_utils.assert_dataset(
        prep.select_inputs(ds, "teacher_inputs"), {"inputs": "raw [keywords] dress", "targets": "<a_1>"}
    )
    test_utils.assert_dataset(prep.keep_features(ds, ["targets"]), {"targets": "<a_1>"})


def test_check_sid_targets_accepts_one_sid_and_names_a_bad_one():
    check = functools.partial(prep.check_sid_targets, position_ranges=((100, 104), (104, 110), (110, 120)))
    good = _ds({"targets": tf.constant([100, 105, 119])})
    test_utils.assert_dataset(check(good), {"targets": [100, 105, 119]})
    # too short, too long, outside every range, a valid token at the wrong position
    for bad in ([100, 105], [100, 105, 119, 119], [100, 105, 120], [99, 105, 111], [104, 105, 111]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="targets are not one SID"):
            list(check(_ds({"targets": tf.constant(bad)})).as_numpy_iterator())


def test_check_lengths_truncates_inputs_with_a_mark_and_refuses_long_targets():
    features = _features("inputs", "targets")
    ds = _ds({"inputs": tf.constant([5, 6, 7, 8]), "targets": tf.constant([3, 4])})
    out = prep.check_lengths(ds, features, {"inputs": 4, "targets": 3}, truncate=("inputs",))
    test_utils.assert_dataset(out, {"inputs": [5, 6, 7], "targets": [3, 4], "truncated": 0 + 1})
    fits = prep.check_lengths(ds, features, {"inputs": 5, "targets": 3}, truncate=("inputs",))
    test_utils.assert_dataset(fits, {"inputs": [5, 6, 7, 8], "targets": [3, 4], "truncated": 0})
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature targets has more tokens than its length 2"):
        list(prep.check_lengths(ds, features, {"inputs": 5, "targets": 2}).as_numpy_iterator())
    assert prep.check_lengths(ds, features, None) is ds
