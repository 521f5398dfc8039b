"""The lexical baseline every report shows: BM25 over item titles (``bm25s``).

Documents are the catalogue's item titles (``items.jsonl``), queries the queries as typed; both
are cut into terms by :func:`terms`. Scores are Lucene's BM25 (``bm25s`` defaults, k1 = 1.5,
b = 0.75):

    score(q, d) = sum_{t in q} IDF(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))

An item that shares no term with the query (score 0) is not retrieved, so a query with no
matching title returns fewer than K items (a miss, not an arbitrary list). Ties in score keep
``bm25s``'s order.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Sequence

import bm25s
import numpy as np

from onesearch_jax.data.kuaisearch import KuaiSearchDataset

logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on its logger: one line per index

# Words of letters and digits, or single CJK ideographs (Chinese titles have no spaces; unigrams
# and the bigrams of adjacent ones are the usual lexical baseline for them).
_CJK_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TERM = re.compile(f"([{_CJK_CHARS}]+)|[^\\W_{_CJK_CHARS}]+")


def terms(text: str) -> list[str]:
    """Lower-cased words; a run of CJK ideographs gives its characters and adjacent pairs.

    >>> terms("Nike Air-Max 270")
    ['nike', 'air', 'max', '270']
    >>> terms("运动鞋 nike")
    ['运', '动', '鞋', '运动', '动鞋', 'nike']
    """
    out: list[str] = []
    for match in _TERM.finditer(text.lower()):
        run = match.group(1)
        out.extend(_ideographs(run) if run else [match.group()])
    return out


def _ideographs(run: str) -> list[str]:
    return [*run, *(a + b for a, b in itertools.pairwise(run))]


class Bm25Retriever:
    """BM25 over item titles; :meth:`rank` returns item ids, best first."""

    def __init__(self, item_ids: Sequence[int], titles: Sequence[str]):
        """Indexes ``titles`` (one per item of ``item_ids``).

        Raises:
            ValueError: lengths differ or there are no items.
        """
        if len(item_ids) != len(titles) or not len(item_ids):
            raise ValueError(f"BM25 needs one title per item and at least one item, got {len(item_ids)} items "
                             f"and {len(titles)} titles")  # fmt: skip
        self.item_ids = np.asarray(item_ids, np.int64)
        self._index = bm25s.BM25()
        self._index.index([terms(t) for t in titles], show_progress=False)
        self._vocab = set(self._index.vocab_dict)

    @classmethod
    def from_catalogue(cls, data_dir: str) -> Bm25Retriever:
        """Indexes the items of a KuaiSearch directory."""
        items = list(KuaiSearchDataset(data_dir).read("items"))
        return cls([item.item_id for item in items], [item.item_title for item in items])

    def rank(self, queries: Sequence[str], k: int) -> list[list[int]]:
        """Per query, up to ``k`` item ids with a positive BM25 score, best first."""
        k = min(k, len(self.item_ids))
        known = [[t for t in terms(q) if t in self._vocab] for q in queries]
        out: list[list[int]] = [[] for _ in queries]
        rows = [i for i, q in enumerate(known) if q]
        if rows:
            docs, scores = self._index.retrieve([known[i] for i in rows], k=k, show_progress=False, n_threads=1)
            for row, ids, values in zip(rows, docs, scores, strict=True):
                out[row] = self.item_ids[ids[values > 0]].tolist()
        return out
