"""Prompt layout: exact renderings, cleaning, segment parsing and the student/teacher invariant."""

from __future__ import annotations

import itertools

import pytest

from onesearch_jax.data.prompts import (
    MARKER_KEYWORDS,
    PROMPT_MARKERS,
    STUDENT_ORDER,
    TEACHER_ORDER,
    PromptRecord,
    UserProfile,
    clean_text,
    join_segments,
    keyword_segment,
    remove_segment,
    render_prompts,
    render_task_input,
    split_segments,
)
from onesearch_jax.data.schema import User

SID_1 = "<a_19><b_4><c_6><d_142><d_479>"
SID_2 = "<a_3><b_0><c_1><d_7><d_300>"
SID_3 = "<a_7><b_2><c_0><d_255><d_256>"


def _user(**kw) -> User:
    fields = dict(user_id=1, gender="F", age_bucket="24-30", fre_country="China", fre_province="Jiangsu",
                  fre_city="Nanjing")  # fmt: skip
    return User(**{**fields, **kw})


def _record(**kw) -> PromptRecord:
    fields = dict(profile=UserProfile.from_user(_user()), query="yoga mat", query_sid=SID_1)
    return PromptRecord(**{**fields, **kw})


def test_exact_rendering_with_history_and_keywords():
    prompts = render_prompts(
        _record(recent_queries=("dumbbells", "dress"), recent_item_sids=(SID_2, SID_3), keywords=("non-slip", "kara"))
    )
    assert prompts.inputs == (
        "[user] gender F, age 24-30, location Jiangsu Nanjing [query] yoga mat [query_sid] " + SID_1
        + " [recent_queries] dumbbells | dress [recent_items] " + SID_2 + " " + SID_3
    )  # fmt: skip
    assert prompts.teacher_inputs == (
        "[user] gender F, age 24-30, location Jiangsu Nanjing [query] yoga mat [query_sid] " + SID_1
        + " [keywords] non-slip, kara [recent_queries] dumbbells | dress [recent_items] " + SID_2 + " " + SID_3
    )  # fmt: skip


def test_empty_history_and_no_keywords_render_none():
    prompts = render_prompts(_record())
    assert prompts.inputs == (
        f"[user] gender F, age 24-30, location Jiangsu Nanjing [query] yoga mat [query_sid] {SID_1} "
        "[recent_queries] none [recent_items] none"
    )
    assert prompts.teacher_inputs == (
        f"[user] gender F, age 24-30, location Jiangsu Nanjing [query] yoga mat [query_sid] {SID_1} "
        "[keywords] none [recent_queries] none [recent_items] none"
    )
    assert keyword_segment(()) == "[keywords] none" and keyword_segment(["  ", ""]) == "[keywords] none"


def test_profile_from_users_record():
    assert UserProfile.from_user(_user()).render() == "gender F, age 24-30, location Jiangsu Nanjing"
    # equal province and city (a municipality) are said once; missing values are "unknown"
    tianjin = UserProfile.from_user(_user(fre_province="天津", fre_city="天津", gender="", age_bucket="UNKNOWN"))
    assert tianjin.render() == "gender unknown, age unknown, location 天津"
    assert UserProfile.from_user(None).render() == "gender unknown, age unknown, location unknown"
    assert UserProfile.from_user(_user(fre_province=" ", fre_city="")).location == "unknown"


def test_clean_text_neutralises_markers_sid_tokens_and_whitespace():
    assert clean_text("  red\tyoga \n mat ") == "red yoga mat"
    assert clean_text("mat [query] <a_12> [other]") == "mat (query) (a_12) [other]"
    assert clean_text("【香榭丽舍】貂皮大衣") == "【香榭丽舍】貂皮大衣"
    prompts = render_prompts(_record(query="shoes [keywords] <a_1>", keywords=("[user] x",)))
    segments = split_segments(prompts.teacher_inputs)
    assert [m for m, _ in segments] == list(TEACHER_ORDER)
    assert dict(segments)["[query]"] == "shoes (keywords) (a_1)"
    assert dict(segments)[MARKER_KEYWORDS] == "(user) x"


def test_split_join_and_remove_segment():
    text = render_prompts(_record(recent_queries=("a b", "c"), keywords=("k",))).teacher_inputs
    segments = split_segments(text)
    assert join_segments(segments) == text
    assert segments[3] == (MARKER_KEYWORDS, "k")
    assert remove_segment(text, MARKER_KEYWORDS) == render_prompts(_record(recent_queries=("a b", "c"))).inputs
    with pytest.raises(ValueError, match="starts with a marker"):
        split_segments("yoga mat [query] x")


def test_invariant_over_combinations():
    """Removing exactly the keyword segment from the teacher input gives the student input."""
    options = {
        "recent_queries": [(), ("q",), ("dress", "跑步鞋 女", "a | b")],
        "recent_item_sids": [(), (SID_2,), (SID_2, SID_3)],
        "keywords": [(), ("k",), ("non-slip", "粉色", " ")],
        "query": ["yoga mat", "连衣裙 夏", "x [query] y"],
    }
    for values in itertools.product(*options.values()):
        record = _record(**dict(zip(options, values, strict=True)))
        prompts = render_prompts(record)
        teacher = split_segments(prompts.teacher_inputs)
        assert [m for m, _ in split_segments(prompts.inputs)] == list(STUDENT_ORDER)
        assert [m for m, _ in teacher] == list(TEACHER_ORDER)
        assert remove_segment(prompts.teacher_inputs, MARKER_KEYWORDS) == prompts.inputs
        assert teacher[3] == tuple(keyword_segment(record.keywords).split(" ", 1))


def test_task_inputs():
    assert render_task_input("title_to_sid", [("[title]", " Kara  red yoga mat")]) == (
        "[task] title_to_sid [title] Kara red yoga mat"
    )
    assert render_task_input("sid_to_title", [("[item_sid]", SID_2)]) == f"[task] sid_to_title [item_sid] {SID_2}"
    with pytest.raises(ValueError, match="not a SID token string"):
        render_task_input("sid_to_title", [("[item_sid]", "a_1 b_2")])
    with pytest.raises(ValueError, match="task name"):
        render_task_input("Title To SID", [("[title]", "x")])
    with pytest.raises(ValueError, match="unknown prompt marker"):
        render_task_input("x", [("[nope]", "x")])


def test_bad_records_are_refused():
    with pytest.raises(ValueError, match="query_sid"):
        _record(query_sid="<a_1> <b_2>")
    with pytest.raises(ValueError, match="recent_item_sids"):
        _record(recent_item_sids=("yoga mat",))
    with pytest.raises(ValueError, match="empty"):
        _record(query="   ")


def test_markers_are_distinct_bracketed_words():
    assert len(set(PROMPT_MARKERS)) == len(PROMPT_MARKERS)
    for marker in PROMPT_MARKERS:
        assert marker.startswith("[") and marker.endswith("]") and " " not in marker
    assert set(TEACHER_ORDER) - set(STUDENT_ORDER) == {MARKER_KEYWORDS}
