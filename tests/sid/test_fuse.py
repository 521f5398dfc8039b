import numpy as np
import pytest

from onesearch_jax.sid.fuse import fuse_keywords, keyword_term_ids


def test_term_ids_drop_repeats_within_a_row_and_keep_first_seen_order():
    terms, offsets, index = keyword_term_ids([["red", "shoe", "red"], [], ["shoe"]])
    assert terms == ["red", "shoe"]
    assert offsets.tolist() == [0, 2, 2, 3]
    assert index.tolist() == [0, 1, 1]


def test_fusion_equals_the_formula_on_a_hand_computed_example():
    e = np.array([[1.0, 0.0, 0.0], [0.0, 3.0, 4.0]], np.float32)
    term_vectors = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    terms, offsets, index = keyword_term_ids([["a", "b"], []])
    fused = fuse_keywords(e, offsets, index, term_vectors)
    # row 0: 0.5 (1,0,0) + 0.5 mean((0,1,0),(0,0,1)) = (0.5, 0.25, 0.25), norm sqrt(0.375)
    s = np.sqrt(0.375)
    np.testing.assert_allclose(fused[0], [0.5 / s, 0.25 / s, 0.25 / s], rtol=1e-6)
    # row 1 has no keyword: only normalised
    np.testing.assert_allclose(fused[1], [0.0, 0.6, 0.8], rtol=1e-6)
    assert terms == ["a", "b"]


def test_keyword_weight_one_gives_the_keyword_mean_direction():
    e = np.array([[1.0, 0.0]], np.float32)
    _, offsets, index = keyword_term_ids([["k"]])
    fused = fuse_keywords(e, offsets, index, np.array([[0.0, 2.0]], np.float32), keyword_weight=1.0)
    np.testing.assert_allclose(fused, [[0.0, 1.0]], atol=1e-7)


def test_fusion_rejects_mismatched_dimensions_and_weights():
    _, offsets, index = keyword_term_ids([["k"]])
    with pytest.raises(ValueError, match="dimension"):
        fuse_keywords(np.ones((1, 2), np.float32), offsets, index, np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="keyword_weight"):
        fuse_keywords(np.ones((1, 2), np.float32), offsets, index, np.ones((1, 2), np.float32), keyword_weight=1.5)
