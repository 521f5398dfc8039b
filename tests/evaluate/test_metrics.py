import math

import numpy as np
import pytest

from onesearch_jax.evaluate.metrics import aggregate, expand_sids_to_items, per_query_metrics
from onesearch_jax.sid.trie import SidTrie

L3 = math.log2(3)  # discount of rank 2 is 1 / log2(3)
L5 = math.log2(5)  # discount of rank 4 is 1 / log2(5)


def test_hand_computed_single_hit():
    # ranked [5, 3, 9], relevant {3, 7}: the only hit is item 3 at rank 2; |R| = 2.
    out = per_query_metrics([[5, 3, 9]], [{3, 7}], ks=[1, 2, 3])
    # K=1: top [5] has no hit -> hr 0, mrr 0, DCG 0 (IDCG 1) -> ndcg 0, recall 0/2.
    assert [out[f"{m}@1"][0] for m in ("hr", "mrr", "ndcg", "recall")] == [0.0, 0.0, 0.0, 0.0]
    # K=2: hit at rank 2 -> hr 1, mrr 1/2; DCG 1/log2 3, IDCG 1 + 1/log2 3 (two relevant); recall 1/2.
    assert out["hr@2"][0] == 1.0
    assert out["mrr@2"][0] == 0.5
    assert out["ndcg@2"][0] == pytest.approx((1 / L3) / (1 + 1 / L3))
    assert out["recall@2"][0] == 0.5
    # K=3: item 7 is never returned -> recall stays 1/2.
    assert out["recall@3"][0] == 0.5
    assert all(v.dtype == np.float64 and v.shape == (1,) for v in out.values())


def test_hand_computed_two_hits_and_k_beyond_the_list():
    # ranked [1, 2, 3, 4], relevant {2, 4, 8}: hits at ranks 2 and 4; |R| = 3.
    out = per_query_metrics([[1, 2, 3, 4]], [[2, 4, 8]], ks=[4, 10])
    # K=4: DCG = 1/log2 3 + 1/log2 5; IDCG = 1 + 1/log2 3 + 1/log2 4 (min(3, 4) = 3 ideal hits).
    ideal = 1 + 1 / L3 + 1 / 2
    assert out["ndcg@4"][0] == pytest.approx((1 / L3 + 1 / L5) / ideal)
    assert out["recall@4"][0] == pytest.approx(2 / 3)
    assert out["mrr@4"][0] == 0.5
    # K=10 exceeds the list of 4: same hits, same IDCG (min(3, 10) = 3) -> same values.
    for m in ("hr", "mrr", "ndcg", "recall"):
        assert out[f"{m}@10"][0] == pytest.approx(out[f"{m}@4"][0])


def test_perfect_ranking_and_idcg_capped_at_k():
    # ranked [7, 8, 1], relevant {7, 8}: hits at ranks 1 and 2 -> DCG == IDCG -> ndcg 1, mrr 1.
    # K=1: DCG 1, IDCG = sum over r <= min(2, 1) = 1 -> ndcg 1, but recall 1/2.
    out = per_query_metrics([[7, 8, 1]], [{7, 8}], ks=[1, 3])
    assert out["ndcg@3"][0] == pytest.approx(1.0)
    assert out["ndcg@1"][0] == pytest.approx(1.0)
    assert out["recall@1"][0] == 0.5
    assert out["mrr@3"][0] == 1.0


def test_empty_relevant_is_nan_but_empty_ranking_is_a_miss():
    out = per_query_metrics([[1, 2], [], [4]], [set(), {1}, {4}], ks=[2])
    assert all(np.isnan(v[0]) for v in out.values())  # not evaluable
    assert [out[f"{m}@2"][1] for m in ("hr", "mrr", "ndcg", "recall")] == [0.0, 0.0, 0.0, 0.0]
    assert out["hr@2"][2] == 1.0


def test_keys_are_metric_major_in_ks_order():
    out = per_query_metrics([[1]], [{1}], ks=[10, 1])
    assert list(out) == ["hr@10", "hr@1", "mrr@10", "mrr@1", "ndcg@10", "ndcg@1", "recall@10", "recall@1"]


def test_duplicate_item_rejected_naming_query_and_item():
    with pytest.raises(ValueError, match=r"ranked\[1\]: item 3 appears twice"):
        per_query_metrics([[1, 2], [3, 4, 3]], [{1}, {3}], ks=[2])


def test_duplicates_rejected_even_without_relevant_items():
    with pytest.raises(ValueError, match=r"ranked\[0\]"):
        per_query_metrics([[5, 5]], [set()], ks=[1])


@pytest.mark.parametrize("ks", [[], [0], [-1], [1.0], [True], [2, 2], ["10"]])
def test_bad_ks_rejected(ks):
    with pytest.raises(ValueError, match="ks"):
        per_query_metrics([[1]], [{1}], ks=ks)


def test_numpy_int_ks_accepted():
    assert "hr@5" in per_query_metrics([[1]], [{1}], ks=[np.int64(5)])


def test_length_mismatch_rejected():
    with pytest.raises(ValueError, match="ranked has 2 queries but relevant has 1"):
        per_query_metrics([[1], [2]], [{1}], ks=[1])


def test_aggregate_skips_nan_and_counts_evaluable_queries():
    # hr@2 per query: [1, nan, 0, 1]; the empty-relevant query 1 is left out: mean (1 + 0 + 1) / 3.
    out = per_query_metrics([[1, 2], [3], [4], [6, 5]], [{2}, set(), {9}, {5}], ks=[2])
    agg = aggregate(out)
    assert agg["hr@2"] == pytest.approx(2 / 3)
    # mrr@2 = [1/2, nan, 0, 1/2] -> mean 1/3
    assert agg["mrr@2"] == pytest.approx(1 / 3)
    assert agg["queries"] == 3.0
    assert set(agg) == {*out, "queries"}


def test_aggregate_with_mask():
    out = per_query_metrics([[1, 2], [3], [4], [6, 5]], [{2}, set(), {9}, {5}], ks=[2])
    # mask keeps queries 1 (NaN) and 2 (hr 0): one evaluable query, mean 0.
    agg = aggregate(out, mask=np.array([False, True, True, False]))
    assert agg["hr@2"] == 0.0
    assert agg["queries"] == 1.0


def test_aggregate_over_no_query_is_nan():
    out = per_query_metrics([[1], [2]], [set(), {2}], ks=[1])
    agg = aggregate(out, mask=np.array([True, False]))
    assert math.isnan(agg["hr@1"])
    assert agg["queries"] == 0.0
    assert math.isnan(aggregate(per_query_metrics([], [], ks=[1]))["ndcg@1"])


@pytest.mark.parametrize(
    ("per_query", "mask", "match"),
    [
        ({}, None, "no metrics"),
        ({"queries": np.zeros(2)}, None, "reserves"),
        ({"a": np.zeros(2), "b": np.zeros(3)}, None, r"per_query\['b'\] has shape"),
        ({"a": np.zeros((2, 1))}, None, "shape"),
        ({"a": np.zeros(2)}, np.array([1, 0]), "boolean"),
        ({"a": np.zeros(2)}, np.array([True]), "boolean"),
    ],
)
def test_aggregate_errors(per_query, mask, match):
    with pytest.raises(ValueError, match=match):
        aggregate(per_query, mask)


ITEMS_OF = {"a": [7, 3], "b": [3, 5], "c": [1], "d": []}


def test_expand_shared_sids_dedup_and_cut():
    # "a" -> 3, 7 (ascending); "b" -> 3 (already listed, skipped), 5; "d" -> nothing; "c" -> 1.
    sids = [["a", "b", "d", "c"], ["c", "c", "b"]]
    assert expand_sids_to_items(sids, ITEMS_OF.__getitem__, None) == [[3, 7, 5, 1], [1, 3, 5]]
    assert expand_sids_to_items(sids, ITEMS_OF.__getitem__, 3) == [[3, 7, 5], [1, 3, 5]]
    assert expand_sids_to_items(sids, ITEMS_OF.__getitem__, 1) == [[3], [1]]
    assert expand_sids_to_items([[]], ITEMS_OF.__getitem__, 5) == [[]]


def test_k_counts_items_not_sids():
    # SID "a" fills ranks 1 and 2 with items 3 and 7, so item 5 of SID "b" is at rank 3.
    ranked = expand_sids_to_items([["a", "b"]], ITEMS_OF.__getitem__, None)
    out = per_query_metrics(ranked, [{5}], ks=[2, 3])
    assert out["hr@2"][0] == 0.0
    assert out["mrr@3"][0] == pytest.approx(1 / 3)


def test_expand_with_a_sid_trie():
    # rows (0,1) and (0,1) share a SID: items 30 and 10 -> listed 10, 30.
    trie = SidTrie.build(np.array([[0, 1], [1, 0], [0, 1]]), np.array([30, 20, 10]), (2, 2))
    assert expand_sids_to_items([[(0, 1), (1, 0)], [(1, 1)]], trie.items, 2) == [[10, 30], []]


@pytest.mark.parametrize("max_items", [0, -1, True, 2.5])
def test_expand_bad_max_items(max_items):
    with pytest.raises(ValueError, match="max_items"):
        expand_sids_to_items([["a"]], ITEMS_OF.__getitem__, max_items)
