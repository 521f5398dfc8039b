import json
import math

import numpy as np
import pytest

from onesearch_jax.evaluate import report
from onesearch_jax.evaluate.test_set import EvalQuery


def _query(session_id, clicked, ordered, frequency="head", kind="plain"):
    segments = {"query_frequency": frequency, "user_activity": "high", "item_popularity": "hot", "query_type": kind}
    return EvalQuery(session_id=session_id, user_id=1, query=f"q{session_id}", text="t", keywords=(),
                     target_sid="<a_0>", clicked=clicked, ordered=ordered, segments=segments, where="f:1")  # fmt: skip


QUERIES = [
    _query(1, clicked=(5,), ordered=(5,)),
    _query(2, clicked=(7, 8), ordered=(), frequency="tail", kind="ambiguous"),
    _query(3, clicked=(9,), ordered=(3,), frequency="tail"),
]
MODEL = [[5, 1, 2], [1, 8, 7], [4, 6, 2]]
BM25 = [[2, 5], [], [3, 9]]


def _summary():
    systems = {"model": report.score_system(QUERIES, MODEL, (1, 3)), "bm25": report.score_system(QUERIES, BM25, (1, 3))}
    return report.summarise(QUERIES, systems)


def test_overall_means_are_the_hand_computed_ones():
    overall = _summary()["overall"]
    click, order = overall["model"]["click"], overall["model"]["order"]
    assert click["hr@1"] == pytest.approx(1 / 3) and click["hr@3"] == pytest.approx(2 / 3)
    assert click["mrr@3"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert click["recall@3"] == pytest.approx((1 + 1 + 0) / 3)
    idcg2 = 1 + 1 / math.log2(3)
    assert click["ndcg@3"] == pytest.approx((1 + (1 / math.log2(3) + 1 / math.log2(4)) / idcg2 + 0) / 3)
    assert click["queries"] == 3
    assert order["queries"] == 2 and order["hr@3"] == pytest.approx(1 / 2)  # query 2 has no order: not a miss
    bm25_order = overall["bm25"]["order"]
    assert bm25_order["hr@1"] == pytest.approx(1 / 2) and bm25_order["mrr@3"] == pytest.approx((1 / 2 + 1) / 2)


def test_segments_average_their_own_sessions_and_omit_empty_labels():
    segments = _summary()["segments"]
    assert list(segments["query_frequency"]) == ["head", "tail"]  # no torso session
    tail = segments["query_frequency"]["tail"]
    assert tail["sessions"] == 2
    assert tail["model"]["click"]["hr@3"] == pytest.approx(1 / 2)
    assert tail["bm25"]["order"]["hr@1"] == 1.0 and tail["bm25"]["order"]["queries"] == 1
    assert list(segments["query_type"]) == ["plain", "ambiguous"]
    assert segments["query_type"]["ambiguous"]["model"]["order"]["queries"] == 0
    assert math.isnan(segments["query_type"]["ambiguous"]["model"]["order"]["hr@1"])


def test_markdown_and_json_of_a_summary(tmp_path):
    summary = {"step": 7, "split": "test", "sessions": 3, "overall_counts": {"click": 3, "order": 2},
               "valid_sid_rate": {"top1": 0.5, "all": 0.25}, **_summary()}  # fmt: skip
    text = report.markdown(summary, (1, 3))
    assert "| system | truth | HR@1 | HR@3 | MRR@3 | NDCG@3 | Recall@3 | sessions |" in text
    assert "| model | click | 0.3333 | 0.6667 | 0.5000 |" in text
    assert "| bm25 | order | 0.5000 | 1.0000 | 0.7500 |" in text
    assert "top-1 50.00%, all top-3 25.00%" in text
    assert "| query_type=ambiguous | 1 | 1.0000 (1) | 0.0000 (1) | n/a (0) | n/a (0) |" in text
    report.write_json(tmp_path / "m.json", summary)
    loaded = json.loads((tmp_path / "m.json").read_text())
    assert loaded["segments"]["query_type"]["ambiguous"]["model"]["order"]["hr@1"] is None  # NaN -> null
    assert not (tmp_path / "m.json.partial").exists()


def test_hit_rank_and_bad_truth():
    assert report.hit_rank([4, 9, 3], (3, 9)) == 2 and report.hit_rank([4], (3,)) is None
    with pytest.raises(ValueError, match="truth must be one of"):
        report.relevant_items(QUERIES, "purchase")


def test_plots_are_png_files(tmp_path):
    summary = {"overall": _summary()["overall"], "segments": _summary()["segments"]}
    report.plot_hr_curves(tmp_path / "hr.png", QUERIES, {"model": MODEL, "bm25": BM25}, 3, "t")
    report.plot_segments(tmp_path / "seg.png", summary, 3, "t")
    for name in ("hr.png", "seg.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert np.isfinite(summary["overall"]["model"]["click"]["hr@3"])
