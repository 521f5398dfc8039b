"""Summary statistics of a KuaiSearch dataset, accumulated one record at a time."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from onesearch_jax.data.schema import Item, RankRow, RelevancePair, SearchSession, User


@dataclasses.dataclass
class DatasetStats:
    """Accumulates counts over streamed records; :meth:`summary` turns them into figures.

    Memory is bounded by the distinct queries, categories, user and item ids seen, not by row
    count. Items and users are counted by distinct id, so a repeated id counts once.
    """

    rank_rows: int = 0
    rank_clicks: int = 0
    relevance_rows: int = 0
    impressions: int = 0
    clicks: int = 0
    purchases: int = 0
    sessions_with_click: int = 0
    sessions_with_purchase: int = 0
    sessions_by_split: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    query_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    session_users: set = dataclasses.field(default_factory=set)
    categories: list = dataclasses.field(default_factory=lambda: [set(), set(), set()])
    brands: set = dataclasses.field(default_factory=set)
    genders: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    relevance_scores: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    item_ids: set = dataclasses.field(default_factory=set)
    user_ids: set = dataclasses.field(default_factory=set)
    train_impressed: set = dataclasses.field(default_factory=set)

    def add(self, record: Any) -> None:
        """Counts one record of any KuaiSearch type."""
        if isinstance(record, SearchSession):
            self.sessions_by_split[record.split] += 1
            self.query_counts[record.query] += 1
            self.session_users.add(record.user_id)
            self.impressions += len(record.impressed_item_ids)
            self.clicks += len(record.clicked_item_ids)
            self.purchases += len(record.purchased_item_ids)
            self.sessions_with_click += bool(record.clicked_item_ids)
            self.sessions_with_purchase += bool(record.purchased_item_ids)
            if record.split == "train":
                self.train_impressed.update(record.impressed_item_ids)
        elif isinstance(record, Item):
            self.item_ids.add(record.item_id)
            self.brands.add(record.brand_id)
            for level, cat in enumerate(
                (record.category_level1_id, record.category_level2_id, record.category_level3_id)
            ):
                self.categories[level].add(cat)
        elif isinstance(record, User):
            self.user_ids.add(record.user_id)
            self.genders[record.gender] += 1
        elif isinstance(record, RankRow):
            self.rank_rows += 1
            self.rank_clicks += record.is_clicked
        elif isinstance(record, RelevancePair):
            self.relevance_rows += 1
            self.relevance_scores[record.score] += 1
        else:
            raise TypeError(f"not a KuaiSearch record: {type(record).__name__}")

    def summary(self) -> dict[str, Any]:
        """The figures, as a flat JSON-serialisable dict."""
        sessions = sum(self.sessions_by_split.values())
        counts = sorted(self.query_counts.values(), reverse=True)
        head = max(1, len(counts) // 100)
        return {
            "items": len(self.item_ids),
            "users": len(self.user_ids),
            "sessions": sessions,
            "sessions_by_split": dict(sorted(self.sessions_by_split.items())),
            "distinct_queries": len(counts),
            "users_with_sessions": len(self.session_users),
            "categories_per_level": [len(c) for c in self.categories],
            "brands": len(self.brands),
            "genders": dict(sorted(self.genders.items())),
            "impressions": self.impressions,
            "clicks": self.clicks,
            "purchases": self.purchases,
            "ctr": _ratio(self.clicks, self.impressions),
            "purchases_per_click": _ratio(self.purchases, self.clicks),
            "sessions_with_click": _ratio(self.sessions_with_click, sessions),
            "sessions_with_purchase": _ratio(self.sessions_with_purchase, sessions),
            "top1pct_query_session_share": _ratio(sum(counts[:head]), sessions),
            "singleton_query_share": _ratio(sum(c == 1 for c in counts), len(counts)),
            "items_without_train_impression": len(self.item_ids - self.train_impressed),
            "rank_rows": self.rank_rows,
            "rank_ctr": _ratio(self.rank_clicks, self.rank_rows),
            "relevance_pairs": self.relevance_rows,
            "relevance_scores": {str(k): v for k, v in sorted(self.relevance_scores.items())},
        }


def _ratio(a: float, b: float) -> float:
    return round(a / b, 4) if b else 0.0


def format_summary(summary: dict[str, Any]) -> str:
    """Aligned ``name  value`` lines for the terminal."""
    width = max(len(k) for k in summary)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in summary.items())
