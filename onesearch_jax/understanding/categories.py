"""Category prediction for a query from the training window's clicks, with lexicon back-off.

OneSearch-V2 (arXiv 2603.24422), thought-augmented query understanding, step 1 ("intent,
category and attribute extraction"): the category of a query is the category distribution of the
items clicked or bought for it in the training window, per level (1, 2, 3; level 3 names
concrete products in KuaiSearch and in the synthetic world). For a user segment, the segment's
own clicks for the query are smoothed toward the query's distribution (a Dirichlet prior of
``segment_prior`` pseudo-clicks). The query's clicks are themselves smoothed toward the back-off
through its lexicon terms (``lexicon_prior`` pseudo-clicks): the category distribution of clicked
items whose titles contain those terms, weighted by the terms' lexicon weights. So an unseen
query is categorised by its terms alone, a query with a few clicks mostly by its terms, a
frequent one by its clicks. Every count leaves the asking session out
(:class:`~.logs.GroupedCounts`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from onesearch_jax.understanding.keywords import Candidate, KeywordRequest
from onesearch_jax.understanding.lexicon import AttributeLexicon
from onesearch_jax.understanding.logs import GroupedCounts, LoggedSession, TrainingLogs, normalise

LEVELS: tuple[int, ...] = (1, 2, 3)
SOURCES: tuple[str, ...] = ("clicks", "lexicon", "none")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CategoryConfig:
    """How query categories are estimated.

    Attributes:
        purchase_weight: weight of a purchase beside a click's 1 (an integer, so that leaving a
            session out is exact).
        min_support: weighted clicks a query needs before its own clicks are trusted; below,
            the prediction backs off to the lexicon.
        lexicon_prior: pseudo-clicks of the lexicon back-off mixed into the query's own clicks
            (a query with few clicks leans on what its terms mean; one with many, on its clicks).
        segment_prior: pseudo-clicks of the query distribution mixed into a segment's counts.
        backoff_types: lexicon types whose terms drive the back-off (concrete product words).
        top_k: categories kept per level.
    """

    purchase_weight: int = 2
    min_support: int = 2
    lexicon_prior: float = 5.0
    segment_prior: float = 5.0
    backoff_types: tuple[str, ...] = ("entity", "brand", "model", "series")
    top_k: int = 5

    def __post_init__(self):
        if self.purchase_weight < 0 or not isinstance(self.purchase_weight, int):
            raise ValueError(f"CategoryConfig.purchase_weight must be an integer >= 0, got {self.purchase_weight!r}")
        if self.min_support < 1:
            raise ValueError(f"CategoryConfig.min_support must be >= 1, got {self.min_support}")
        if self.segment_prior < 0 or self.lexicon_prior < 0:
            raise ValueError(f"CategoryConfig: priors must be >= 0, got {self.segment_prior}, {self.lexicon_prior}")
        if self.top_k < 1:
            raise ValueError(f"CategoryConfig.top_k must be >= 1, got {self.top_k}")
        object.__setattr__(self, "backoff_types", tuple(self.backoff_types))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CategoryPrediction:
    """A query's category distribution per level.

    Attributes:
        source: ``clicks`` (the query's own clicks), ``lexicon`` (back-off through its terms) or
            ``none`` (nothing known).
        support: weighted clicks behind the estimate.
        levels: for levels 1, 2, 3: ``(name, probability)`` pairs, most probable first.
    """

    source: str
    support: int
    levels: tuple[tuple[tuple[str, float], ...], ...]

    def distribution(self, level: int) -> dict[str, float]:
        return dict(self.levels[level - 1])

    def top(self, level: int) -> str | None:
        pairs = self.levels[level - 1]
        return pairs[0][0] if pairs else None


EMPTY = CategoryPrediction(source="none", support=0, levels=((), (), ()))


class CategoryPredictor:
    """Predicts query categories from training-window clicks (see the module docstring)."""

    def __init__(
        self,
        logs: TrainingLogs,
        config: CategoryConfig,
        *,
        lexicon: AttributeLexicon | None = None,
        segment_of: Callable[[int], str | None] = lambda user_id: None,
    ):
        self.logs, self.config = logs, config
        self._segment_of = segment_of
        self._lexicon = lexicon
        self._title_terms: dict[int, tuple[str, ...]] = {}
        sessions = list(logs.sessions.values())
        self.by_query = GroupedCounts(sessions, self._query_contribution, lookup=logs.session)
        self.by_term = GroupedCounts(sessions, self._term_contribution, lookup=logs.session)

    def _levels(self, session: LoggedSession):
        for item, w in self.logs.engaged(session, purchase_weight=self.config.purchase_weight).items():
            path = self.logs.category(item)
            for level in LEVELS:
                name = path.at(level)
                if name is not None and w > 0:
                    yield item, level, name, w

    def _query_contribution(self, session: LoggedSession):
        segment = self._segment_of(session.user_id)
        for _, level, name, w in self._levels(session):
            yield (session.key, None, level), name, w
            if segment is not None:
                yield (session.key, segment, level), name, w

    def _term_contribution(self, session: LoggedSession):
        for item, level, name, w in self._levels(session):
            for term in self.title_terms(item):
                yield (term, level), name, w

    def title_terms(self, item_id: int) -> tuple[str, ...]:
        """Back-off lexicon terms in an item's title (cached)."""
        if self._lexicon is None:
            return ()
        terms = self._title_terms.get(item_id)
        if terms is None:
            wanted = set(self.config.backoff_types)
            found = self._lexicon.match(self.logs.title(item_id))
            terms = tuple(sorted({m.term for m in found if wanted.intersection(m.types)}))
            self._title_terms[item_id] = terms
        return terms

    def predict(
        self,
        key: str,
        *,
        segment: str | None = None,
        terms: Sequence[tuple[str, float]] = (),
        exclude: int | None = None,
    ) -> CategoryPrediction:
        """The category distribution of query ``key`` (a :func:`~.logs.query_key`).

        Args:
            key: the query key.
            segment: a user segment; its own clicks are smoothed toward the query's.
            terms: ``(lexicon term, weight)`` found in the query, for the back-off.
            exclude: a session id whose clicks must not count (the asking session).
        """
        cfg = self.config
        counts = [self.by_query.group((key, None, level), exclude=exclude) for level in LEVELS]
        support = sum(counts[0].values())
        backoff = self._backoff(terms, exclude)
        if support < cfg.min_support and not backoff[0]:
            return EMPTY
        levels = []
        for i, level in enumerate(LEVELS):
            if backoff[0]:
                # the query's clicks smoothed toward its lexicon terms' categories
                names = sorted(set(counts[i]) | set(backoff[i]))
                dist = {
                    c: (counts[i].get(c, 0) + cfg.lexicon_prior * backoff[i].get(c, 0.0))
                    / (support + cfg.lexicon_prior)
                    for c in names
                }
            else:
                dist = normalise(counts[i])
            if segment is not None and cfg.segment_prior > 0:
                own = self.by_query.group((key, segment, level), exclude=exclude)
                n = sum(own.values())
                names = sorted(set(dist) | set(own))
                dist = {
                    c: (own.get(c, 0) + cfg.segment_prior * dist.get(c, 0.0)) / (n + cfg.segment_prior) for c in names
                }
            levels.append(self._top(dist))
        source = "clicks" if support >= cfg.min_support else "lexicon"
        return CategoryPrediction(source=source, support=support, levels=tuple(levels))

    def _backoff(self, terms: Sequence[tuple[str, float]], exclude: int | None) -> list[dict[str, float]]:
        """Per level, the weighted mix of the category distributions of the query's terms."""
        wanted = sorted({(t, w) for t, w in terms if self._known_term(t)})
        out = []
        for level in LEVELS:
            mixed: dict[str, float] = {}
            for term, weight in wanted:
                for name, p in normalise(self.by_term.group((term, level), exclude=exclude)).items():
                    mixed[name] = mixed.get(name, 0.0) + weight * p
            out.append(normalise(mixed))
        return out

    def _known_term(self, term: str) -> bool:
        return bool(self.by_term.group((term, 1)))

    def _top(self, distribution: dict[str, float]) -> tuple[tuple[str, float], ...]:
        ranked = sorted(distribution.items(), key=lambda kv: (-kv[1], kv[0]))[: self.config.top_k]
        return tuple((name, round(p, 6)) for name, p in ranked)


class CategorySource:
    """Keyword source: the most likely level-``level`` categories of the query's clicked items.

    Level 3 names concrete products (KuaiSearch's leaf categories, the world's entities), so for
    "shoes" asked by a woman it proposes "high heels", for "couch" "sofa". A category scores its
    probability; those under ``min_share`` are not proposed.
    """

    name = "category"

    def __init__(self, *, lexicon: AttributeLexicon | None = None, level: int = 3, min_share: float = 0.1):
        if level not in LEVELS or not 0 < min_share <= 1:
            raise ValueError(f"CategorySource: level must be 1-3 and min_share in (0, 1], got {level}, {min_share}")
        self.lexicon, self.level, self.min_share = lexicon, level, min_share

    def propose(self, request: KeywordRequest) -> list[Candidate]:
        out = []
        for name, p in request.categories.levels[self.level - 1]:
            if p >= self.min_share:
                entry = self.lexicon.entry(name) if self.lexicon is not None else None
                types = entry.types if entry is not None else ()
                out.append(Candidate(text=name, score=min(1.0, p), types=types, source=self.name))
        return out
