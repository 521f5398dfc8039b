"""The training window of the search logs, and counts over it that can leave one session out.

Everything query understanding learns from behaviour (category distributions, mined n-grams,
user and segment profiles) is derived here, from the sessions of the *training window* only:
the sessions whose split is ``train`` (valid and test come after it in time). Keywords for an
example must not be derived from that example's own session (OneSearch-V2's teacher sees the
keywords as input; deriving them from the session's clicks would leak the target). So every
statistic is a sum of per-session integer contributions (:class:`GroupedCounts`), and asking
for it "without session s" subtracts exactly what s contributed: the result equals the
statistic rebuilt from the logs without s (leave-one-session-out, exact because integer).
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Generic, TypeVar

from onesearch_jax.data.kuaisearch import KuaiSearchDataset, SkipLog
from onesearch_jax.data.schema import Item, RankRow, SearchSession, User
from onesearch_jax.understanding.lexicon import fold

G = TypeVar("G", bound=Hashable)
K = TypeVar("K", bound=Hashable)
UNKNOWN_CATEGORY = "UNKNOWN"
TRAINING_SPLITS: tuple[str, ...] = ("train",)


def query_key(text: str) -> str:
    """The key a query is known by: folded (NFKC, lower case) with whitespace runs collapsed.

    Raises:
        ValueError: for an empty or blank query.
    """
    if not isinstance(text, str):
        raise ValueError(f"a query must be a string, got {type(text).__name__}")
    key = " ".join(fold(text).split())
    if not key:
        raise ValueError(f"empty query {text!r}")
    return key


@dataclasses.dataclass(frozen=True, slots=True)
class CategoryPath:
    """An item's category names per level (``None`` where the level is missing/UNKNOWN)."""

    level1: str | None
    level2: str | None
    level3: str | None

    def at(self, level: int) -> str | None:
        return (self.level1, self.level2, self.level3)[level - 1]

    @classmethod
    def of(cls, item: Item) -> CategoryPath:
        def name(category_id: int, text: str) -> str | None:
            return None if category_id == 0 or not text.strip() or text == UNKNOWN_CATEGORY else text

        return cls(
            name(item.category_level1_id, item.category_level1_name),
            name(item.category_level2_id, item.category_level2_name),
            name(item.category_level3_id, item.category_level3_name),
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LoggedSession:
    """A training-window search session as query understanding sees it.

    Attributes:
        session_id, user_id, time_index: as in recall.jsonl.
        query: the query as typed; ``key`` its :func:`query_key`.
        impressed, clicked, purchased: item ids (those missing from items.jsonl removed and
            counted in :attr:`TrainingLogs.missing_item_refs`).
    """

    session_id: int
    user_id: int
    time_index: int
    query: str
    key: str
    impressed: tuple[int, ...]
    clicked: tuple[int, ...]
    purchased: tuple[int, ...]


class TrainingLogs:
    """Sessions of the training window, with the catalogue, users and logged prices.

    Attributes:
        items: item id -> catalogue record (items.jsonl, all of it).
        users: user id -> profile (users.jsonl).
        sessions: session id -> :class:`LoggedSession`, training window only.
        by_query: query key -> session ids, in time order.
        by_user: user id -> session ids, in time order.
        window_end: largest time_index in the window (``None`` for an empty window).
        prices: item id -> ((session id, price), ...) from rank rows of window sessions.
        missing_item_refs: clicked/purchased/impressed ids of window sessions not in items.jsonl.
        excluded_sessions: sessions outside the window (their count), never read further.
    """

    def __init__(
        self,
        *,
        items: Iterable[Item],
        users: Iterable[User],
        sessions: Iterable[SearchSession],
        rank_rows: Iterable[RankRow] = (),
        splits: tuple[str, ...] = TRAINING_SPLITS,
    ):
        self.items: dict[int, Item] = {item.item_id: item for item in items}
        self.users: dict[int, User] = {user.user_id: user for user in users}
        self.splits = tuple(splits)
        self.missing_item_refs = 0
        self.excluded_sessions = 0
        window = []
        for s in sessions:
            if s.split not in self.splits:
                self.excluded_sessions += 1
                continue
            window.append(s)
        window.sort(key=lambda s: (s.time_index, s.session_id))
        self.sessions: dict[int, LoggedSession] = {}
        by_query: dict[str, list[int]] = defaultdict(list)
        by_user: dict[int, list[int]] = defaultdict(list)
        for s in window:
            if s.session_id in self.sessions:
                raise ValueError(f"recall.jsonl: session_id {s.session_id} appears twice")
            logged = LoggedSession(
                session_id=s.session_id,
                user_id=s.user_id,
                time_index=s.time_index,
                query=s.query,
                key=query_key(s.query),
                impressed=self._known(s.impressed_item_ids),
                clicked=self._known(s.clicked_item_ids),
                purchased=self._known(s.purchased_item_ids),
            )
            self.sessions[s.session_id] = logged
            by_query[logged.key].append(s.session_id)
            by_user[s.user_id].append(s.session_id)
        self.by_query: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in by_query.items()}
        self.by_user: dict[int, tuple[int, ...]] = {k: tuple(v) for k, v in by_user.items()}
        self.window_end: int | None = window[-1].time_index if window else None
        prices: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for row in rank_rows:
            if row.session_id in self.sessions and row.target_item_id in self.items:
                prices[row.target_item_id].append((row.session_id, row.target_item_price))
        self.prices: dict[int, tuple[tuple[int, float], ...]] = {k: tuple(sorted(v)) for k, v in prices.items()}
        self._paths = {item_id: CategoryPath.of(item) for item_id, item in self.items.items()}

    def _known(self, ids: Iterable[int]) -> tuple[int, ...]:
        out = tuple(i for i in ids if i in self.items)
        self.missing_item_refs += len(tuple(ids)) - len(out)
        return out

    @classmethod
    def load(
        cls,
        root: str | os.PathLike,
        *,
        splits: tuple[str, ...] = TRAINING_SPLITS,
        skip_invalid: bool = False,
        skipped: SkipLog | None = None,
    ) -> TrainingLogs:
        """Reads a KuaiSearch directory (items, users, recall and, when present, rank).

        Raises:
            RecordError: for a bad record (file, line and field named), unless ``skip_invalid``.
            FileNotFoundError: when a required file is missing.
        """
        dataset = KuaiSearchDataset(Path(root))
        dataset.check_layout()
        kwargs = {"skip_invalid": skip_invalid, "skipped": skipped}
        rank = dataset.read("rank", **kwargs) if dataset.has("rank") else ()
        return cls(
            items=dataset.read("items", **kwargs),
            users=dataset.read("users", **kwargs),
            sessions=dataset.read("recall", **kwargs),
            rank_rows=rank,
            splits=splits,
        )

    def category(self, item_id: int) -> CategoryPath:
        """The category path of a catalogue item."""
        return self._paths[item_id]

    def title(self, item_id: int) -> str:
        return self.items[item_id].item_title

    def session(self, session_id: int | None) -> LoggedSession | None:
        """The window session with this id, or None (for None, or a session outside the window)."""
        return None if session_id is None else self.sessions.get(session_id)

    def history(self, user_id: int, *, before: int, exclude: int | None = None) -> list[LoggedSession]:
        """The user's window sessions strictly before time ``before`` (never session ``exclude``)."""
        out = []
        for sid in self.by_user.get(user_id, ()):
            s = self.sessions[sid]
            if s.time_index >= before:
                break
            if sid != exclude:
                out.append(s)
        return out

    def engaged(self, session: LoggedSession, *, purchase_weight: int) -> dict[int, int]:
        """Item id -> integer weight of a session's clicks and purchases (1 per click, plus
        ``purchase_weight`` per purchase), the unit every click statistic counts."""
        out: dict[int, int] = {}
        for i in session.clicked:
            out[i] = out.get(i, 0) + 1
        for i in session.purchased:
            out[i] = out.get(i, 0) + purchase_weight
        return out


class GroupedCounts(Generic[G, K]):
    """Integer counts ``group -> key -> n`` summed over the window's per-session contributions.

    ``contribution(session)`` yields ``(group, key, n)`` triples with integer ``n``. Asking with
    ``exclude=session_id`` subtracts exactly that session's contribution, so the answer is the
    one the logs without that session would give (keys whose count drops to 0 disappear).
    """

    def __init__(
        self,
        sessions: Iterable[LoggedSession],
        contribution: Callable[[LoggedSession], Iterable[tuple[G, K, int]]],
        *,
        lookup: Callable[[int], LoggedSession | None],
    ):
        self._contribution = contribution
        self._lookup = lookup
        self._totals: dict[G, dict[K, int]] = defaultdict(dict)
        for s in sessions:
            for group, key, n in contribution(s):
                bucket = self._totals[group]
                bucket[key] = bucket.get(key, 0) + n
        # keys kept sorted once, so that every answer lists them in the same order
        self._totals = {g: dict(sorted(b.items(), key=lambda kv: _sort_key(kv[0]))) for g, b in self._totals.items()}
        self._cache: tuple[int, dict[G, dict[K, int]]] | None = None

    def _own(self, exclude: int | None) -> dict[G, dict[K, int]]:
        session = self._lookup(exclude) if exclude is not None else None
        if session is None:
            return {}
        if self._cache is None or self._cache[0] != exclude:
            own: dict[G, dict[K, int]] = defaultdict(dict)
            for group, key, n in self._contribution(session):
                own[group][key] = own[group].get(key, 0) + n
            self._cache = (exclude, own)
        return self._cache[1]

    def groups(self) -> list[G]:
        return list(self._totals)

    def group(self, group: G, *, exclude: int | None = None) -> dict[K, int]:
        """``key -> count`` of one group, keys sorted, without session ``exclude``'s share."""
        totals = self._totals.get(group, {})
        own = self._own(exclude).get(group)
        if not own:
            return dict(totals)
        out = {}
        for key, n in totals.items():
            n -= own.get(key, 0)
            if n > 0:
                out[key] = n
        return out

    def get(self, group: G, key: K, *, exclude: int | None = None) -> int:
        n = self._totals.get(group, {}).get(key, 0)
        return n - self._own(exclude).get(group, {}).get(key, 0)


def _sort_key(key: object) -> tuple:
    return (str(type(key)), key if isinstance(key, (str, int, float, tuple)) else str(key))


def normalise(counts: Mapping[K, float]) -> dict[K, float]:
    """``counts`` divided by their sum (keys in sorted order; empty for an empty or zero sum)."""
    keys = sorted(counts, key=_sort_key)
    total = sum(counts[k] for k in keys)
    return {k: counts[k] / total for k in keys} if total > 0 else {}
