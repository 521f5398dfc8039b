"""Tokens, n-grams and the keyword redundancy rules on Latin and Chinese text."""

from __future__ import annotations

import pytest

from onesearch_jax.understanding.text import adds_nothing, ngrams, redundant, segments, tokens


def test_segments_split_words_and_cjk_runs():
    assert segments("Yoga Mat 6mm 瑜伽垫【加厚】t-shirt 3+ years 1.5L, ok.") == [
        ("w", "yoga"), ("w", "mat"), ("w", "6mm"), ("c", "瑜伽垫"), ("c", "加厚"), ("w", "t-shirt"),
        ("w", "3+"), ("w", "years"), ("w", "1.5l"), ("w", "ok"),
    ]  # fmt: skip
    assert tokens("裤子女款 T-Shirt") == ["裤", "子", "女", "款", "t-shirt"]


def test_word_ngrams_stop_at_punctuation():
    assert sorted(ngrams("red yoga mat, 6mm", max_words=2)) == ["6mm", "mat", "red", "red yoga", "yoga", "yoga mat"]
    assert "mat 6mm" not in ngrams("red yoga mat, 6mm")


def test_cjk_character_ngrams_and_short_runs():
    assert ngrams("牛仔裤", cjk_sizes=(2,)) == {"牛仔", "仔裤"}
    assert ngrams("裤 子", cjk_sizes=(2, 3)) == {"裤", "子"}  # runs shorter than 2 are kept whole
    assert ngrams("水洗牛仔裤bf", cjk_sizes=(3,)) == {"水洗牛", "洗牛仔", "牛仔裤", "bf"}
    with pytest.raises(ValueError, match="bad n-gram sizes"):
        ngrams("x", cjk_sizes=())


def test_adds_nothing_and_redundant():
    assert adds_nothing("yoga mat", "red yoga mat")
    assert not adds_nothing("yoga mat", "yoag mat")
    assert adds_nothing("女款裤子", "裤子女款")
    assert not adds_nothing("sofa", "couch")
    assert redundant("jacket", "down jacket") and redundant("down jacket", "jacket")
    assert not redundant("running shoes", "canvas shoes")
    assert redundant("瑜伽垫", "伽垫加厚")  # overlapping fragments of one phrase
    assert not redundant("牛仔裤", "阔腿")
