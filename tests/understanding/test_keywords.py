"""Keyword CoT fusion, configs and the keyword JSON form."""

from __future__ import annotations

import pytest

from onesearch_jax.data.schema import RecordError
from onesearch_jax.understanding.keywords import Candidate, Keyword, KeywordConfig, fuse


def _c(text: str, score: float, source: str, types=()) -> Candidate:
    return Candidate(text=text, score=score, types=types, source=source)


def test_fusion_sums_weighted_best_scores_per_source():
    candidates = [
        _c("tent", 1.0, "ontology", ("entity",)),
        _c("tent", 0.5, "mined"),
        _c("tent", 0.25, "mined"),  # a source's best score counts once
        _c("sleeping bag", 0.9, "category", ("entity",)),
        _c("outdoor", 0.8, "ontology", ("scene",)),
        _c("camping", 1.0, "mined"),  # already in the query
        _c("lantern", 0.05, "mined"),  # 0.6 * 0.05 = 0.03 < min_score
    ]
    keywords = fuse("camping gear", candidates, KeywordConfig())
    assert keywords == [
        Keyword(text="tent", score=1.3, types=("entity",), sources=("mined", "ontology")),
        Keyword(text="outdoor", score=0.8, types=("scene",), sources=("ontology",)),
        Keyword(text="sleeping bag", score=0.72, types=("entity",), sources=("category",)),
    ]


def test_k_limit_redundancy_and_ties():
    candidates = [_c(t, 1.0, "ontology") for t in ("b", "a", "down jacket", "jacket", "c", "d", "e", "f")]
    texts = [k.text for k in fuse("coat", candidates, KeywordConfig(max_keywords=3))]
    assert texts == ["a", "b", "c"]  # equal scores: alphabetical
    texts = [k.text for k in fuse("coat", candidates, KeywordConfig(max_keywords=8))]
    assert "jacket" not in texts and "down jacket" in texts
    assert len(fuse("coat", candidates, KeywordConfig(max_keywords=2), limit=6)) == 6


def test_a_query_naming_a_product_drops_weak_statistical_substitutes():
    candidates = [
        _c("blouse", 0.3, "category", ("entity",)),  # a substitute clicked for "t-shirt"
        _c("sofa", 0.9, "category", ("entity",)),  # dominant: what the query means
        _c("high heels", 0.3, "ontology", ("entity",)),  # knowledge, not statistics
        _c("red", 0.3, "mined", ("color",)),  # not a product
    ]
    named = {k.text for k in fuse("t-shirt", candidates, KeywordConfig(), names_entity=True)}
    assert named == {"sofa", "high heels", "red"}
    assert {k.text for k in fuse("t-shirt", candidates, KeywordConfig())} == {"blouse", "sofa", "high heels", "red"}


def test_a_source_score_outside_the_unit_interval_is_a_bug():
    with pytest.raises(ValueError, match="outside"):
        fuse("q", [_c("x", 1.5, "mined")], KeywordConfig())


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_keywords": 0}, "max_keywords must be in [1, 8]"),
        ({"max_keywords": 9, "pool_size": 9}, "max_keywords must be in [1, 8]"),
        ({"max_keywords": 5, "pool_size": 4}, "pool_size must be in [max_keywords, 8]"),
        ({"source_weights": (("llm", 1.0),)}, "unknown source 'llm'"),
        ({"source_weights": (("mined", 1.0), ("mined", 2.0))}, "names a source twice"),
        ({"source_weights": (("mined", 0.0),)}, "must be > 0"),
        ({"statistical_sources": ("gpt",)}, "unknown sources"),
    ],
)
def test_keyword_config_validates(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        KeywordConfig(**kwargs)


def test_keyword_json_round_trip_and_errors():
    keyword = Keyword(text="tent", score=1.3, types=("entity",), sources=("ontology",))
    assert Keyword.from_json(keyword.to_json(), path="r.jsonl", line=2, field="keywords[0]") == keyword
    with pytest.raises(RecordError, match=r"r\.jsonl:2: field 'keywords\[0\]\.types'"):
        Keyword.from_json({**keyword.to_json(), "types": ["size"]}, path="r.jsonl", line=2, field="keywords[0]")
