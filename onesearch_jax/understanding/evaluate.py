"""Keyword quality against the synthetic world's hidden truth (evaluation only, never an input).

The world knows what each query means (``truth/queries.jsonl``: kind and target entities per
gender) and what each user likes (``truth/users.jsonl``: brands, styles, colours). For a set of
requests (test sessions) and the keywords each got:

* entity precision: of the keywords typed ``entity`` (synonyms mapped to their canonical
  entity), the share that are target entities of the query for the searcher's gender;
* entity recall: of the *implied* target entities (those whose name is not already in the
  query), the share named by a keyword;
* coverage: the share of requests with at least one keyword;
* preference hit rate: of the brand, style and colour keywords, the share the user truly prefers;
* category accuracy: the share of requests whose top predicted level-1 category is a level-1
  category of a target.
All are micro-averages over requests, overall and per query kind.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any

from onesearch_jax.data.kuaisearch import decode_json_line
from onesearch_jax.data.schema import RecordError
from onesearch_jax.understanding.keywords import Keyword
from onesearch_jax.understanding.lexicon import normalize_term
from onesearch_jax.understanding.logs import query_key
from onesearch_jax.understanding.ontology import Ontology
from onesearch_jax.understanding.text import adds_nothing

PREFERENCE_TYPES: tuple[str, ...] = ("brand", "style", "color")


@dataclasses.dataclass(frozen=True, slots=True)
class QueryTruth:
    """What a world query means: its kind and target (level-1, entity) pairs per gender."""

    kind: str
    targets: Mapping[str, frozenset[tuple[str, str]]]

    def entities(self, gender: str | None) -> frozenset[str]:
        pairs = self.targets.get(gender) if gender is not None else None
        if pairs is None:
            pairs = frozenset().union(*self.targets.values()) if self.targets else frozenset()
        return frozenset(e for _, e in pairs)

    def level1(self, gender: str | None) -> frozenset[str]:
        pairs = self.targets.get(gender, frozenset().union(*self.targets.values()) if self.targets else frozenset())
        return frozenset(l1 for l1, _ in pairs)


@dataclasses.dataclass(frozen=True, slots=True)
class UserTruth:
    """What a world user prefers (folded names)."""

    brands: frozenset[str]
    styles: frozenset[str]
    colors: frozenset[str]

    def likes(self, keyword: Keyword) -> bool | None:
        """True/False for a brand, style or colour keyword; None for other keywords."""
        text = keyword.text
        for kind, values in (("brand", self.brands), ("style", self.styles), ("color", self.colors)):
            if kind in keyword.types:
                return text in values
        return None


def _read_jsonl(path: str | os.PathLike):
    name = os.fspath(path)
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if raw.strip():
                yield name, number, decode_json_line(raw, path=name, line=number)


def load_query_truth(path: str | os.PathLike) -> dict[str, QueryTruth]:
    """Reads ``truth/queries.jsonl`` into query key -> :class:`QueryTruth`."""
    out = {}
    for name, number, obj in _read_jsonl(path):
        try:
            targets = {
                g: frozenset((l1, normalize_term(e)) for l1, e in pairs) for g, pairs in sorted(obj["targets"].items())
            }
            out[query_key(obj["query"])] = QueryTruth(kind=obj["kind"], targets=targets)
        except (KeyError, TypeError, ValueError) as e:
            raise RecordError(
                path=name, line=number, field="targets", kind="type", reason=f"bad truth row: {e}"
            ) from None
    return out


def load_user_truth(path: str | os.PathLike) -> dict[int, UserTruth]:
    """Reads ``truth/users.jsonl`` into user id -> :class:`UserTruth`."""
    out = {}
    for name, number, obj in _read_jsonl(path):
        try:
            brands = frozenset(normalize_term(b) for names in obj["brands"].values() for b in names)
            styles = frozenset(normalize_term(s) for s in obj["styles"])
            colors = frozenset(normalize_term(c) for c in obj["colors"])
            out[int(obj["user_id"])] = UserTruth(brands=brands, styles=styles, colors=colors)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise RecordError(path=name, line=number, field=None, kind="type", reason=f"bad truth row: {e}") from None
    return out


def canonical_entities(ontology: Ontology | None) -> dict[str, str]:
    """Synonym -> canonical entity, from the ontology's one-entity ``synonym`` intents."""
    if ontology is None:
        return {}
    return {i.intent: i.entities[0] for i in ontology.intents.values() if i.kind == "synonym" and len(i.entities) == 1}


@dataclasses.dataclass
class _Tally:
    requests: int = 0
    covered: int = 0
    entity_keywords: int = 0
    correct: int = 0
    implied: int = 0
    recalled: int = 0
    preference_keywords: int = 0
    preference_hits: int = 0
    categorised: int = 0
    category_hits: int = 0

    def to_json(self) -> dict[str, Any]:
        def ratio(a: int, b: int) -> float | None:
            return round(a / b, 4) if b else None

        return {
            "requests": self.requests,
            "coverage": ratio(self.covered, self.requests),
            "entity_precision": ratio(self.correct, self.entity_keywords),
            "entity_recall": ratio(self.recalled, self.implied),
            "entity_keywords": self.entity_keywords,
            "implied_entities": self.implied,
            "preference_hit_rate": ratio(self.preference_hits, self.preference_keywords),
            "preference_keywords": self.preference_keywords,
            "category_accuracy": ratio(self.category_hits, self.categorised),
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One evaluated request: the query, the searcher, the keywords it got, and (optionally)
    the top predicted level-1 category."""

    query: str
    gender: str | None
    user_id: int | None
    keywords: tuple[Keyword, ...]
    top_category: str | None = None


def evaluate(
    requests: Iterable[Request],
    queries: Mapping[str, QueryTruth],
    *,
    users: Mapping[int, UserTruth] | None = None,
    canonical: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Metrics (module docstring) overall and per query kind; requests with unknown queries are
    counted under kind ``unknown`` (coverage only)."""
    canonical = canonical or {}
    tallies: dict[str, _Tally] = {"all": _Tally()}
    for r in requests:
        key = query_key(r.query)
        truth = queries.get(key)
        kind = truth.kind if truth is not None else "unknown"
        for tally in (tallies["all"], tallies.setdefault(kind, _Tally())):
            tally.requests += 1
            tally.covered += bool(r.keywords)
            if truth is None:
                continue
            targets = truth.entities(r.gender)
            named = {canonical.get(k.text, k.text) for k in r.keywords if "entity" in k.types}
            tally.entity_keywords += len(named)
            tally.correct += len(named & targets)
            implied = {e for e in targets if not adds_nothing(e, key)}
            tally.implied += len(implied)
            tally.recalled += len(named & implied)
            if users is not None and r.user_id in users:
                for k in r.keywords:
                    hit = users[r.user_id].likes(k)
                    if hit is not None:
                        tally.preference_keywords += 1
                        tally.preference_hits += hit
            if r.top_category is not None:
                tally.categorised += 1
                tally.category_hits += r.top_category in truth.level1(r.gender)
    return {kind: tallies[kind].to_json() for kind in sorted(tallies, key=lambda k: (k != "all", k))}
