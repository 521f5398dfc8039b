"""N-gram mining: PMI against the category background, leave-one-session-out, Chinese titles."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from onesearch_jax.data.schema import Item, SearchSession, User
from onesearch_jax.understanding.analysis import QueryAnalysis
from onesearch_jax.understanding.categories import CategoryConfig, CategoryPredictor
from onesearch_jax.understanding.keywords import KeywordRequest
from onesearch_jax.understanding.logs import TrainingLogs
from onesearch_jax.understanding.mining import MinedSource, MiningConfig, NgramMiner
from onesearch_jax.understanding.profiles import Segmenter
from tests.understanding import tiny

EXACT = {"min_support": 2, "min_items": 2, "prior_events": 0.0, "min_lift": 1.0}


def _request(logs, query: str, *, segment=None, exclude=None) -> KeywordRequest:
    categories = CategoryPredictor(logs, CategoryConfig()).predict(query, exclude=exclude)
    return KeywordRequest(
        key=query, analysis=QueryAnalysis(key=query), categories=categories, segment=segment, exclude=exclude
    )


def _miner(logs, **config) -> NgramMiner:
    segmenter = Segmenter()
    return NgramMiner(logs, MiningConfig(**config), lexicon=tiny.lexicon(), segment_of=lambda u: segmenter.of(logs, u))


def _score(p_query: float, p_background: float) -> float:
    return round(p_query * min(1.0, math.log(p_query / p_background) / math.log(10.0)), 6)


def test_pmi_scores_against_the_impression_background():
    logs = tiny.logs()
    mined = _miner(logs, **EXACT).mine(_request(logs, "yoga mat"))
    # weighted clicks for "yoga mat": 6; titles with "yoga mat" 5, with "kara" 3.
    # Sports impressions in the window: 14; of items with "yoga mat" 7, with "kara" 6.
    assert [(c.text, c.score, c.support) for c in mined] == [
        ("yoga mat", _score(5 / 6, 7.5 / 15), 3),
        ("kara", _score(3 / 6, 6.5 / 15), 2),
    ]
    assert mined[0].p_background == round(7.5 / 15, 6)
    # "red": one clicked item only (min_items); "lovo": one session only (min_support)
    assert {"red", "lovo"}.isdisjoint(c.text for c in mined)


def test_shrinkage_and_lift_threshold():
    logs = tiny.logs()
    shrunk = _miner(logs, **{**EXACT, "prior_events": 5.0}).mine(_request(logs, "yoga mat"))
    p_query = (5 + 5 * 0.5) / (6 + 5)
    assert shrunk[0].text == "yoga mat" and shrunk[0].score == _score(p_query, 0.5)
    assert [c.text for c in _miner(logs, **{**EXACT, "min_lift": 1.5}).mine(_request(logs, "yoga mat"))] == ["yoga mat"]


def test_segment_evidence_is_smoothed_toward_the_query():
    logs = tiny.logs()
    mined = _miner(logs, **EXACT).mine(_request(logs, "yoga mat", segment="gender=M"))
    # M: session 2 only, 3 weighted clicks on "yoga mat" titles; 5 pseudo-clicks of 5/6
    p_segment = (3 + 5 * 5 / 6) / (3 + 5)
    assert mined[0].text == "yoga mat" and mined[0].score == _score(p_segment, 0.5)


def test_leave_one_session_out_is_exact_and_removes_its_evidence():
    logs = tiny.logs()
    miner = _miner(logs, **EXACT)
    without_3 = miner.mine(_request(logs, "yoga mat", exclude=3))
    # without session 3: 4 weighted clicks, all on yoga mats; 12 Sports impressions, 5 of yoga mats
    assert [(c.text, c.score) for c in without_3] == [("yoga mat", _score(1.0, 5.5 / 13))]
    for sid in range(1, 7):
        rebuilt_logs = tiny.logs(drop=(sid,))
        rebuilt = _miner(rebuilt_logs, **EXACT).mine(_request(rebuilt_logs, "yoga mat"))
        assert miner.mine(_request(logs, "yoga mat", exclude=sid)) == rebuilt


def test_later_sessions_never_count():
    logs = tiny.logs()
    assert 7 not in logs.sessions and 8 not in logs.sessions
    leaky = tiny.logs(splits=("train", "valid", "test"))
    assert _miner(logs, **EXACT).mine(_request(logs, "yoga mat")) != _miner(leaky, **EXACT).mine(
        _request(leaky, "yoga mat")
    )


def test_backoff_pools_queries_sharing_a_product_term():
    logs = tiny.logs()
    terms = {"yoga mat": ["yoga mat"], "red yoga mat": ["yoga mat"], "dress": ["dress"], "treadmill": ["treadmill"]}
    miner = NgramMiner(logs, MiningConfig(**EXACT), lexicon=tiny.lexicon(), query_terms=lambda k: terms.get(k, []))
    own = miner.mine(_request(logs, "yoga mat"))
    unseen = dataclasses.replace(_request(logs, "yoga mat"), key="red yoga mat")  # same categories
    pooled = miner.mine(unseen)
    assert [c.text for c in pooled] == [c.text for c in own] == ["yoga mat", "kara"]
    assert all(p.backoff and p.score == round(o.score * 0.5, 6) for p, o in zip(pooled, own, strict=True))


def test_mined_source_types_candidates_from_the_lexicon():
    logs = tiny.logs()
    candidates = MinedSource(_miner(logs, **EXACT)).propose(_request(logs, "yoga mat"))
    assert [(c.text, c.types, c.source) for c in candidates] == [
        ("yoga mat", ("entity",), "mined"),
        ("kara", ("brand",), "mined"),
    ]


def test_bad_configs():
    with pytest.raises(ValueError, match="candidates must be one of"):
        MiningConfig(candidates="words")
    with pytest.raises(ValueError, match="min_lift must be >= 1"):
        MiningConfig(min_lift=0.5)
    with pytest.raises(ValueError, match="needs a lexicon"):
        NgramMiner(tiny.logs(), MiningConfig(candidates="lexicon"))


def test_ngram_mining_on_the_real_kuaisearch_demo_titles(kuaisearch_demo):
    """The demo's own clicks point at items outside its 200-item sample, so sessions are made
    from its real titles: one search per facial-cleanser item ("洗面奶" query), and every item
    impressed once in a background search. Raw CJK n-grams (no lexicon) must surface what the
    cleanser titles share and the catalogue does not."""
    rows = [json.loads(line) for line in (kuaisearch_demo / "items.jsonl").read_text("utf-8").splitlines()]
    items = [Item(**row) for row in rows]
    cleansers = [i.item_id for i in items if i.category_level3_name == "洁面用品"]
    assert len(cleansers) == 4
    users = [User(user_id=1, gender="F", age_bucket="24-30", fre_country="中国", fre_province="浙江", fre_city="杭州")]
    sessions = [
        SearchSession(
            user_id=1,
            session_id=n,
            impressed_item_ids=(i,),
            clicked_item_ids=(i,),
            purchased_item_ids=(),
            time_index=n,
            query="洗面奶",
            split="train",
        )
        for n, i in enumerate(cleansers, start=1)
    ]
    sessions.append(
        SearchSession(user_id=1, session_id=99, impressed_item_ids=tuple(i.item_id for i in items),
                      clicked_item_ids=(), purchased_item_ids=(), time_index=99, query="随便看看", split="train")
    )  # fmt: skip
    logs = TrainingLogs(items=items, users=users, sessions=sessions)
    miner = NgramMiner(logs, MiningConfig(min_support=3, min_items=3, cjk_sizes=(2, 3), prior_events=0.0))
    assert miner.mode == "ngrams"
    mined = miner.mine(_request(logs, "洗面奶"))
    # Background: the 14 titles of level-1 category 美容护肤, impressed once each, plus the 4
    # cleanser searches' own impressions = 18. 氨基酸 and 洗面奶 are in 3 titles (all cleansers,
    # so 3 + 3 impressions); 控油 and 洁面 in 4 titles (3 cleansers: 4 + 3). Each is in 3 of the
    # 4 clicked titles: p_q = 3/4.
    assert [(c.text, c.score, c.support) for c in mined] == [
        ("氨基酸", _score(3 / 4, 6.5 / 19), 3),
        ("洗面奶", _score(3 / 4, 6.5 / 19), 3),
        ("控油", _score(3 / 4, 7.5 / 19), 3),
        ("洁面", _score(3 / 4, 7.5 / 19), 3),
    ]
    # "基酸" and "洗面" are inside longer n-grams with the same support; "洁面乳" is in 2 titles only
