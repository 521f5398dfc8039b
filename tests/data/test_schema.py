"""Field-level parsing rules of the KuaiSearch records."""

from __future__ import annotations

import json

import pytest

from onesearch_jax.data.kuaisearch import dumps, parse_line
from onesearch_jax.data.schema import RankRow, RecordError, SearchSession, from_json, to_json_dict

SESSION = {
    "user_id": 7,
    "session_id": 3,
    "impressed_item_ids": [10, 11, 12],
    "clicked_item_ids": [11],
    "purchased_item_ids": [],
    "time_index": 99,
    "query": "yoga mat",
    "split": "train",
}
RANK = {
    "user_id": 1, "session_id": 1, "user_fan_number": 9, "user_follow_number": 65, "time_index": 384565,
    "search_entrance": "mall", "recently_clicked_item_ids": [1, 2], "recently_purchased_item_ids": [],
    "query": "q", "target_item_id": 58, "target_item_price": 5990, "is_clicked": 1, "is_purchased": 0,
    "user_statistical_features": {"user_show_cnt_30d_hist": 0.0, "user_click_cnt_30d_hist": 0.0,
                                  "user_order_cnt_30d_hist": 0.0, "user_gmv_30d_hist": 0.0},
    "target_item_statistical_features": {"item_show_cnt_30d_hist": 952.0, "item_click_cnt_30d_hist": 47.0,
                                         "item_order_cnt_30d_hist": 0.0},
    "split": "train",
}  # fmt: skip


def _error(cls, obj) -> RecordError:
    with pytest.raises(RecordError) as info:
        from_json(cls, obj, path="recall.jsonl", line=5)
    return info.value


def test_valid_session_round_trips_in_schema_order():
    record = from_json(SearchSession, SESSION)
    assert record.impressed_item_ids == (10, 11, 12)
    assert list(to_json_dict(record)) == list(SESSION)
    assert json.loads(dumps(record)) == SESSION


def test_int_price_is_read_as_float():
    assert from_json(RankRow, RANK).target_item_price == 5990.0


@pytest.mark.parametrize(
    ("change", "field", "kind", "fragment"),
    [
        ({"user_id": None}, "user_id", "type", "expected integer, got null"),
        ({"user_id": True}, "user_id", "type", "expected integer, got boolean"),
        ({"user_id": 1.5}, "user_id", "type", "expected integer, got number"),
        ({"user_id": -1}, "user_id", "value", "-1 is below 0"),
        ({"impressed_item_ids": "10,11"}, "impressed_item_ids", "type", "expected a list of integers, got string"),
        ({"impressed_item_ids": [10, "11"]}, "impressed_item_ids", "type", "element 1: expected integer"),
        ({"query": "   "}, "query", "empty_query", "empty or blank"),
        ({"split": "dev"}, "split", "value", "'dev' is not one of ['train', 'valid', 'test']"),
        ({"clicked_item_ids": [99]}, "clicked_item_ids", "inconsistent", "items [99] were never impressed"),
        ({"purchased_item_ids": [13]}, "purchased_item_ids", "inconsistent", "items [13] were never impressed"),
        ({"extra": 1}, "extra", "unknown_field", "unknown field for SearchSession"),
    ],
)
def test_session_errors_name_file_line_and_field(change, field, kind, fragment):
    error = _error(SearchSession, {**SESSION, **change})
    assert (error.path, error.line, error.field, error.kind) == ("recall.jsonl", 5, field, kind)
    assert str(error).startswith(f"recall.jsonl:5: field '{field}': ")
    assert fragment in str(error)


def test_missing_field_is_named():
    error = _error(SearchSession, {k: v for k, v in SESSION.items() if k != "time_index"})
    assert (error.field, error.kind) == ("time_index", "missing_field")


def test_nested_field_gets_a_dotted_name():
    bad = {**RANK, "user_statistical_features": {**RANK["user_statistical_features"], "user_gmv_30d_hist": "x"}}
    error = _error(RankRow, bad)
    assert error.field == "user_statistical_features.user_gmv_30d_hist"


def test_non_finite_number_is_rejected():
    # Python's json accepts NaN; the schema does not.
    with pytest.raises(RecordError, match="field 'target_item_price': nan is not finite"):
        parse_line(RankRow, json.dumps({**RANK, "target_item_price": float("nan")}).encode(), path="rank.jsonl", line=2)


def test_line_level_errors_have_no_field():
    with pytest.raises(RecordError, match=r"^recall.jsonl:3: invalid UTF-8 at byte 2$"):
        parse_line(SearchSession, b'{"\xff', path="recall.jsonl", line=3)
    with pytest.raises(RecordError, match=r"^recall.jsonl:4: invalid JSON: Expecting value at column 1$"):
        parse_line(SearchSession, b"not json", path="recall.jsonl", line=4)
    with pytest.raises(RecordError, match=r"^recall.jsonl:4: expected a JSON object, got list$"):
        parse_line(SearchSession, b"[1, 2]", path="recall.jsonl", line=4)
