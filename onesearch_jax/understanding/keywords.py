"""Keyword chain of thought: candidates from combinable sources, fused into K keywords.

OneSearch-V2 (arXiv 2603.24422), thought-augmented query understanding, step 2 ("keyword CoT"):
for each query, up to K "high-density keywords" naming the concrete products and attributes the
query implies, which the teacher sees beside the query (the student does not). The chain per
query is: analyse the query (lexicon attributes, spelling corrections, ontology intents,
:mod:`.analysis`), predict its categories (:mod:`.categories`), ask every
:class:`KeywordSource` for candidates, then :func:`fuse` them:

1. drop candidates that add nothing to the query (all their tokens are in it), and, for a query
   that names a product, other products backed only by click statistics below
   ``named_entity_min_score`` (substitutes are not implied);
2. merge candidates of the same text: ``score = sum_s w_s * max(score from source s)``;
3. rank by score, drop those under ``min_score`` and those redundant with a better one
   ("jacket" after "down jacket");
4. keep the first ``max_keywords`` (K, default 5, at most 8).

Sources (each returns :class:`Candidate` with a score in (0, 1]): ontology expansion
(:mod:`.ontology`), n-gram mining of the training window (:mod:`.mining`), level-3 categories of
the clicked items (:mod:`.categories`), spelling corrections (:mod:`.analysis`) and keywords
made elsewhere, for example by a language model (:mod:`.external`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from onesearch_jax.data.schema import ATTRIBUTE_TYPES, RecordError
from onesearch_jax.understanding.lexicon import normalize_term
from onesearch_jax.understanding.profiles import segment_value
from onesearch_jax.understanding.text import adds_nothing, redundant

if TYPE_CHECKING:
    from onesearch_jax.understanding.analysis import QueryAnalysis
    from onesearch_jax.understanding.categories import CategoryPrediction

MAX_KEYWORDS = 8
SOURCE_NAMES: tuple[str, ...] = ("ontology", "external", "spelling", "category", "mined")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A keyword proposed by one source.

    Attributes:
        text: the keyword (folded).
        score: the source's confidence, in (0, 1].
        types: attribute types of the keyword when known (lexicon), else ().
        source: the proposing source's name.
    """

    text: str
    score: float
    types: tuple[str, ...]
    source: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Keyword:
    """A fused keyword for a query (what the teacher sees).

    Attributes:
        text: the keyword (folded).
        score: the fused (and, when personalised, calibrated) score.
        types: attribute types, in :data:`ATTRIBUTE_TYPES` order.
        sources: names of the sources that proposed it, sorted.
    """

    text: str
    score: float
    types: tuple[str, ...]
    sources: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "score": self.score, "types": list(self.types), "sources": list(self.sources)}

    @classmethod
    def from_json(cls, obj: Any, *, path: str, line: int, field: str) -> Keyword:
        """Parses :meth:`to_json`'s object; errors name ``path``, ``line`` and ``field``."""

        def fail(name: str, reason: str) -> RecordError:
            return RecordError(
                path=path, line=line, field=f"{field}.{name}" if name else field, kind="type", reason=reason
            )

        if not isinstance(obj, dict) or set(obj) != {"text", "score", "types", "sources"}:
            raise fail("", "expected an object with text, score, types and sources")
        text, score, types, sources = obj["text"], obj["score"], obj["types"], obj["sources"]
        if not isinstance(text, str) or not text.strip():
            raise fail("text", "expected a non-empty string")
        if type(score) not in (int, float) or not math.isfinite(score):
            raise fail("score", "expected a finite number")
        if not isinstance(types, list) or any(t not in ATTRIBUTE_TYPES for t in types):
            raise fail("types", f"expected a list of attribute types, got {types!r}")
        if not isinstance(sources, list) or not all(isinstance(s, str) and s for s in sources):
            raise fail("sources", "expected a list of source names")
        return cls(text=text, score=float(score), types=tuple(types), sources=tuple(sources))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KeywordRequest:
    """What a source knows when asked for candidates.

    Attributes:
        key: the query key (:func:`~.logs.query_key`).
        analysis: lexicon matches, corrections and intents of the query.
        categories: the query's predicted categories (for ``segment``, without ``exclude``).
        segment: the user segment (``"gender=F"``) for personalised keywords, or None.
        exclude: the session whose own behaviour must not be used (leave-one-session-out), or None.
    """

    key: str
    analysis: QueryAnalysis
    categories: CategoryPrediction
    segment: str | None = None
    exclude: int | None = None

    @property
    def gender(self) -> str | None:
        return segment_value(self.segment, "gender")


class KeywordSource(Protocol):
    """A source of keyword candidates (ontology, mining, categories, an external generator...)."""

    name: str

    def propose(self, request: KeywordRequest) -> list[Candidate]:
        """Candidates for the request, scores in (0, 1]; never from session ``request.exclude``."""
        ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KeywordConfig:
    """How candidates become keywords.

    Attributes:
        max_keywords: K, keywords kept per query (1 to 8; OneSearch-V2 uses a handful).
        pool_size: keywords kept before personal calibration picks the K (K to 8); the
            repository stores this many, ranked, so that a user's calibration can promote a
            keyword from behind the first K.
        source_weights: ``(source name, weight)`` pairs; a source not listed is not used.
        min_score: fused score under which a candidate is dropped.
        drop_redundant: drop a candidate whose tokens are contained in (or contain) a better one's.
        statistical_sources: sources whose candidates are statistics of behaviour (substitutes
            and complements clicked for the query, not only what it means).
        named_entity_min_score: when the query already names a product (an ``entity`` term), an
            entity candidate backed only by statistical sources needs this source score (a
            substitute product is not what the query implies; a synonym or correction is).
    """

    max_keywords: int = 5
    pool_size: int = 8
    source_weights: tuple[tuple[str, float], ...] = (
        ("ontology", 1.0),
        ("external", 1.0),
        ("spelling", 1.0),
        ("category", 0.8),
        ("mined", 0.6),
    )
    min_score: float = 0.05
    drop_redundant: bool = True
    statistical_sources: tuple[str, ...] = ("category", "mined")
    named_entity_min_score: float = 0.5

    def __post_init__(self):
        if not 1 <= self.max_keywords <= MAX_KEYWORDS:
            raise ValueError(f"KeywordConfig.max_keywords must be in [1, {MAX_KEYWORDS}], got {self.max_keywords}")
        if not self.max_keywords <= self.pool_size <= MAX_KEYWORDS:
            raise ValueError(f"KeywordConfig.pool_size must be in [max_keywords, {MAX_KEYWORDS}], got {self.pool_size}")
        weights = tuple((str(n), float(w)) for n, w in self.source_weights)
        object.__setattr__(self, "source_weights", weights)
        names = [n for n, _ in weights]
        if len(set(names)) != len(names):
            raise ValueError(f"KeywordConfig.source_weights names a source twice: {names}")
        for name, weight in weights:
            if name not in SOURCE_NAMES:
                raise ValueError(f"KeywordConfig.source_weights: unknown source {name!r}; known: {SOURCE_NAMES}")
            if not math.isfinite(weight) or weight <= 0:
                raise ValueError(f"KeywordConfig.source_weights[{name!r}] must be > 0, got {weight}")
        if not self.min_score >= 0:
            raise ValueError(f"KeywordConfig.min_score must be >= 0, got {self.min_score}")
        object.__setattr__(self, "statistical_sources", tuple(self.statistical_sources))
        unknown = set(self.statistical_sources) - set(SOURCE_NAMES)
        if unknown:
            raise ValueError(f"KeywordConfig.statistical_sources: unknown sources {sorted(unknown)}")
        if not 0 <= self.named_entity_min_score <= 1:
            raise ValueError(
                f"KeywordConfig.named_entity_min_score must be in [0, 1], got {self.named_entity_min_score}"
            )

    @property
    def weights(self) -> Mapping[str, float]:
        return dict(self.source_weights)


def ordered_types(types: Iterable[str]) -> tuple[str, ...]:
    """Attribute types deduplicated, in :data:`ATTRIBUTE_TYPES` order."""
    wanted = set(types)
    return tuple(t for t in ATTRIBUTE_TYPES if t in wanted)


def fuse(
    key: str,
    candidates: Iterable[Candidate],
    config: KeywordConfig,
    *,
    limit: int | None = None,
    names_entity: bool = False,
) -> list[Keyword]:
    """Fuses source candidates into at most ``limit`` (default K) keywords for query ``key``
    (steps in the module docstring). ``names_entity``: the query names a product (see
    ``KeywordConfig.named_entity_min_score``).

    Example:
        >>> c = [Candidate(text="tent", score=1.0, types=("entity",), source="ontology"),
        ...      Candidate(text="tent", score=0.5, types=(), source="mined"),
        ...      Candidate(text="camping", score=1.0, types=(), source="mined")]
        >>> [(k.text, k.score) for k in fuse("camping gear", c, KeywordConfig())]
        [('tent', 1.3)]
    """
    weights = config.weights
    best: dict[str, dict[str, float]] = {}
    types: dict[str, set[str]] = {}
    for c in candidates:
        if c.source not in weights:
            continue
        text = normalize_term(c.text)
        if not text or adds_nothing(text, key):
            continue
        if not (0 < c.score <= 1) or not math.isfinite(c.score):
            raise ValueError(f"source {c.source!r} proposed {text!r} with score {c.score} outside (0, 1]")
        per_source = best.setdefault(text, {})
        per_source[c.source] = max(per_source.get(c.source, 0.0), c.score)
        types.setdefault(text, set()).update(c.types)
    scored = []
    statistical = set(config.statistical_sources)
    for text, per_source in best.items():
        substitute = names_entity and "entity" in types[text] and set(per_source) <= statistical
        if substitute and max(per_source.values()) < config.named_entity_min_score:
            continue
        score = round(sum(weights[s] * per_source[s] for s in sorted(per_source)), 6)
        if score >= config.min_score:
            scored.append((score, text))
    scored.sort(key=lambda st: (-st[0], st[1]))
    out: list[Keyword] = []
    for score, text in scored:
        if config.drop_redundant and any(redundant(text, k.text) for k in out):
            continue
        out.append(Keyword(text=text, score=score, types=ordered_types(types[text]), sources=tuple(sorted(best[text]))))
        if len(out) == (limit or config.max_keywords):
            break
    return out
