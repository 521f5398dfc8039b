import itertools

import pytest

from onesearch_jax.data.schema import SearchSession
from onesearch_jax.evaluate.segments import (
    QUERY_TYPES,
    SEGMENTS,
    SegmentConfig,
    SegmentTables,
    item_labels,
    query_type,
    session_segments,
)

_ids = itertools.count(1)


def _session(user=1, query="q", split="train", impressed=(), clicked=(), purchased=()):
    shown = tuple(dict.fromkeys((*impressed, *clicked, *purchased)))
    return SearchSession(
        user_id=user, session_id=next(_ids), impressed_item_ids=shown, clicked_item_ids=tuple(clicked),
        purchased_item_ids=tuple(purchased), time_index=0, query=query, split=split,
    )  # fmt: skip


def _tables(sessions, **config):
    return SegmentTables.from_sessions(sessions, SegmentConfig(**config))


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"head_share": 0.0}, r"head_share must be in \(0, 1\], got 0.0"),
        ({"head_share": 1.5}, r"head_share must be in \(0, 1\], got 1.5"),
        ({"head_share": float("nan")}, "head_share must be a finite number, got nan"),
        ({"head_share": "0.5"}, "head_share must be a finite number, got '0.5'"),
        ({"head_share": True}, "head_share must be a finite number, got True"),
        ({"torso_share": 0}, r"torso_share must be in \(0, 1\], got 0"),
        ({"torso_share": -0.1}, r"torso_share must be in \(0, 1\], got -0.1"),
        ({"hot_share": 0.0}, r"hot_share must be in \(0, 1\], got 0.0"),
        ({"hot_share": 1.01}, r"hot_share must be in \(0, 1\], got 1.01"),
        ({"head_share": 0.8, "torso_share": 0.3}, r"head_share \+ torso_share must be <= 1, got 0.8 \+ 0.3"),
        ({"user_low_quantile": 0.5, "user_high_quantile": 0.5}, "user_low_quantile=0.5, user_high_quantile=0.5"),
        ({"user_low_quantile": 0.7, "user_high_quantile": 0.6}, "user_low_quantile=0.7"),
        ({"user_low_quantile": -0.1}, "user_low_quantile=-0.1"),
        ({"user_high_quantile": 1.2}, "user_high_quantile=1.2"),
        ({"user_high_quantile": float("inf")}, "user_high_quantile must be a finite number, got inf"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegmentConfig(**kwargs)


def test_config_edges_accepted():
    SegmentConfig(head_share=1.0, torso_share=1e-9 / 2, hot_share=1.0)
    SegmentConfig(head_share=0.6, torso_share=0.4, user_low_quantile=0.0, user_high_quantile=1.0)
    with pytest.raises(TypeError):
        SegmentConfig(0.5)  # keyword-only


# ------------------------------------------------------------------------- query frequency
def _query_sessions():
    # train sessions per query: a 5, b 3, c 1, d 1 (total 10); d also appears 20 times in test.
    counts = {"a": 5, "b": 3, "c": 1, "d": 1}
    train = [_session(query=q) for q, n in counts.items() for _ in range(n)]
    return train + [_session(query="d", split="test") for _ in range(20)]


def test_query_frequency_boundaries():
    tables = _tables(_query_sessions(), head_share=0.5, torso_share=0.3)
    # cumulative shares: a 5/10 = 0.5 <= 0.5 head; b 8/10 = 0.8 <= 0.8 torso; c 0.9, d 1.0 tail.
    assert tables.queries == {"a": "head", "b": "torso", "c": "tail", "d": "tail"}
    assert tables.query_segment("  A ") == "head"  # normalised by query_key
    assert tables.query_segment("never seen") == "tail"
    with pytest.raises(ValueError):
        tables.query_segment("   ")


def test_query_share_sum_with_rounding_error_still_admits_the_boundary():
    # 0.7 + 0.1 == 0.7999999999999999 in floats; b's cumulative share 0.8 must still be torso.
    tables = _tables(_query_sessions(), head_share=0.7, torso_share=0.1)
    assert tables.query_segment("b") == "torso"


def test_query_frequency_ties_and_top_query_always_head():
    sessions = [_session(query=q) for q in ("y", "x", "y", "x")]
    # x and y have 2 sessions each: tie broken by key, so x first (share 0.5 -> head), y 1.0 -> tail.
    assert _tables(sessions, head_share=0.5, torso_share=0.3).queries == {"x": "head", "y": "tail"}
    # head_share 0.4 < 0.5: x is still head (the most frequent query always is); y: 1.0 <= 0.4 + 0.6.
    assert _tables(sessions, head_share=0.4, torso_share=0.6).queries == {"x": "head", "y": "torso"}


# --------------------------------------------------------------------------- user activity
def test_user_activity_quantile_boundaries():
    # users 1..7 have 1..7 train sessions: sorted counts 1..7, q(1/3) at position 6/3 = 2 -> 3,
    # q(2/3) at position 4 -> 5. So <= 3 low, 4 middle, >= 5 high.
    sessions = [_session(user=u) for u in range(1, 8) for _ in range(u)]
    sessions += [_session(user=99, split="test"), _session(user=4, split="valid")]
    tables = _tables(sessions)
    assert [tables.user_segment(u) for u in range(1, 8)] == ["low"] * 3 + ["middle"] + ["high"] * 3
    assert tables.user_segment(99) == "low"  # only test sessions
    assert tables.user_segment(12345) == "low"  # no sessions at all


def test_user_activity_tie_filling_both_quantiles_is_low():
    # counts [1, 1, 1, 1, 1, 2]: q(1/3) = q(2/3) = 1, so the single-session users are low, not high.
    sessions = [_session(user=u) for u in range(5)] + [_session(user=9), _session(user=9)]
    tables = _tables(sessions)
    assert [tables.user_segment(u) for u in range(5)] == ["low"] * 5
    assert tables.user_segment(9) == "high"


# -------------------------------------------------------------------------- item popularity
def _item_sessions():
    # train clicks: item 10 x4, 11 x2, 12 x2 (total 8); item 13 impressed only; 14 bought only;
    # item 20 only in a test session.
    return [
        _session(impressed=(13,), clicked=(10, 11)),
        _session(clicked=(10, 12)),
        _session(clicked=(10, 11, 12)),
        _session(clicked=(10,), purchased=(14,)),
        _session(split="test", clicked=(20,) * 9),
    ]


def test_item_popularity_shares_and_cold():
    tables = _tables(_item_sessions(), hot_share=0.5)
    # cumulative click shares: 10 -> 4/8 = 0.5 hot; 11 -> 0.75, 12 -> 1.0 warm.
    assert [tables.item_segment(i) for i in (10, 11, 12, 13, 14)] == ["hot", "warm", "warm", "warm", "warm"]
    assert tables.item_segment(20) == "cold"  # shown only in test
    assert tables.item_segment(999) == "cold"


def test_item_popularity_ties_by_item_id_and_zero_clicks_never_hot():
    # hot_share 0.75: 10 (0.5) and 11 (0.75, ties with 12 broken by id) hot; 12 (1.0) warm.
    tables = _tables(_item_sessions(), hot_share=0.75)
    assert [tables.item_segment(i) for i in (10, 11, 12)] == ["hot", "hot", "warm"]
    # hot_share 1.0: every clicked item is hot, but 13 and 14 (no click, share still 1.0) stay warm.
    tables = _tables(_item_sessions(), hot_share=1.0)
    assert [tables.item_segment(i) for i in (10, 11, 12, 13, 14)] == ["hot", "hot", "hot", "warm", "warm"]
    # hot_share 0.1 < 0.5: the most clicked item is hot all the same.
    assert _tables(_item_sessions(), hot_share=0.1).item_segment(10) == "hot"


def test_item_labels_with_explicit_zero_counts():
    # a zero-click item has cumulative share 1.0 <= hot_share 1.0 but is warm: only clicked items are hot.
    assert item_labels({1: 2, 2: 0}, [1, 2, 3], SegmentConfig(hot_share=1.0)) == {1: "hot", 2: "warm", 3: "warm"}


# ------------------------------------------------------------------------ session_segments
def test_session_segments_item_fallbacks():
    tables = _tables(_item_sessions() + _query_sessions(), hot_share=0.5)
    first_click = session_segments(_session(query="c", clicked=(12, 10), purchased=(10,), split="test"), tables)
    assert first_click["item_popularity"] == "warm"  # item 12, not the hot 10 after it nor the purchase
    bought = session_segments(_session(purchased=(10, 12), split="test"), tables)
    assert bought["item_popularity"] == "hot"
    nothing = session_segments(_session(impressed=(10,), split="test"), tables)
    assert nothing["item_popularity"] == "none"
    cold = session_segments(_session(clicked=(999,), split="test"), tables)
    assert cold["item_popularity"] == "cold"


def test_session_segments_all_families():
    tables = _tables(_query_sessions())
    # user 1 is the only user (10 train sessions): quantiles both 10, so low (low tested first).
    out = session_segments(_session(user=1, query="a", split="test"), tables, query_kind="constraint")
    assert out == {
        "query_frequency": "head",
        "user_activity": "low",
        "item_popularity": "none",
        "query_type": "complex",
    }
    assert list(out) == list(SEGMENTS)
    for family, label in out.items():
        assert label in SEGMENTS[family]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("plain", "plain"),
        ("variant", "plain"),
        ("constraint", "complex"),
        ("constrained", "complex"),
        ("complex", "complex"),
        ("multi_attribute", "complex"),
        ("ambiguous", "ambiguous"),
        ("weird", "unknown"),
        (None, "unknown"),
    ],
)
def test_query_type_mapping(kind, expected):
    assert query_type(kind) == expected
    tables = _tables([])
    assert session_segments(_session(split="test"), tables, query_kind=kind)["query_type"] == expected


def test_query_types_map_into_the_listed_labels():
    assert set(QUERY_TYPES.values()) <= set(SEGMENTS["query_type"])
    assert set(SEGMENTS) == {"query_frequency", "user_activity", "item_popularity", "query_type"}


def test_empty_train_window_gives_default_labels():
    tables = _tables([_session(query="a", user=1, clicked=(5,), split="test")])
    assert (tables.query_segment("a"), tables.user_segment(1), tables.item_segment(5)) == ("tail", "low", "cold")
