"""Reader and writer on the real public KuaiSearch demo files."""

from __future__ import annotations

import collections
import tracemalloc

import pytest

from onesearch_jax.data.kuaisearch import KuaiSearchDataset, KuaiSearchWriter, SkipLog, iter_numbered
from onesearch_jax.data.schema import RECORD_TYPES, SearchSession


def test_reads_the_demo_items_with_their_values(kuaisearch_demo):
    items = list(KuaiSearchDataset(kuaisearch_demo).read("items"))
    assert len(items) == 200
    first = items[0]
    assert first.item_id == 3359347
    assert first.item_title == "【香榭丽舍】高级静奢风法式长款遮肉显瘦进口貂皮大衣"
    assert (first.brand_name, first.seller_name) == ("金粟兰", "施施高端皮草工厂店")
    assert (first.category_level1_name, first.category_level2_name, first.category_level3_name) == (
        "女装", "皮草", "UNKNOWN",
    )  # fmt: skip
    assert sum(i.category_level3_name == "UNKNOWN" for i in items) == 31
    assert len({i.item_id for i in items}) == 200


def test_reads_the_demo_sessions_users_rank_and_relevance(kuaisearch_demo):
    ds = KuaiSearchDataset(kuaisearch_demo)
    sessions = list(ds.read("recall"))
    assert len(sessions) == 200
    assert sessions[0].query == "广场舞服装女高档洋气"
    assert (len(sessions[0].impressed_item_ids), len(sessions[0].clicked_item_ids)) == (188, 16)
    assert sum(len(s.impressed_item_ids) for s in sessions) == 25430
    assert sum(len(s.clicked_item_ids) for s in sessions) == 583
    assert sum(bool(s.purchased_item_ids) for s in sessions) == 19
    assert (min(s.time_index for s in sessions), max(s.time_index for s in sessions)) == (1874, 470184)
    # One demo order was placed without a logged click: allowed by the schema.
    assert sum(not set(s.purchased_item_ids) <= set(s.clicked_item_ids) for s in sessions) == 1

    users = list(ds.read("users"))
    assert collections.Counter(u.gender for u in users) == {"F": 126, "M": 74}
    assert users[0].fre_city == "鞍山"

    rank = list(ds.read("rank"))
    assert sum(r.is_clicked for r in rank) == 24
    assert collections.Counter(r.search_entrance for r in rank) == {"mall": 188, "homepage": 12}
    assert rank[-1].target_item_statistical_features.item_click_cnt_30d_hist == 517.0
    assert rank[-1].user_statistical_features.user_show_cnt_30d_hist == 436.0

    relevance = list(ds.read("relevance"))
    assert collections.Counter(r.score for r in relevance) == {0: 17, 1: 40, 2: 76, 3: 67}
    assert relevance[0].query == "芈姐家半身裙"


@pytest.mark.parametrize("name", list(RECORD_TYPES))
def test_write_back_is_byte_identical(kuaisearch_demo, tmp_path, name):
    ds = KuaiSearchDataset(kuaisearch_demo)
    with KuaiSearchWriter(tmp_path) as writer:
        writer.write_all(ds.read(name))
    assert (tmp_path / RECORD_TYPES[name].FILE).read_bytes() == ds.path(name).read_bytes()


def test_writer_leaves_no_file_behind_when_interrupted(tmp_path, kuaisearch_demo):
    first = next(KuaiSearchDataset(kuaisearch_demo).read("items"))
    with pytest.raises(RuntimeError), KuaiSearchWriter(tmp_path) as writer:
        writer.write(first)
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_foreign_objects(tmp_path):
    with pytest.raises(TypeError, match="not a KuaiSearch record: dict"), KuaiSearchWriter(tmp_path) as writer:
        writer.write({"item_id": 1})


def test_skip_mode_counts_every_skipped_line(tmp_path, kuaisearch_demo):
    lines = KuaiSearchDataset(kuaisearch_demo).path("recall").read_bytes().splitlines(keepends=True)[:5]
    lines[1] = b'{"broken\n'
    lines[3] = lines[3].replace(b'"split": "train"', b'"split": "later"')
    (tmp_path / "recall.jsonl").write_bytes(b"".join(lines) + b"\n   \n")
    skipped = SkipLog()
    kept = list(iter_numbered(tmp_path / "recall.jsonl", SearchSession, skip_invalid=True, skipped=skipped))
    assert [line for line, _ in kept] == [1, 3, 5]
    assert (skipped.count, skipped.by_kind) == (2, {"json": 1, "value": 1})
    assert [e.line for e in skipped.errors] == [2, 4]
    with pytest.raises(ValueError, match="needs a SkipLog"):
        next(iter_numbered(tmp_path / "recall.jsonl", SearchSession, skip_invalid=True))


def _peak_bytes_reading(path) -> tuple[int, int]:
    tracemalloc.start()
    count = sum(1 for _ in iter_numbered(path, SearchSession))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return count, peak


def test_reading_streams_in_constant_memory(tmp_path, kuaisearch_demo):
    """Peak memory reading a 40x file is that of a 2x file: nothing grows with the file."""
    raw = KuaiSearchDataset(kuaisearch_demo).path("recall").read_bytes()
    (tmp_path / "small.jsonl").write_bytes(raw * 2)
    (tmp_path / "large.jsonl").write_bytes(raw * 40)  # 8,000 sessions, 8.3 MB
    _peak_bytes_reading(tmp_path / "small.jsonl")  # warm caches (type hints, json) first
    small_count, small_peak = _peak_bytes_reading(tmp_path / "small.jsonl")
    large_count, large_peak = _peak_bytes_reading(tmp_path / "large.jsonl")
    assert (small_count, large_count) == (400, 8000)
    assert large_peak < 1.5 * small_peak
    assert large_peak < len(raw) * 40 / 20  # under 5% of the file
