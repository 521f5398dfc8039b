"""Ranking metrics per query at cut-offs K, and their means over a set of queries.

For query i, ``ranked[i]`` lists the item ids the system returned, best first (rank r counts
from 1, no item twice), and R_i = ``relevant[i]`` is the set of relevant item ids. Let
H_i(K) = {r <= K : ranked[i][r - 1] in R_i} be the ranks of the hits in the top K (K may exceed
the list length; the list is then simply shorter than K). With binary gains:

    HR@K     = 1 if H_i(K) is non-empty else 0
    MRR@K    = 1 / min H_i(K)                   (0 when H_i(K) is empty)
    DCG@K    = sum_{r in H_i(K)} 1 / log2(r + 1)
    IDCG@K   = sum_{r=1}^{min(|R_i|, K)} 1 / log2(r + 1)
    NDCG@K   = DCG@K / IDCG@K
    Recall@K = |H_i(K)| / |R_i|

A query with R_i empty is not evaluable (it is not a miss): every metric is NaN for it, and
:func:`aggregate` leaves it out of every mean. The paper's offline metrics are HR@K under two
choices of R_i: "Order HR@10" (OneSearch) is ``hr@10`` with R_i = the session's purchased items,
"Click HR@10" is ``hr@10`` with R_i = the session's clicked items.

A generative retriever ranks SIDs, not items; :func:`expand_sids_to_items` turns its list into
an item list first. Tie rule: a SID that stands for several items contributes all of them, in
ascending item id, at consecutive ranks; the K cut-off counts items, not SIDs (so one SID of
twelve items fills the whole top 10). An item already listed through an earlier SID is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np

METRICS: tuple[str, ...] = ("hr", "mrr", "ndcg", "recall")
QUERIES_KEY = "queries"


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """``ks`` as a tuple of distinct positive ints.

    Raises:
        ValueError: empty, a non-int (bool included), a value < 1, or a repeated value.
    """
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks is empty: give at least one cut-off K")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"ks: cut-off {k!r} is not a positive int")
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks: {ks} repeats a cut-off")
    return tuple(int(k) for k in ks)


def _hit_ranks(ranked: Sequence[int], relevant: Collection[int], query: int) -> np.ndarray:
    """1-based ranks of the relevant items in ``ranked`` (ascending), i.e. H_i(len(ranked)).

    Raises:
        ValueError: an item listed twice (names the query index and the item).
    """
    seen: set[int] = set()
    hits = []
    for rank, item in enumerate(ranked, start=1):
        if item in seen:
            raise ValueError(f"ranked[{query}]: item {item!r} appears twice")
        seen.add(item)
        if item in relevant:
            hits.append(rank)
    return np.asarray(hits, np.int64)


def _discounts(max_rank: int) -> np.ndarray:
    """``d[r - 1] = 1 / log2(r + 1)`` for r = 1..max_rank, the DCG position discount."""
    return 1.0 / np.log2(np.arange(2, max_rank + 2, dtype=np.float64))


def _metrics_at(hits: np.ndarray, num_relevant: int, k: int, discounts: np.ndarray) -> dict[str, float]:
    """HR, MRR, NDCG and Recall at cut-off ``k`` of one query with hit ranks ``hits``.

    Implements the module docstring's equations; ``num_relevant`` = |R_i| must be >= 1.
    """
    top = hits[hits <= k]
    dcg = float(discounts[top - 1].sum())
    idcg = float(discounts[: min(num_relevant, k)].sum())
    return {
        "hr": 1.0 if len(top) else 0.0,
        "mrr": 1.0 / float(top[0]) if len(top) else 0.0,
        "ndcg": dcg / idcg,
        "recall": len(top) / num_relevant,
    }


def per_query_metrics(
    ranked: Sequence[Sequence[int]], relevant: Sequence[Collection[int]], ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """HR@K, MRR@K, NDCG@K and Recall@K of every query (the module docstring's equations).

    Args:
        ranked: per query, the returned item ids, best first.
        relevant: per query, the relevant item ids (any collection; duplicates count once).
        ks: the cut-offs K, distinct positive ints.

    Returns:
        ``"{metric}@{K}"`` -> float64 array of length ``len(ranked)``, metric-major in the order
        hr, mrr, ndcg, recall, then K in the order of ``ks``; NaN for queries with no relevant item.

    Raises:
        ValueError: bad ``ks``, lengths of ``ranked`` and ``relevant`` differ, or an item listed
            twice in one ranking.
    """
    ks = _check_ks(ks)
    if len(ranked) != len(relevant):
        raise ValueError(f"ranked has {len(ranked)} queries but relevant has {len(relevant)}")
    out = {f"{m}@{k}": np.full(len(ranked), np.nan) for m in METRICS for k in ks}
    discounts = _discounts(max(ks))
    for i, (items, rel) in enumerate(zip(ranked, relevant, strict=True)):
        rel = set(rel)
        hits = _hit_ranks(items, rel, i)
        if not rel:
            continue
        for k in ks:
            for m, value in _metrics_at(hits, len(rel), k, discounts).items():
                out[f"{m}@{k}"][i] = value
    return out


def aggregate(per_query: Mapping[str, np.ndarray], mask: np.ndarray | None = None) -> dict[str, float]:
    """Mean of each metric over the queries where it is not NaN (and ``mask`` is True).

    Args:
        per_query: ``metric -> per-query values``, as :func:`per_query_metrics` returns.
        mask: optional boolean array selecting queries (a segment, say).

    Returns:
        ``metric -> mean`` (NaN when no query counts: not an error), plus ``"queries"``: the
        number of selected queries whose first metric is not NaN, as a float.

    Raises:
        ValueError: no metrics, a metric named ``"queries"``, arrays of different lengths or
            not 1-D, or a mask that is not a boolean array of that length.
    """
    if not per_query:
        raise ValueError("per_query has no metrics")
    if QUERIES_KEY in per_query:
        raise ValueError(f"per_query has a metric named {QUERIES_KEY!r}, which aggregate reserves")
    arrays = {name: np.asarray(values, np.float64) for name, values in per_query.items()}
    n = len(next(iter(arrays.values())))
    for name, values in arrays.items():
        if values.shape != (n,):
            raise ValueError(f"per_query[{name!r}] has shape {values.shape}, expected ({n},)")
    selected = _check_mask(mask, n)
    out = {name: _nanmean(values[selected]) for name, values in arrays.items()}
    first = next(iter(arrays.values()))
    out[QUERIES_KEY] = float(np.count_nonzero(~np.isnan(first[selected])))
    return out


def _check_mask(mask: np.ndarray | None, n: int) -> np.ndarray:
    """``mask`` as a boolean array of length n (all True for None).

    Raises:
        ValueError: a mask that is not boolean or not of shape ``(n,)``.
    """
    if mask is None:
        return np.ones(n, bool)
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.shape != (n,):
        raise ValueError(f"mask must be a boolean array of shape ({n},), got {mask.dtype} {mask.shape}")
    return mask


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN (without a warning) when there are none."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if len(kept) else math.nan


def expand_sids_to_items(
    ranked_sids: Sequence[Sequence[object]],
    items_of: Callable[[object], Sequence[int]],
    max_items: int | None,
) -> list[list[int]]:
    """Per query, the ranked item list a ranked SID list stands for (the module's tie rule).

    Args:
        ranked_sids: per query, SIDs best first (leaf indices, code tuples: whatever
            ``items_of`` accepts).
        items_of: the item ids a SID stands for (e.g. :meth:`SidTrie.items`); their order does
            not matter, they are listed in ascending item id.
        max_items: keep at most this many items per query (None: all of them).

    Returns:
        Per query, item ids: the first SID's items ascending, then the second SID's, ..., an
        item already listed skipped, cut after ``max_items`` items.

    Raises:
        ValueError: ``max_items`` not None and not a positive int.
    """
    if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1):
        raise ValueError(f"max_items must be None or a positive int, got {max_items!r}")
    return [_expand_one(sids, items_of, max_items) for sids in ranked_sids]


def _expand_one(sids: Sequence[object], items_of: Callable[[object], Sequence[int]], limit: int | None) -> list[int]:
    """One query's item list from its SID list (see :func:`expand_sids_to_items`)."""
    out: list[int] = []
    seen: set[int] = set()
    for sid in sids:
        for item in sorted(int(i) for i in items_of(sid)):
            if limit is not None and len(out) >= limit:
                return out
            if item not in seen:
                seen.add(item)
                out.append(item)
    return out
