"""Every validation error path, each asserting the file, line and field it reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onesearch_jax.data.validate import validate_dataset

ITEM = {"item_id": 1, "item_title": "red yoga mat", "brand_id": 1, "brand_name": "Kara", "seller_id": 1,
        "seller_name": "Kara Official Store", "category_level1_id": 1, "category_level1_name": "Sports",
        "category_level2_id": 1, "category_level2_name": "Fitness", "category_level3_id": 1,
        "category_level3_name": "yoga mat"}  # fmt: skip
USER = {"user_id": 1, "gender": "F", "age_bucket": "24-30", "fre_country": "China", "fre_province": "Zhejiang",
        "fre_city": "Hangzhou"}  # fmt: skip
SESSION = {"user_id": 1, "session_id": 1, "impressed_item_ids": [1, 2], "clicked_item_ids": [2],
           "purchased_item_ids": [], "time_index": 5, "query": "yoga mat", "split": "train"}  # fmt: skip
RANK = {"user_id": 1, "session_id": 1, "user_fan_number": 0, "user_follow_number": 0, "time_index": 5,
        "search_entrance": "mall", "recently_clicked_item_ids": [1], "recently_purchased_item_ids": [],
        "query": "yoga mat", "target_item_id": 2, "target_item_price": 25.9, "is_clicked": 1, "is_purchased": 0,
        "user_statistical_features": {"user_show_cnt_30d_hist": 0.0, "user_click_cnt_30d_hist": 0.0,
                                      "user_order_cnt_30d_hist": 0.0, "user_gmv_30d_hist": 0.0},
        "target_item_statistical_features": {"item_show_cnt_30d_hist": 1.0, "item_click_cnt_30d_hist": 0.0,
                                             "item_order_cnt_30d_hist": 0.0},
        "split": "train"}  # fmt: skip
RELEVANCE = {"query": "yoga mat", "item_title": "red yoga mat", "brand": "Kara", "seller_name": "Kara Official Store",
             "attr_value": "red", "score": 3}  # fmt: skip


def _lines(*records: dict) -> list[bytes]:
    return [json.dumps(r).encode() for r in records]


@pytest.fixture
def dataset(tmp_path) -> dict[str, list[bytes]]:
    """A valid dataset as raw lines, written by `write`. Nothing refers to item 3 or user 3, so
    breaking their lines (index 2) causes exactly one problem."""
    return {
        "items": _lines(ITEM, {**ITEM, "item_id": 2, "item_title": "blue yoga mat"}, {**ITEM, "item_id": 3}),
        "users": _lines(USER, {**USER, "user_id": 2}, {**USER, "user_id": 3}),
        "recall": _lines(SESSION, {**SESSION, "session_id": 2, "user_id": 2, "clicked_item_ids": []}),
        "rank": _lines(RANK, {**RANK, "target_item_id": 1, "is_clicked": 0}),
        "relevance": _lines(RELEVANCE),
    }


def write(root: Path, files: dict[str, list[bytes]]) -> Path:
    root.mkdir(exist_ok=True)
    for name, lines in files.items():
        (root / f"{name}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return root


def only_problem(report):
    errors = [e for f in report.files.values() for e in f.problems.errors]
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def test_the_fixture_is_valid(tmp_path, dataset):
    report = validate_dataset(write(tmp_path, dataset))
    assert report.ok and report.problem_count == 0
    assert "result: VALID" in report.format()
    assert report.stats["sessions"] == 2 and report.stats["clicks"] == 1


CASES = [
    # (file, line index, replacement bytes, kind, field, message fragment)
    ("items", 2, b'{"item_id": 3, "item_title": "caf\xe9"}', "utf8", None, "invalid UTF-8 at byte 33"),
    ("users", 2, b'{"user_id": 3,', "json", None, "invalid JSON"),
    ("items", 2, json.dumps({**ITEM, "item_id": 3, "brand_name": 5}).encode(), "type", "brand_name", "expected string"),
    ("users", 2, json.dumps({k: v for k, v in USER.items() if k != "gender"} | {"user_id": 3}).encode(),
     "missing_field", "gender", "missing"),
    ("users", 2, json.dumps({**USER, "user_id": 3, "vip": True}).encode(), "unknown_field", "vip", "unknown field"),
    ("recall", 1, json.dumps({**SESSION, "session_id": 2, "query": ""}).encode(), "empty_query", "query", "empty"),
    ("recall", 1, json.dumps({**SESSION, "session_id": 2, "clicked_item_ids": [3]}).encode(),
     "inconsistent", "clicked_item_ids", "items [3] were never impressed"),
    ("relevance", 0, json.dumps({**RELEVANCE, "score": 4}).encode(), "value", "score", "4 is not one of [0, 1, 2, 3]"),
    ("rank", 1, json.dumps({**RANK, "is_clicked": 2}).encode(), "value", "is_clicked", "2 is not one of [0, 1]"),
    ("items", 2, json.dumps({**ITEM, "item_id": 1}).encode(), "duplicate_id", "item_id",
     "duplicate id 1 (first at line 1)"),
    ("users", 2, json.dumps({**USER, "user_id": 2}).encode(), "duplicate_id", "user_id",
     "duplicate id 2 (first at line 2)"),
    ("recall", 1, json.dumps({**SESSION, "session_id": 1, "user_id": 2, "clicked_item_ids": []}).encode(),
     "duplicate_id", "session_id", "duplicate id 1 (first at line 1)"),
    ("recall", 1, json.dumps({**SESSION, "session_id": 2, "user_id": 9}).encode(), "dangling_id", "user_id",
     "id 9 not in users.jsonl"),
    ("recall", 1, json.dumps({**SESSION, "session_id": 2, "impressed_item_ids": [1, 2, 7, 8]}).encode(),
     "dangling_id", "impressed_item_ids", "2 of 4 ids (first 7) not in items.jsonl"),
    ("rank", 1, json.dumps({**RANK, "session_id": 5}).encode(), "dangling_id", "session_id",
     "id 5 not in recall.jsonl"),
    ("rank", 1, json.dumps({**RANK, "target_item_id": 9}).encode(), "dangling_id", "target_item_id",
     "id 9 not in items.jsonl"),
    ("rank", 0, json.dumps({**RANK, "recently_purchased_item_ids": [4]}).encode(), "dangling_id",
     "recently_purchased_item_ids", "id 4 not in items.jsonl"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "index", "raw", "kind", "field", "fragment"), CASES)
def test_each_problem_names_file_line_and_field(tmp_path, dataset, name, index, raw, kind, field, fragment):
    dataset[name][index] = raw
    report = validate_dataset(write(tmp_path, dataset))
    error = only_problem(report)
    assert (Path(error.path).name, error.line, error.field, error.kind) == (f"{name}.jsonl", index + 1, field, kind)
    prefix = f"{tmp_path / name}.jsonl:{index + 1}: " + (f"field '{field}': " if field else "")
    assert str(error).startswith(prefix)
    assert fragment in str(error)
    assert not report.ok
    assert report.files[name].valid == len(dataset[name]) - 1
    assert "result: INVALID (1 problems" in report.format()


def test_skip_invalid_counts_and_checks_what_remains(tmp_path, dataset):
    dataset["items"][1] = b"{oops"
    report = validate_dataset(write(tmp_path, dataset), skip_invalid=True)
    # Item 2 is skipped, so both sessions (which show it) and the rank row that targets it
    # point nowhere; the other rank row's session is gone with them. All counted, all skipped.
    assert report.ok
    assert report.by_kind() == {"dangling_id": 4, "json": 1}
    assert (report.files["recall"].valid, report.files["rank"].valid) == (0, 0)
    assert "VALID after skipping 5 invalid records" in report.format()
    assert report.to_dict()["files"]["items"] == {"lines": 3, "valid": 2, "invalid": 1}


def test_missing_required_file_and_directory(tmp_path, dataset):
    del dataset["users"]
    with pytest.raises(FileNotFoundError, match=r"missing KuaiSearch files: .*users\.jsonl"):
        validate_dataset(write(tmp_path, dataset))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        validate_dataset(tmp_path / "nowhere")


def test_optional_files_may_be_absent(tmp_path, dataset):
    del dataset["rank"], dataset["relevance"]
    report = validate_dataset(write(tmp_path, dataset))
    assert report.ok and set(report.files) == {"items", "users", "recall"}


def test_public_demo_files_do_not_join_but_are_each_valid(kuaisearch_demo):
    joined = validate_dataset(kuaisearch_demo)
    assert joined.by_kind() == {"dangling_id": 400}
    first = joined.files["recall"].problems.errors[0]
    assert (first.line, first.field, first.reason) == (1, "user_id", "id 1 not in users.jsonl")
    alone = validate_dataset(kuaisearch_demo, check_references=False)
    assert alone.problem_count == 0
    assert alone.stats["impressions"] == 25430 and alone.stats["clicks"] == 583
    assert alone.stats["relevance_scores"] == {"0": 17, "1": 40, "2": 76, "3": 67}
