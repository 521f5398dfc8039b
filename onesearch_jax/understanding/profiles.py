"""User segments and preference profiles from the training window's behaviour.

OneSearch-V2 (arXiv 2603.24422), thought-augmented query understanding, step 3 ("preference
calibration with the user profile"): keywords are re-ranked with what the user (or the user's
segment) prefers. A :class:`Profile` is the share of a set of clicks and purchases (a user's
history before a request, or all clicks of a segment) per category level, brand and lexicon
term, plus the price band of what was bought. Built only from training-window sessions, never
from the asking session (``exclude``), and for a user only from sessions before the request.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Protocol

from onesearch_jax.understanding.lexicon import AttributeLexicon
from onesearch_jax.understanding.logs import GroupedCounts, LoggedSession, TrainingLogs, normalise

SEGMENT_FIELDS: tuple[str, ...] = ("gender", "age_bucket", "fre_province", "fre_city")


def segment_value(segment: str | None, field: str) -> str | None:
    """The value of ``field`` in a segment name like ``"gender=F,age_bucket=24-30"``."""
    if not segment:
        return None
    for part in segment.split(","):
        name, _, value = part.partition("=")
        if name == field:
            return value
    return None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Segmenter:
    """Maps a user to a segment name from profile fields of users.jsonl.

    Attributes:
        fields: users.jsonl fields that define a segment (default: gender, which decides what
            ambiguous queries such as "shoes" mean).
    """

    fields: tuple[str, ...] = ("gender",)

    def __post_init__(self):
        object.__setattr__(self, "fields", tuple(self.fields))
        for f in self.fields:
            if f not in SEGMENT_FIELDS:
                raise ValueError(f"Segmenter.fields: unknown user field {f!r}; known: {', '.join(SEGMENT_FIELDS)}")

    def of(self, logs: TrainingLogs, user_id: int) -> str | None:
        """The segment of a user, or None for an unknown user or no fields."""
        user = logs.users.get(user_id)
        if user is None or not self.fields:
            return None
        parts = []
        for f in self.fields:
            value = str(getattr(user, f)).strip().replace(",", "_").replace("=", "_")
            if not value:
                return None  # an unknown field: no segment, no personalisation
            parts.append(f"{f}={value}")
        return ",".join(parts)


FEATURES: tuple[str, ...] = ("category1", "category2", "category3", "brand", "term")


class Profile(Protocol):
    """Preferences as shares of weighted clicks and purchases.

    ``share(feature, key)`` for feature ``category1``/``category2``/``category3`` (key: a
    category name), ``brand`` (a folded brand name) or ``term`` (a lexicon term in the clicked
    titles): the share of the profile's weighted clicks on items with that key.
    """

    @property
    def events(self) -> int:
        """Weighted clicks and purchases behind the profile."""
        ...

    @property
    def price_band(self) -> float | None:
        """Mean price band (0 cheapest .. 3 dearest quartile of the level-2 category) of the
        priced items, or None."""
        ...

    def share(self, feature: str, key: str) -> float: ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HistoryProfile:
    """A :class:`Profile` from a (small) set of sessions, held as dictionaries."""

    events: int
    shares: Mapping[str, Mapping[str, float]]
    price_band: float | None

    def share(self, feature: str, key: str) -> float:
        return self.shares.get(feature, {}).get(key, 0.0)


EMPTY_PROFILE = HistoryProfile(events=0, shares={}, price_band=None)


class CountsProfile:
    """A :class:`Profile` read lazily from the window's segment counts (without ``exclude``)."""

    def __init__(self, counts: GroupedCounts, segment: str | None, exclude: int | None):
        self._counts, self._segment, self._exclude = counts, segment, exclude
        self.events = counts.get((segment, "events"), "", exclude=exclude)
        self.price_band = None

    def share(self, feature: str, key: str) -> float:
        if self.events <= 0:
            return 0.0
        return self._counts.get((self._segment, feature), key, exclude=self._exclude) / self.events


class ProfileBuilder:
    """Builds user, segment and global profiles from the training window.

    Args:
        logs: the training window.
        lexicon: terms counted in clicked titles (None: no term shares).
        segmenter: how users map to segments.
        purchase_weight: weight of a purchase beside a click's 1 (an integer: exact leave-one-out).
    """

    def __init__(
        self,
        logs: TrainingLogs,
        *,
        lexicon: AttributeLexicon | None,
        segmenter: Segmenter,
        purchase_weight: int = 2,
    ):
        self.logs, self.lexicon, self.segmenter = logs, lexicon, segmenter
        self.purchase_weight = purchase_weight
        self.bands = PriceBands(logs)
        self._terms: dict[int, tuple[str, ...]] = {}
        sessions = list(logs.sessions.values())
        self._segments = GroupedCounts(sessions, self._segment_contribution, lookup=logs.session)
        self._term_categories: dict[object, GroupedCounts] = {}
        self._priced_by_term: dict[str, list[tuple[int, int, int]]] | None = None

    def segment_of(self, user_id: int) -> str | None:
        return self.segmenter.of(self.logs, user_id)

    def title_terms(self, item_id: int) -> tuple[str, ...]:
        """Lexicon terms in an item's title (cached)."""
        if self.lexicon is None:
            return ()
        terms = self._terms.get(item_id)
        if terms is None:
            terms = tuple(sorted({m.term for m in self.lexicon.match(self.logs.title(item_id))}))
            self._terms[item_id] = terms
        return terms

    def _engaged(self, session: LoggedSession) -> list[tuple[int, int]]:
        weights = self.logs.engaged(session, purchase_weight=self.purchase_weight)
        return [(item, w) for item, w in sorted(weights.items()) if w > 0]

    def _features(self, session: LoggedSession):
        """``(feature, key, weight)`` of a session's clicks and purchases (no prices)."""
        for item, w in self._engaged(session):
            yield "events", "", w
            path = self.logs.category(item)
            for level in (1, 2, 3):
                name = path.at(level)
                if name is not None:
                    yield f"category{level}", name, w
            record = self.logs.items[item]
            if record.brand_id != 0 and record.brand_name.strip():
                yield "brand", record.brand_name.strip().lower(), w
            for term in self.title_terms(item):
                yield "term", term, w

    def _segment_contribution(self, session: LoggedSession):
        segment = self.segment_of(session.user_id)
        for feature, key, w in self._features(session):
            yield (segment, feature), key, w
            if segment is not None:
                yield (None, feature), key, w

    def user(self, user_id: int, *, before: int, exclude: int | None = None) -> Profile:
        """The profile of a user's window history strictly before time ``before`` (never
        session ``exclude``, nor its rank rows for prices)."""
        counts: dict[str, dict[str, int]] = {}

        def add(feature: str, key: str, w: float) -> None:
            bucket = counts.setdefault(feature, {})
            bucket[key] = bucket.get(key, 0) + w

        for s in self.logs.history(user_id, before=before, exclude=exclude):
            for feature, key, w in self._features(s):
                add(feature, key, w)
            for item, w in self._engaged(s):
                band = self.bands.band(item, exclude=exclude)
                if band is not None:
                    add("band_sum", "", w * band)
                    add("band_n", "", w)
        return _profile(counts)

    def segment(self, segment: str | None, *, exclude: int | None = None) -> Profile:
        """The profile of all window clicks by users of ``segment`` (None: of everyone)."""
        return CountsProfile(self._segments, segment, exclude)

    def term_categories(self, term: str, level: int, *, exclude: int | None = None) -> dict[str, float]:
        """Category distribution (at ``level``) of clicked items whose titles contain ``term``."""
        counts = self._term_categories.get(level)
        if counts is None:

            def contribution(session: LoggedSession):
                for item, w in self._engaged(session):
                    name = self.logs.category(item).at(level)
                    if name is not None:
                        for t in self.title_terms(item):
                            yield t, name, w

            counts = GroupedCounts(list(self.logs.sessions.values()), contribution, lookup=self.logs.session)
            self._term_categories[level] = counts
        return normalise(counts.group(term, exclude=exclude))

    def category_parents(self, name: str, level: int, *, exclude: int | None = None) -> dict[str, float]:
        """Level-``level`` distribution of the clicked items whose level-3 category is ``name``
        (for keywords that name a leaf category)."""
        key = ("parents", level)
        counts = self._term_categories.get(key)
        if counts is None:

            def contribution(session: LoggedSession):
                for item, w in self._engaged(session):
                    path = self.logs.category(item)
                    if path.level3 is not None and path.at(level) is not None:
                        yield path.level3.lower(), path.at(level), w

            counts = GroupedCounts(list(self.logs.sessions.values()), contribution, lookup=self.logs.session)
            self._term_categories[key] = counts
        return normalise(counts.group(name, exclude=exclude))

    def term_band(self, term: str, *, exclude: int | None = None) -> float | None:
        """Mean price band of the priced items clicked or bought whose titles contain ``term``."""
        if self._priced_by_term is None:
            index: dict[str, list[tuple[int, int, int]]] = {}
            for s in self.logs.sessions.values():
                for item, w in self._engaged(s):
                    if self.logs.prices.get(item):
                        for t in self.title_terms(item):
                            index.setdefault(t, []).append((s.session_id, item, w))
            self._priced_by_term = index
        total, n = 0.0, 0
        for sid, item, w in sorted(self._priced_by_term.get(term, ())):
            if sid == exclude:
                continue
            band = self.bands.band(item, exclude=exclude)
            if band is not None:
                total += w * band
                n += w
        return total / n if n else None


class PriceBands:
    """Price band (0 cheapest .. 3 dearest quartile) of an item among the priced items of its
    level-2 category. An item's price is the median of its rank-row prices in the window; asked
    without session ``exclude``, that session's rank rows do not count (the table is rebuilt
    only when the session has rank rows; otherwise it is the same table)."""

    def __init__(self, logs: TrainingLogs):
        self.logs = logs
        self._priced_sessions = {sid for rows in logs.prices.values() for sid, _ in rows}
        self._base = self._build(None)
        self._last: tuple[int | None, dict[int, int]] = (None, self._base)

    def _build(self, exclude: int | None) -> dict[int, int]:
        by_category: dict[str | None, list[tuple[float, int]]] = {}
        for item, rows in sorted(self.logs.prices.items()):
            kept = sorted(p for sid, p in rows if sid != exclude)
            if kept:
                by_category.setdefault(self.logs.category(item).level2, []).append((kept[len(kept) // 2], item))
        table = {}
        for members in by_category.values():
            members.sort()
            for rank, (_, item) in enumerate(members):
                table[item] = min(3, math.floor(4 * rank / len(members)))
        return table

    def table(self, exclude: int | None = None) -> dict[int, int]:
        if exclude is None or exclude not in self._priced_sessions:
            return self._base
        if self._last[0] != exclude:
            self._last = (exclude, self._build(exclude))
        return self._last[1]

    def band(self, item: int, *, exclude: int | None = None) -> int | None:
        return self.table(exclude).get(item)


def _profile(counts: Mapping[str, Mapping[str, int]]) -> Profile:
    events = sum(counts.get("events", {}).values())
    if events <= 0:
        return EMPTY_PROFILE
    band_n = sum(counts.get("band_n", {}).values())
    band = sum(counts.get("band_sum", {}).values()) / band_n if band_n else None
    shares = {f: {k: n / events for k, n in sorted(counts.get(f, {}).items())} for f in FEATURES}
    return HistoryProfile(events=events, shares=shares, price_band=band)
