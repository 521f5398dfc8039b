"""Spelling correction of query words against the lexicon (Damerau distance 1)."""

from __future__ import annotations

import pytest

from onesearch_jax.understanding.lexicon import AttributeLexicon
from onesearch_jax.understanding.spelling import SpellingCorrector, damerau_at_most_one

LEXICON = AttributeLexicon.from_terms(
    [("yoga mat", "entity"), ("dog bed", "entity"), ("serum", "entity"), ("skirt", "entity"), ("shirt", "entity"),
     ("red", "color"), ("dumbbells", "entity"), ("cat", "entity"), ("camping stove", "entity"), ("mat", "entity")]
)  # fmt: skip


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("yoag", "yoga", True),  # transposition
        ("serm", "serum", True),  # deletion
        ("dumbbbells", "dumbbells", True),  # insertion
        ("shirt", "skirt", True),  # substitution
        ("shrit", "skirt", False),
        ("ab", "abcd", False),
        ("same", "same", True),
    ],
)
def test_damerau_at_most_one(a, b, expected):
    assert damerau_at_most_one(a, b) is expected
    assert damerau_at_most_one(b, a) is expected


def _corrections(query: str):
    corrector = SpellingCorrector(LEXICON)
    return [(c.start, c.end, c.observed, c.term) for c in corrector.correct(query, LEXICON.match(query))]


def test_misspelt_words_are_read_as_lexicon_terms():
    assert _corrections("yoag mat") == [(0, 8, "yoag mat", "yoga mat")]
    assert _corrections("do bed") == [(0, 6, "do bed", "dog bed")]  # a dropped letter across two words
    assert _corrections("red serm") == [(4, 8, "serm", "serum")]
    assert _corrections("cmping stove") == [(0, 12, "cmping stove", "camping stove")]


def test_exact_terms_short_words_and_far_words_are_left_alone():
    assert _corrections("red shirt") == []  # "shirt" is a term, never "corrected" to "skirt"
    assert _corrections("cta") == []  # shorter than min_length
    assert _corrections("banana bread") == []


def test_an_ambiguous_stretch_yields_every_reading():
    assert _corrections("shrt") == [(0, 4, "shrt", "shirt")]  # "skirt" is two edits away
    assert _corrections("sirt") == [(0, 4, "sirt", "shirt"), (0, 4, "sirt", "skirt")]
    assert [t for *_, t in _corrections("skrt")] == ["skirt"]
    assert [t for *_, t in _corrections("shirtt")] == ["shirt"]


def test_bad_settings():
    with pytest.raises(ValueError, match="min_length must be >= 2"):
        SpellingCorrector(LEXICON, min_length=1)
