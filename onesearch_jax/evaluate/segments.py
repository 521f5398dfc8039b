"""Segment labels of test sessions: query frequency, user activity, item popularity, query type.

Every count comes from the sessions whose split is ``train`` (the training window), so a test
session is labelled by what was known before it. The families and their labels, in display
order, are :data:`SEGMENTS`:

* ``query_frequency``: queries (by :func:`query_key`) sorted by number of train sessions,
  descending, ties by query key; with c_j the share of train sessions of the first j queries,
  query j is "head" while c_j <= head_share (the most frequent query always is), "torso" while
  c_j <= head_share + torso_share, else "tail". A query never seen in train is "tail".
* ``user_activity``: n_u = train sessions of user u. Over the users with n_u >= 1, q_low and
  q_high are the ``user_low_quantile`` and ``user_high_quantile`` quantiles of n_u (numpy's
  default linear interpolation). A user is "low" if n_u <= q_low, else "high" if n_u >= q_high,
  else "middle"; a user without train sessions is "low". "low" is tested first, so when one
  count fills both quantiles (e.g. most users have a single session) its users are "low".
* ``item_popularity`` of the session's first clicked item (else its first purchased item, else
  "none"): items with at least one train click sorted by train clicks, descending, ties by
  item id; with s_j the share of train clicks of the first j items, item j is "hot" while
  s_j <= hot_share (the most clicked item always is). An item never shown, clicked or bought
  in a train session is "cold"; every other item is "warm".
* ``query_type``: the generator's query kind (``truth/sessions.jsonl``) mapped by
  :data:`QUERY_TYPES`: "plain" and "variant" (a synonym or misspelling of a bare entity name)
  -> "plain"; "constraint" (negation or price bound), "constrained", "complex" and
  "multi_attribute" -> "complex"; "ambiguous" -> "ambiguous"; anything else, or no kind
  (real logs have none), -> "unknown".

Shares are compared with a tolerance of 1e-9, so that e.g. head_share + torso_share = 0.7 + 0.1
admits a cumulative share of exactly 0.8.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Protocol

import numpy as np

from onesearch_jax.understanding.logs import query_key

TRAIN_SPLIT = "train"
NONE = "none"
SEGMENTS: dict[str, tuple[str, ...]] = {
    "query_frequency": ("head", "torso", "tail"),
    "user_activity": ("high", "middle", "low"),
    "item_popularity": ("hot", "warm", "cold", NONE),
    "query_type": ("plain", "complex", "ambiguous", "unknown"),
}
QUERY_TYPES: dict[str, str] = {
    "plain": "plain",
    "variant": "plain",
    "constraint": "complex",
    "constrained": "complex",
    "complex": "complex",
    "multi_attribute": "complex",
    "ambiguous": "ambiguous",
}
_TOLERANCE = 1e-9


class SessionLike(Protocol):
    """The fields of a recall.jsonl session (:class:`~onesearch_jax.data.schema.SearchSession`)."""

    user_id: int
    query: str
    split: str
    impressed_item_ids: tuple[int, ...]
    clicked_item_ids: tuple[int, ...]
    purchased_item_ids: tuple[int, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SegmentConfig:
    """Thresholds of the segment families (see the module docstring).

    Attributes:
        head_share: cumulative share of train sessions covered by head queries, in (0, 1].
        torso_share: the share covered by torso queries after the head, in (0, 1];
            head_share + torso_share <= 1.
        user_high_quantile: quantile of train sessions per active user at or above which a user
            is "high".
        user_low_quantile: quantile at or below which a user is "low";
            0 <= user_low_quantile < user_high_quantile <= 1.
        hot_share: cumulative share of train clicks covered by hot items, in (0, 1].
    """

    head_share: float = 0.5
    torso_share: float = 0.3
    user_high_quantile: float = 2 / 3
    user_low_quantile: float = 1 / 3
    hot_share: float = 0.5

    def __post_init__(self):
        for name in ("head_share", "torso_share", "user_high_quantile", "user_low_quantile", "hot_share"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        for name in ("head_share", "torso_share", "hot_share"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        if self.head_share + self.torso_share > 1 + _TOLERANCE:
            raise ValueError(f"head_share + torso_share must be <= 1, got {self.head_share} + {self.torso_share}")
        low, high = self.user_low_quantile, self.user_high_quantile
        if not 0 <= low < high <= 1:
            raise ValueError(
                f"need 0 <= user_low_quantile < user_high_quantile <= 1, got user_low_quantile={low!r}, "
                f"user_high_quantile={high!r}"
            )


def _share_labels(counts: Mapping, bounds: Iterable[tuple[str, float]], rest: str) -> dict:
    """Labels of keys ranked by count (descending, ties by key) by their cumulative share.

    Key j (0-based) with cumulative share c_j gets the first label whose bound satisfies
    c_j <= bound (key 0 always gets the first label), else ``rest``. Keys with count 0 are left out.
    """
    bounds = list(bounds)
    ranked = sorted((k for k, n in counts.items() if n > 0), key=lambda k: (-counts[k], k))
    total = sum(counts[k] for k in ranked)
    out = {}
    cumulative = 0
    for j, key in enumerate(ranked):
        cumulative += counts[key]
        share = cumulative / total
        label = next((name for name, bound in bounds if share <= bound + _TOLERANCE), rest)
        out[key] = bounds[0][0] if j == 0 else label
    return out


def query_labels(train_sessions_per_query: Mapping[str, int], config: SegmentConfig) -> dict[str, str]:
    """Query key -> "head"/"torso"/"tail" by cumulative share of train sessions."""
    bounds = (("head", config.head_share), ("torso", config.head_share + config.torso_share))
    return _share_labels(train_sessions_per_query, bounds, "tail")


def user_labels(train_sessions_per_user: Mapping[int, int], config: SegmentConfig) -> dict[int, str]:
    """User id -> "high"/"middle"/"low" by the quantiles of train sessions per active user."""
    active = {u: n for u, n in train_sessions_per_user.items() if n > 0}
    if not active:
        return {}
    counts = np.asarray(list(active.values()), np.float64)
    low, high = np.quantile(counts, [config.user_low_quantile, config.user_high_quantile])
    return {u: "low" if n <= low else "high" if n >= high else "middle" for u, n in active.items()}


def item_labels(train_clicks: Mapping[int, int], train_seen: Iterable[int], config: SegmentConfig) -> dict[int, str]:
    """Item id -> "hot"/"warm" for every item seen in train (the rest are "cold")."""
    out = dict.fromkeys(train_seen, "warm")
    out.update(_share_labels(train_clicks, (("hot", config.hot_share),), "warm"))
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class SegmentTables:
    """Segment labels learned from the train sessions (unlisted keys get the default label).

    Attributes:
        config: the thresholds used.
        queries: query key -> "head"/"torso"/"tail" (unlisted: "tail").
        users: user id -> "high"/"middle"/"low" (unlisted: "low").
        items: item id -> "hot"/"warm" (unlisted: "cold").
    """

    config: SegmentConfig
    queries: Mapping[str, str]
    users: Mapping[int, str]
    items: Mapping[int, str]

    @classmethod
    def from_sessions(cls, sessions: Iterable[SessionLike], config: SegmentConfig) -> SegmentTables:
        """Counts sessions, users' sessions and item clicks/impressions over the train split."""
        per_query: Counter[str] = Counter()
        per_user: Counter[int] = Counter()
        clicks: Counter[int] = Counter()
        seen: set[int] = set()
        for s in sessions:
            if s.split != TRAIN_SPLIT:
                continue
            per_query[query_key(s.query)] += 1
            per_user[s.user_id] += 1
            clicks.update(s.clicked_item_ids)
            seen.update(s.impressed_item_ids, s.clicked_item_ids, s.purchased_item_ids)
        return cls(
            config=config,
            queries=query_labels(per_query, config),
            users=user_labels(per_user, config),
            items=item_labels(clicks, seen, config),
        )

    def query_segment(self, query: str) -> str:
        """ "head", "torso" or "tail" of a query as typed (normalised by :func:`query_key`).

        Raises:
            ValueError: a blank query.
        """
        return self.queries.get(query_key(query), "tail")

    def user_segment(self, user_id: int) -> str:
        """ "high", "middle" or "low" ("low" for a user without train sessions)."""
        return self.users.get(user_id, "low")

    def item_segment(self, item_id: int) -> str:
        """ "hot", "warm" or "cold" ("cold" for an item never seen in train)."""
        return self.items.get(item_id, "cold")


def query_type(query_kind: str | None) -> str:
    """The ``query_type`` label of a generator query kind (:data:`QUERY_TYPES`, else "unknown")."""
    return QUERY_TYPES.get(query_kind, "unknown") if query_kind is not None else "unknown"


def session_segments(session: SessionLike, tables: SegmentTables, query_kind: str | None = None) -> dict[str, str]:
    """The session's label in every family of :data:`SEGMENTS` (rules in the module docstring)."""
    engaged = (*session.clicked_item_ids, *session.purchased_item_ids)
    return {
        "query_frequency": tables.query_segment(session.query),
        "user_activity": tables.user_segment(session.user_id),
        "item_popularity": tables.item_segment(engaged[0]) if engaged else NONE,
        "query_type": query_type(query_kind),
    }
