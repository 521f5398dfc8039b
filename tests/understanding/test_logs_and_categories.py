"""The training window, leave-one-session-out counts and category prediction (hand-computed)."""

from __future__ import annotations

import dataclasses

import pytest

from onesearch_jax.understanding.analysis import QueryAnalysis
from onesearch_jax.understanding.categories import CategoryConfig, CategoryPredictor, CategorySource
from onesearch_jax.understanding.keywords import KeywordRequest
from onesearch_jax.understanding.logs import TrainingLogs, query_key
from onesearch_jax.understanding.profiles import Segmenter
from tests.understanding import tiny

SEGMENTER = Segmenter()


def _predictor(logs, **config):
    return CategoryPredictor(
        logs, CategoryConfig(**config), lexicon=tiny.lexicon(), segment_of=lambda u: SEGMENTER.of(logs, u)
    )


def test_query_key_folds_and_rejects_empty_queries():
    assert query_key("  Yoga   MAT ") == "yoga mat"
    assert query_key("ＳＯＦＡ") == "sofa"
    for bad in ("", "   ", "\t"):
        with pytest.raises(ValueError, match="empty query"):
            query_key(bad)


def test_the_window_is_the_train_split_only():
    logs = tiny.logs()
    assert sorted(logs.sessions) == [1, 2, 3, 4, 5, 6]
    assert logs.window_end == 46 and logs.excluded_sessions == 2
    assert logs.by_query == {"yoga mat": (1, 2, 3), "dress": (4,), "treadmill": (5, 6)}
    assert [s.session_id for s in logs.history(1, before=60)] == [1, 4]
    assert [s.session_id for s in logs.history(1, before=60, exclude=4)] == [1]
    assert [s.session_id for s in logs.history(1, before=40)] == [1]
    assert logs.engaged(logs.sessions[2], purchase_weight=2) == {2: 3}
    assert logs.prices == {1: ((1, 20.0),), 2: ((2, 30.0),), 7: ((6, 300.0),)}


def test_items_missing_from_the_catalogue_are_counted_not_hidden():
    sessions = tiny.sessions()
    sessions[0] = dataclasses.replace(sessions[0], impressed_item_ids=(1, 99), clicked_item_ids=(99,))
    logs = TrainingLogs(items=tiny.items(), users=tiny.users(), sessions=sessions)
    assert logs.missing_item_refs == 2
    assert logs.sessions[1].clicked == () and logs.sessions[1].impressed == (1,)


def test_category_distribution_from_clicks_with_purchase_weight():
    prediction = _predictor(tiny.logs()).predict("yoga mat")
    # clicks: s1 item 1 (1), s2 item 2 (1 click + 2 purchase), s3 items 1 and 3 (1 each)
    assert prediction.source == "clicks" and prediction.support == 6
    assert prediction.levels[0] == (("Sports", 1.0),)
    assert prediction.levels[2] == (("yoga mat", round(5 / 6, 6)), ("dumbbells", round(1 / 6, 6)))
    assert prediction.top(2) == "Fitness"


def test_leaving_a_session_out_equals_rebuilding_without_it():
    full = _predictor(tiny.logs())
    for sid in range(1, 7):
        rebuilt = _predictor(tiny.logs(drop=(sid,)))
        for segment in (None, "gender=F", "gender=M"):
            for query in ("yoga mat", "dress", "treadmill"):
                assert full.predict(query, segment=segment, exclude=sid) == rebuilt.predict(query, segment=segment)
    without_s2 = full.predict("yoga mat", exclude=2)
    assert without_s2.support == 3
    assert without_s2.levels[2] == (("yoga mat", round(2 / 3, 6)), ("dumbbells", round(1 / 3, 6)))


def test_segment_is_smoothed_toward_the_query():
    prediction = _predictor(tiny.logs()).predict("yoga mat", segment="gender=F")
    # F clicks: yoga mat 2, dumbbells 1 (n = 3); prior 5 pseudo-clicks of (5/6, 1/6)
    assert prediction.levels[2] == (
        ("yoga mat", round((2 + 5 * 5 / 6) / 8, 6)),
        ("dumbbells", round((1 + 5 * 1 / 6) / 8, 6)),
    )


def test_lexicon_backoff_for_unseen_queries_and_smoothing_for_seen_ones():
    predictor = _predictor(tiny.logs())
    unseen = predictor.predict("red yoga mat", terms=[("red", 1.0), ("yoga mat", 1.0)])
    assert unseen.source == "lexicon" and unseen.support == 0
    assert unseen.levels[2] == (("yoga mat", 1.0),)  # "red" is no product term; "yoga mat" clicks are all yoga mats
    brand = predictor.predict("kara", terms=[("kara", 1.0)])
    assert brand.levels[2] == (("yoga mat", round(2 / 3, 6)), ("dumbbells", round(1 / 3, 6)))
    seen = predictor.predict("yoga mat", terms=[("yoga mat", 1.0)])
    assert seen.source == "clicks"
    assert seen.levels[2] == (("yoga mat", round((5 + 5) / 11, 6)), ("dumbbells", round(1 / 11, 6)))
    assert predictor.predict("umbrella").source == "none"


def test_category_source_proposes_leaf_categories_over_the_share():
    prediction = _predictor(tiny.logs()).predict("yoga mat")
    request = KeywordRequest(key="yoga mat", analysis=QueryAnalysis(key="yoga mat"), categories=prediction)
    candidates = CategorySource(lexicon=tiny.lexicon(), min_share=0.1).propose(request)
    assert [(c.text, c.score, c.types) for c in candidates] == [
        ("yoga mat", round(5 / 6, 6), ("entity",)),
        ("dumbbells", round(1 / 6, 6), ("entity",)),
    ]
    assert [c.text for c in CategorySource(min_share=0.5).propose(request)] == ["yoga mat"]


def test_bad_configs():
    with pytest.raises(ValueError, match="purchase_weight must be an integer"):
        CategoryConfig(purchase_weight=1.5)
    with pytest.raises(ValueError, match="min_support must be >= 1"):
        CategoryConfig(min_support=0)
    with pytest.raises(ValueError, match="unknown user field"):
        Segmenter(fields=("height",))
