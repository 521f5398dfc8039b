import math

import numpy as np
import pytest

from onesearch_jax.evaluate.bm25 import Bm25Retriever, terms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Nike Air-Max 270", ["nike", "air", "max", "270"]),
        ("运动鞋 nike", ["运", "动", "鞋", "运动", "动鞋", "nike"]),
        ("a运动b_c", ["a", "运", "动", "运动", "b", "c"]),
        ("Café, crème!", ["café", "crème"]),
        ("  ", []),
    ],
)
def test_terms(text, expected):
    assert terms(text) == expected


def _lucene_bm25(query, docs, k1=1.5, b=0.75):
    """Lucene BM25 written out (the module docstring's equation), for a hand check."""
    tokenised = [terms(d) for d in docs]
    avgdl = sum(map(len, tokenised)) / len(docs)
    scores = []
    for doc in tokenised:
        score = 0.0
        for t in set(terms(query)):
            df = sum(t in d for d in tokenised)
            if not df:
                continue
            idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            tf = doc.count(t)
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / avgdl))
        scores.append(score)
    return scores


def test_ranking_equals_the_bm25_equation_and_drops_non_matching_items():
    titles = ["red running shoes", "blue running jacket", "cat food dry", "dog food wet food", "red dress"]
    ids = [10, 11, 12, 13, 14]
    retriever = Bm25Retriever(ids, titles)
    for query in ("red running shoes", "food", "dress red", "running"):
        scores = np.asarray(_lucene_bm25(query, titles))
        matching = np.flatnonzero(scores > 0)
        expected = [ids[i] for i in matching[np.argsort(-scores[matching], kind="stable")]]
        assert retriever.rank([query], k=5) == [expected], query
    assert retriever.rank(["dog food"], k=1) == [[13]]  # "food" twice in a shorter-than-average title
    assert retriever.rank(["sofa", "zzz dress"], k=3) == [[], [14]]  # no shared term: nothing, not noise


def test_bad_catalogue_is_refused():
    with pytest.raises(ValueError, match="one title per item"):
        Bm25Retriever([1, 2], ["a"])
    with pytest.raises(ValueError, match="at least one item"):
        Bm25Retriever([], [])
