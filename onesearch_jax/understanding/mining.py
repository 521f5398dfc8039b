"""Keyword mining from the training window: distinctive n-grams of clicked titles (PMI).

OneSearch-V2 (arXiv 2603.24422), keyword chain of thought, mined without a language model: the
products and attributes a query implies are what the titles of items clicked or bought for that
query (by *other* sessions of the training window) say more often than their category does.

For query q and candidate g (a lexicon term found in a title, or a raw title n-gram: word
n-grams, CJK character n-grams; see :mod:`.text`):

* ``p_q(g)`` = weighted clicks/purchases on titles containing g / all weighted clicks for q,
  shrunk toward the background with ``prior_events`` pseudo-clicks; for a user segment, the
  segment's own clicks for q are smoothed toward that with ``segment_prior`` pseudo-clicks;
* ``p_bg(g)`` = sum over q's predicted categories c (level ``background_level``) of
  ``P(c | q) * (df_c(g) + 0.5) / (N_c + 1)``, where df_c counts *impressions* in the window of
  items of c whose titles contain g (the category background of what was shown);
* PMI ``= log(p_q(g) / p_bg(g))``; a candidate needs ``min_support`` distinct supporting
  sessions, ``min_items`` distinct clicked items, and lift ``p_q / p_bg >= min_lift``; its
  score is ``p_q(g) * min(1, PMI / log(lift_cap))`` in (0, 1] (frequent *and* distinctive).

A query without enough evidence of its own backs off to the pooled counts of the training
queries that share one of its product terms (entity, brand, model, series), discounted.
Every count is a :class:`~.logs.GroupedCounts`: asked for session s, nothing of s (its clicks,
purchases or impressions) counts, and only training-window sessions ever do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from onesearch_jax.understanding.keywords import Candidate, KeywordRequest
from onesearch_jax.understanding.lexicon import AttributeLexicon
from onesearch_jax.understanding.logs import GroupedCounts, LoggedSession, TrainingLogs
from onesearch_jax.understanding.text import ngrams, tokens

CANDIDATE_MODES: tuple[str, ...] = ("auto", "lexicon", "ngrams")
_EVENTS = "\x00events"
_SESSIONS = "\x00sessions"
_GLOBAL = None  # prior key of the background over every category


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MiningConfig:
    """Mining of keyword candidates from clicked titles.

    Attributes:
        candidates: ``lexicon`` (lexicon terms in titles), ``ngrams`` (raw title n-grams) or
            ``auto`` (lexicon when one is given, else n-grams).
        max_words: longest word n-gram.
        cjk_sizes: CJK character n-gram sizes.
        purchase_weight: weight of a purchase beside a click's 1 (integer: exact leave-one-out).
        min_support: distinct sessions (other than the asking one) whose clicked titles contain g.
        min_items: distinct clicked items whose titles contain g (one popular item's incidental
            attributes are not what the query implies).
        prior_events: pseudo-events of the background mixed into ``p_q`` (shrinks estimates
            from few clicks toward "nothing special").
        segment_prior: pseudo-events of the query's estimate mixed into a segment's own.
        min_lift: minimum ``p_q(g) / p_bg(g)``.
        lift_cap: lift at which the PMI factor of the score saturates at 1.
        background_level: category level (1-3) of the background.
        backoff: pool related training queries when the query has too little evidence.
        backoff_discount: factor on scores from the pooled related queries.
        backoff_types: lexicon types of the terms that make queries related.
        max_candidates: candidates returned per query.
    """

    candidates: str = "auto"
    max_words: int = 3
    cjk_sizes: tuple[int, ...] = (2, 3, 4)
    purchase_weight: int = 2
    min_support: int = 2
    min_items: int = 2
    prior_events: float = 5.0
    segment_prior: float = 5.0
    min_lift: float = 1.5
    lift_cap: float = 10.0
    background_level: int = 1
    backoff: bool = True
    backoff_discount: float = 0.5
    backoff_types: tuple[str, ...] = ("entity", "brand", "model", "series")
    max_candidates: int = 20

    def __post_init__(self):
        object.__setattr__(self, "cjk_sizes", tuple(self.cjk_sizes))
        object.__setattr__(self, "backoff_types", tuple(self.backoff_types))
        if self.candidates not in CANDIDATE_MODES:
            raise ValueError(f"MiningConfig.candidates must be one of {CANDIDATE_MODES}, got {self.candidates!r}")
        if self.max_words < 1 or not self.cjk_sizes or min(self.cjk_sizes) < 1:
            raise ValueError(f"MiningConfig: bad n-gram sizes {self.max_words}, {self.cjk_sizes}")
        if not isinstance(self.purchase_weight, int) or self.purchase_weight < 0:
            raise ValueError(f"MiningConfig.purchase_weight must be an integer >= 0, got {self.purchase_weight!r}")
        if self.min_support < 1 or self.min_items < 1:
            raise ValueError(
                f"MiningConfig: min_support, min_items must be >= 1, got {self.min_support}, {self.min_items}"
            )
        if self.prior_events < 0 or self.segment_prior < 0:
            raise ValueError(f"MiningConfig: priors must be >= 0, got {self.prior_events}, {self.segment_prior}")
        if self.min_lift < 1 or self.lift_cap <= 1:
            raise ValueError(
                f"MiningConfig: min_lift must be >= 1 and lift_cap > 1, got {self.min_lift}, {self.lift_cap}"
            )
        if self.background_level not in (1, 2, 3):
            raise ValueError(f"MiningConfig.background_level must be 1, 2 or 3, got {self.background_level}")
        if not 0 < self.backoff_discount <= 1:
            raise ValueError(f"MiningConfig.backoff_discount must be in (0, 1], got {self.backoff_discount}")
        if self.max_candidates < 1:
            raise ValueError(f"MiningConfig.max_candidates must be >= 1, got {self.max_candidates}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Evidence:
    weights: dict[str, int]  # gram -> weighted clicks on titles with it (and _EVENTS -> all)
    support: dict[str, int]  # gram -> distinct sessions (and _SESSIONS -> contributing sessions)
    items: dict[str, int]  # gram -> distinct clicked items


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MinedCandidate:
    """A mined n-gram with its evidence (for reports and tests)."""

    text: str
    score: float
    p_query: float
    p_background: float
    support: int
    backoff: bool


class NgramMiner:
    """Per-query n-gram statistics of the training window (see the module docstring).

    Args:
        logs: the training window.
        config: mining settings.
        lexicon: the attribute lexicon (candidates in ``lexicon`` mode, types in any mode).
        query_terms: query key -> its product terms (for the back-off); None disables it.
        segment_of: user id -> segment, for segment-level evidence.
    """

    def __init__(
        self,
        logs: TrainingLogs,
        config: MiningConfig,
        *,
        lexicon: AttributeLexicon | None = None,
        query_terms: Callable[[str], list[str]] | None = None,
        segment_of: Callable[[int], str | None] = lambda user_id: None,
    ):
        self.logs, self.config, self.lexicon = logs, config, lexicon
        self._segment_of = segment_of
        mode = config.candidates
        if mode == "auto":
            mode = "lexicon" if lexicon is not None else "ngrams"
        if mode == "lexicon" and lexicon is None:
            raise ValueError("MiningConfig.candidates='lexicon' needs a lexicon")
        self.mode = mode
        self._grams: dict[int, frozenset[str]] = {}
        sessions = list(logs.sessions.values())
        self.by_query = GroupedCounts(sessions, self._query_contribution, lookup=logs.session)
        self.impressions = GroupedCounts(sessions, self._impression_contribution, lookup=logs.session)
        self._df: dict[str | None, dict[str, int]] = {}
        self._n: dict[str | None, int] = {}
        for category in self.impressions.groups():
            shown = self.impressions.group(category)
            df: dict[str, int] = {}
            for item, count in shown.items():
                for g in self.grams(item):
                    df[g] = df.get(g, 0) + count
            self._df[category] = df
            self._n[category] = sum(shown.values())
        self._categories = sorted(self._df, key=str)
        self._own_cache: tuple[int | None, tuple] | None = None
        self._related: dict[str, list[str]] = {}
        if config.backoff and query_terms is not None:
            for key in sorted(logs.by_query):
                for term in query_terms(key):
                    self._related.setdefault(term, []).append(key)
        self._query_terms = query_terms if config.backoff else None

    def grams(self, item_id: int) -> frozenset[str]:
        """Candidate n-grams of an item's title (cached)."""
        grams = self._grams.get(item_id)
        if grams is None:
            title = self.logs.title(item_id)
            if self.mode == "lexicon":
                grams = frozenset(m.term for m in self.lexicon.match(title))
            else:
                grams = frozenset(ngrams(title, max_words=self.config.max_words, cjk_sizes=self.config.cjk_sizes))
            self._grams[item_id] = grams
        return grams

    def _category(self, item_id: int) -> str | None:
        return self.logs.category(item_id).at(self.config.background_level)

    def _query_contribution(self, session: LoggedSession):
        engaged = self.logs.engaged(session, purchase_weight=self.config.purchase_weight)
        groups = [(session.key, None)]
        segment = self._segment_of(session.user_id)
        if segment is not None:
            groups.append((session.key, segment))
        seen: set[str] = set()
        for item, w in sorted(engaged.items()):
            if w <= 0:
                continue
            for key, seg in groups:
                yield (key, seg, "w"), _EVENTS, w
            for g in sorted(self.grams(item)):
                for key, seg in groups:
                    yield (key, seg, "w"), g, w
                yield (session.key, None, "i"), (g, item), w
                seen.add(g)
        if seen:
            yield (session.key, None, "s"), _SESSIONS, 1
            for g in sorted(seen):
                yield (session.key, None, "s"), g, 1

    def _impression_contribution(self, session: LoggedSession):
        for item in session.impressed:
            yield self._category(item), item, 1

    def _own_impressions(self, exclude: int | None) -> tuple[dict[str | None, dict[str, int]], dict[str | None, int]]:
        """Session ``exclude``'s impressions per (category, gram) and per category, to subtract."""
        if self._own_cache is not None and self._own_cache[0] == exclude:
            return self._own_cache[1]
        session = self.logs.session(exclude)
        df: dict[str | None, dict[str, int]] = {}
        n: dict[str | None, int] = {}
        for item in session.impressed if session is not None else ():
            category = self._category(item)
            n[category] = n.get(category, 0) + 1
            bucket = df.setdefault(category, {})
            for g in self.grams(item):
                bucket[g] = bucket.get(g, 0) + 1
        self._own_cache = (exclude, (df, n))
        return df, n

    def _evidence(self, keys: list[str], segment: str | None, exclude: int | None) -> _Evidence:
        """Summed counts of the queries ``keys`` (for ``segment``, or everyone)."""
        weights: dict[str, int] = {}
        support: dict[str, int] = {}
        items: dict[str, int] = {}
        for key in keys:
            for g, n in self.by_query.group((key, segment, "w"), exclude=exclude).items():
                weights[g] = weights.get(g, 0) + n
            if segment is None:
                for g, n in self.by_query.group((key, None, "s"), exclude=exclude).items():
                    support[g] = support.get(g, 0) + n
                for g, _ in self.by_query.group((key, None, "i"), exclude=exclude):
                    items[g] = items.get(g, 0) + 1
        return _Evidence(weights=weights, support=support, items=items)

    def mine(self, request: KeywordRequest) -> list[MinedCandidate]:
        """Scored candidates for the request's query (and segment), best first."""
        cfg = self.config
        keys = [request.key]
        evidence = self._evidence(keys, None, request.exclude)
        backoff = False
        if evidence.support.get(_SESSIONS, 0) < cfg.min_support and self._query_terms is not None:
            related = sorted(
                {k for t in self._query_terms(request.key) for k in self._related.get(t, ()) if k != request.key}
            )
            if related:
                keys, backoff = related, True
                evidence = self._evidence(keys, None, request.exclude)
        events = evidence.weights.get(_EVENTS, 0)
        if events <= 0:
            return []
        own = None
        if request.segment is not None and cfg.segment_prior > 0:
            own = self._evidence(keys, request.segment, request.exclude).weights
        prior = dict(request.categories.levels[cfg.background_level - 1])
        if not prior:
            prior = {_GLOBAL: 1.0}
        out = []
        for g in sorted(evidence.weights):
            if g == _EVENTS or evidence.support.get(g, 0) < cfg.min_support or evidence.items.get(g, 0) < cfg.min_items:
                continue
            p_bg = self._background(g, prior, request.exclude)
            p_query = (evidence.weights[g] + cfg.prior_events * p_bg) / (events + cfg.prior_events)
            if own is not None:
                n_own = own.get(_EVENTS, 0)
                p_query = (own.get(g, 0) + cfg.segment_prior * p_query) / (n_own + cfg.segment_prior)
            lift = p_query / p_bg
            if lift < cfg.min_lift:
                continue
            score = p_query * min(1.0, math.log(lift) / math.log(cfg.lift_cap))
            if backoff:
                score *= cfg.backoff_discount
            score = round(score, 6)
            if score > 0:
                out.append(
                    MinedCandidate(
                        text=g,
                        score=score,
                        p_query=round(p_query, 6),
                        p_background=round(p_bg, 6),
                        support=evidence.support[g],
                        backoff=backoff,
                    )
                )
        if self.mode == "ngrams":
            out = _maximal(out)
        out.sort(key=lambda c: (-c.score, c.text))
        return out[: cfg.max_candidates]

    def _background(self, g: str, prior: dict, exclude: int | None) -> float:
        own_df, own_n = self._own_impressions(exclude)

        def df(category: str | None) -> int:
            return self._df.get(category, {}).get(g, 0) - own_df.get(category, {}).get(g, 0)

        total = 0.0
        for category, p in sorted(prior.items(), key=lambda kv: str(kv[0])):
            if category is _GLOBAL:  # predictions never name a missing category
                d = sum(df(c) for c in self._categories)
                n = sum(self._n[c] - own_n.get(c, 0) for c in self._categories)
            else:
                d = df(category)
                n = self._n.get(category, 0) - own_n.get(category, 0)
            total += p * (d + 0.5) / (n + 1)
        return total


def _maximal(candidates: list[MinedCandidate]) -> list[MinedCandidate]:
    """Drops an n-gram contained in a longer candidate with the same support (raw n-gram mode:
    "瑜伽" when every session with "瑜伽" also has "瑜伽垫")."""
    by_length = sorted(candidates, key=lambda c: (-len(c.text), c.text))
    kept: list[MinedCandidate] = []
    for c in by_length:
        if any(c.support == k.support and _contains(k.text, c.text) for k in kept):
            continue
        kept.append(c)
    return kept


def _contains(longer: str, shorter: str) -> bool:
    if shorter in longer and shorter != longer:
        lt, st = tokens(longer), tokens(shorter)
        return any(lt[i : i + len(st)] == st for i in range(len(lt) - len(st) + 1))
    return False


class MinedSource:
    """Keyword source (b): mined n-grams (types from the lexicon when it knows them)."""

    name = "mined"

    def __init__(self, miner: NgramMiner):
        self.miner = miner

    def propose(self, request: KeywordRequest) -> list[Candidate]:
        lexicon = self.miner.lexicon
        out = []
        for c in self.miner.mine(request):
            entry = lexicon.entry(c.text) if lexicon is not None else None
            types = entry.types if entry is not None else ()
            out.append(Candidate(text=c.text, score=min(1.0, c.score), types=types, source=self.name))
        return out
