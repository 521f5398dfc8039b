"""The relevance-table importer, on the real CrowdFlower file and on broken tables."""

from __future__ import annotations

import pytest

from onesearch_jax.data.kuaisearch import KuaiSearchDataset
from onesearch_jax.data.relevance_import import RelevanceTableConfig, import_relevance_table
from onesearch_jax.data.schema import RecordError
from onesearch_jax.data.validate import validate_dataset


@pytest.fixture(scope="module")
def crowdflower(crowdflower_zip, tmp_path_factory):
    out = tmp_path_factory.mktemp("crowdflower")
    return import_relevance_table(crowdflower_zip, out), out


def test_crowdflower_counts_and_tiers(crowdflower):
    summary, out = crowdflower
    assert (summary.rows, summary.sessions, summary.items) == (10158, 261, 9708)
    assert summary.scale == (1.0, 4.0)  # median_relevance 1-4, read off the file
    assert summary.tiers == {0: 774, 1: 1476, 2: 1737, 3: 6171}
    assert summary.skipped.count == 0
    report = validate_dataset(out)
    assert report.problem_count == 0
    assert report.stats["relevance_pairs"] == 10158
    assert report.stats["clicks"] == 7647  # distinct (query, product) pairs with tier >= 2


def test_crowdflower_first_rows(crowdflower):
    _, out = crowdflower
    ds = KuaiSearchDataset(out)
    first = next(ds.read("relevance"))
    assert (first.query, first.item_title, first.score) == (
        "bridal shower decorations", "Accent Pillow with Heart Design - Red/Black", 0,
    )  # fmt: skip
    session = next(ds.read("recall"))
    assert session.query == "bridal shower decorations"
    assert session.impressed_item_ids[0] == 1 and 1 not in session.clicked_item_ids
    assert next(ds.read("items")).item_title == "Accent Pillow with Heart Design - Red/Black"


def _table(tmp_path, rows, header="query,product_title,median_relevance,pid"):
    path = tmp_path / "table.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_ids_scale_threshold_and_splits(tmp_path):
    path = _table(tmp_path, ["mat,Red Mat,10,a", "mat,Red Mat v2,10,a", "mat,Blue Mat,0,b", "lamp,Lamp,5,c"])
    cfg = RelevanceTableConfig(id_column="pid", scale_min=0, scale_max=10, click_tier=3, test_fraction=1.0)
    summary = import_relevance_table(path, tmp_path / "out", cfg)
    assert (summary.items, summary.sessions, summary.tiers) == (3, 2, {0: 1, 1: 0, 2: 1, 3: 2})
    sessions = list(KuaiSearchDataset(tmp_path / "out").read("recall"))
    assert [(s.query, s.impressed_item_ids, s.clicked_item_ids, s.split) for s in sessions] == [
        ("mat", (1, 2), (1,), "test"), ("lamp", (3,), (), "test"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("scores", "tiers"),
    [
        (["9007199254740992"], {0: 1, 1: 0, 2: 0, 3: 0}),  # one grade where lo + 1 == lo (found by fuzzing)
        (["-1e308", "1e308", "0"], {0: 1, 1: 0, 2: 1, 3: 1}),  # a scale whose width overflows to inf
    ],
)
def test_extreme_scales_map_to_tiers(tmp_path, scores, tiers):
    path = _table(tmp_path, [f"q{i},T{i},{v},p{i}" for i, v in enumerate(scores)])
    assert import_relevance_table(path, tmp_path / "out").tiers == tiers


@pytest.mark.parametrize(
    ("row", "field", "fragment"),
    [
        ("mat,Red Mat,high,a", "median_relevance", "not a number: 'high'"),
        (" ,Red Mat,2,a", "query", "empty or blank"),
        ("mat,,2,a", "product_title", "empty or blank"),
        ("mat,Red Mat,nan,a", "median_relevance", "not finite"),
    ],
)
def test_bad_rows_name_file_line_and_column(tmp_path, row, field, fragment):
    path = _table(tmp_path, ["mat,Blue Mat,1,b", row, "mat,Green Mat,3,c"])
    with pytest.raises(RecordError) as info:
        import_relevance_table(path, tmp_path / "out", RelevanceTableConfig(scale_min=1, scale_max=4))
    assert (info.value.line, info.value.field) == (3, field)
    assert str(info.value).startswith(f"{path}:3: field '{field}': ")
    assert fragment in str(info.value)
    assert not (tmp_path / "out" / "items.jsonl").exists()  # nothing half-written


def test_skip_invalid_counts_bad_rows_once(tmp_path):
    path = _table(tmp_path, ["mat,Blue Mat,1,b", "mat,Red Mat,high,a", "mat,Green Mat,3,c,extra"])
    summary = import_relevance_table(path, tmp_path / "out", skip_invalid=True)
    assert summary.rows == 1
    assert (summary.skipped.count, summary.skipped.by_kind) == (2, {"type": 1, "columns": 1})
    assert [e.line for e in summary.skipped.errors] == [3, 4]


def test_table_level_errors(tmp_path):
    with pytest.raises(RecordError, match="field 'median_relevance': no such column"):
        import_relevance_table(_table(tmp_path, ["a,b,1,c"], header="query,product_title,score,pid"), tmp_path / "o")
    with pytest.raises(RecordError, match=r"table.csv:2: field 'median_relevance': 9.0 outside the scale \[1, 4\]"):
        import_relevance_table(
            _table(tmp_path, ["a,b,9,c"]), tmp_path / "o", RelevanceTableConfig(scale_min=1, scale_max=4)
        )
    with pytest.raises(ValueError, match="give both scale_min and scale_max"):
        RelevanceTableConfig(scale_min=1)
    with pytest.raises(ValueError, match="click_tier must be a tier in 0-3"):
        RelevanceTableConfig(click_tier=4)


def test_invalid_utf8_row_is_reported_with_its_line(tmp_path):
    path = tmp_path / "table.csv"
    path.write_bytes(b"query,product_title,median_relevance\nmat,Mat,1\nmat,M\xffat,2\n")
    with pytest.raises(RecordError, match="invalid UTF-8"):
        import_relevance_table(path, tmp_path / "out")
